# Sourced first by config.sh and run.sh, with runner_root set to the directory of the script:
# refuses root unless RUNNER_ALLOW_RUNASROOT is set (as actions/runner does), then enters the
# runner root.

user_id=$(id -u 2>/dev/null)
if [ "$user_id" = "0" ] && [ -z "$RUNNER_ALLOW_RUNASROOT" ]; then
    echo "Must not run with sudo"
    exit 1
fi

cd "$runner_root" || exit 1
