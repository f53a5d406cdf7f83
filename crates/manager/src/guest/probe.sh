# The health probe, run as root by the manager (see guest::probe). Exit codes:
#   0  run.sh is alive
#   3  run.sh exited 0 (an ephemeral runner after its job)
#   4  not started yet while the setup script still runs (installing)
#   1  otherwise: dead, or never started with nothing installing it
if [ -s "$RM_EXIT_FILE" ]; then
    [ "$(cat "$RM_EXIT_FILE")" = 0 ] && exit 3
    exit 1
fi
if [ ! -s "$RM_PID_FILE" ]; then
    [ -s "$RM_SETUP_PID_FILE" ] && kill -0 "$(cat "$RM_SETUP_PID_FILE")" 2>/dev/null && exit 4
    exit 1
fi
# A runner left frozen by a manager that died between quiesce.sh and the deregistration.
if [ -s "$RM_META_DIR/runner.pgid" ]; then
    kill -CONT "-$(cat "$RM_META_DIR/runner.pgid")" 2>/dev/null
fi
kill -0 "$(cat "$RM_PID_FILE")" 2>/dev/null
