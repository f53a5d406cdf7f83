# The one exec of an install, as root. Takes the bundle (on standard input when RM_BUNDLE_SOURCE
# is `stdin`, else where it was pushed), unpacks it into the stage, extracts the runner, moves
# each file of the stage's manifest into place (over the runner's own, so ours win; docker's
# files only where docker is) and hands the runner's files to its user, restarts docker when its
# proxy settings were written, then runs the register script as the runner's user (runuser,
# util-linux setpriv, or su, whichever the image has). The bundle and the stage hold secrets:
# they are removed whatever happens. Prints `unpacked` once the files are in place.
#
# RM_SETUP_MODE: `install` (the above), `bake` (building an image: the runner and the static
# files only; no secret in the bundle, nothing registered, nothing started; prints `baked`) or
# `baked` (launching from a baked image: the runner is in place already, the bundle holds only
# the runner's own files, which are put in place, then the runner registers and starts).
#
# The manifest: one line per file, `KIND OWNER STAGED DESTINATION`, KIND `plain` or `docker`,
# OWNER `runner` or `root`, DESTINATION absolute (below RM_ROOT, empty but in tests) or `~/...`
# (the runner user's home).
set -e
mkdir -p "$RM_META_DIR"
echo $$ >"$RM_SETUP_PID_FILE"
trap 'rm -rf "$RM_BUNDLE_PATH" "$RM_STAGE_DIR"' EXIT
if [ "$RM_BUNDLE_SOURCE" = stdin ]; then
    (umask 077 && cat >"$RM_BUNDLE_PATH")
fi
rm -rf "$RM_STAGE_DIR"
mkdir -m 0700 "$RM_STAGE_DIR"
tar -xf "$RM_BUNDLE_PATH" -C "$RM_STAGE_DIR"
rm -f "$RM_BUNDLE_PATH"
mkdir -p "$RM_RUNNER_DIR" "$RM_SCRIPT_DIR" "$RM_META_DIR"
if [ "$RM_SETUP_MODE" != baked ]; then
    tar -xzf "$RM_STAGE_DIR/actions-runner.tar.gz" -C "$RM_RUNNER_DIR"
fi
for f in config.sh run.sh; do
    if [ ! -f "$RM_RUNNER_DIR/$f" ]; then
        echo "no $RM_RUNNER_DIR/$f: the runner is not in place (setup mode $RM_SETUP_MODE)" >&2
        exit 1
    fi
done
docker_files=
while read -r kind owner staged dest; do
    case "$dest" in
        \~/*) dest="$RM_HOME/${dest#\~/}" ;;
        *) dest="$RM_ROOT$dest" ;;
    esac
    if [ "$kind" = docker ]; then
        command -v docker >/dev/null 2>&1 || continue
        docker_files=1
    fi
    mkdir -p "${dest%/*}"
    mv -f "$RM_STAGE_DIR/$staged" "$dest"
    if [ "$owner" = runner ]; then
        chown "$RM_UID:$RM_GID" "$dest"
        # A file below the home directory: its directory is the user's too.
        case "$dest" in "$RM_HOME"/*/*) chown "$RM_UID:$RM_GID" "${dest%/*}" ;; esac
    fi
done <"$RM_STAGE_DIR/manifest"
if [ "$RM_SETUP_MODE" = bake ]; then
    # The image holds no runner state: the next runner's own setup writes it.
    chown -R "$RM_UID:$RM_GID" "$RM_RUNNER_DIR" "$RM_META_DIR"
    rm -rf "$RM_STAGE_DIR" "$RM_SETUP_PID_FILE"
    echo baked
    exit 0
fi
if [ "$RM_UID" = 0 ]; then
    echo RUNNER_ALLOW_RUNASROOT=1 >>"$RM_RUNNER_DIR/.env"
fi
date +%s >"$RM_INSTALLED_FILE"
if [ "$RM_SETUP_MODE" = baked ]; then
    # The runner's files are the user's already (the image was baked for the same user).
    chown "$RM_UID:$RM_GID" "$RM_RUNNER_DIR" "$RM_RUNNER_DIR/.env" "$RM_META_DIR" "$RM_INSTALLED_FILE"
else
    chown -R "$RM_UID:$RM_GID" "$RM_RUNNER_DIR" "$RM_META_DIR"
fi
if [ -n "$docker_files" ] && command -v systemctl >/dev/null; then
    systemctl daemon-reload && systemctl restart docker
fi
rm -rf "$RM_STAGE_DIR"
echo unpacked
set +e
if [ "$RM_UID" = 0 ]; then
    HOME="$RM_HOME" RUNNER_ALLOW_RUNASROOT=1 sh "$RM_REGISTER_SCRIPT"
elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$RM_USER" -- env HOME="$RM_HOME" sh "$RM_REGISTER_SCRIPT"
elif setpriv --help 2>&1 | grep -q -- --reuid; then
    setpriv --reuid="$RM_UID" --regid="$RM_GID" --init-groups env HOME="$RM_HOME" sh "$RM_REGISTER_SCRIPT"
else
    su -s /bin/sh "$RM_USER" -c "sh $RM_REGISTER_SCRIPT"
fi
