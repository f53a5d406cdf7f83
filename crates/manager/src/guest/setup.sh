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
# the runner's own files, which are put in place, then the runner registers and starts). A bake
# also records which secret-file options the runner takes in RM_CAPS_FILE (see runner-caps.sh),
# so that launches from the image skip the `--help` probes; an install removes any such record
# (its runner may not be the one the record was made for).
#
# The manifest: one line per file, `KIND OWNER STAGED DESTINATION`, KIND `plain` or `docker`,
# OWNER `runner` or `root`, DESTINATION absolute (below RM_ROOT, empty but in tests) or `~/...`
# (the runner user's home).
#
# Every command not built into the shell is a process, and ten launches share the host's CPUs:
# the script spares them (the bundle is unpacked from standard input, not saved first; the
# runner's files are handed to it in one chown).
set -e
mkdir -p "$RM_META_DIR" "$RM_RUNNER_DIR" "$RM_SCRIPT_DIR"
echo $$ >"$RM_SETUP_PID_FILE"
trap '[ ! -e "$RM_BUNDLE_PATH" ] && [ ! -e "$RM_STAGE_DIR" ] || rm -rf "$RM_BUNDLE_PATH" "$RM_STAGE_DIR"' EXIT
rm -rf "$RM_STAGE_DIR"
mkdir -m 0700 "$RM_STAGE_DIR"
if [ "$RM_BUNDLE_SOURCE" = stdin ]; then
    tar -xf - -C "$RM_STAGE_DIR"
else
    tar -xf "$RM_BUNDLE_PATH" -C "$RM_STAGE_DIR"
    rm -f "$RM_BUNDLE_PATH"
fi
if [ "$RM_SETUP_MODE" != baked ]; then
    rm -f "$RM_CAPS_FILE"
    tar -xzf "$RM_STAGE_DIR/actions-runner.tar.gz" -C "$RM_RUNNER_DIR"
fi
for f in config.sh run.sh; do
    if [ ! -f "$RM_RUNNER_DIR/$f" ]; then
        echo "no $RM_RUNNER_DIR/$f: the runner is not in place (setup mode $RM_SETUP_MODE)" >&2
        exit 1
    fi
done
docker_files=
# The runner user's files, chowned together once in place.
set --
while read -r kind owner staged dest; do
    case "$dest" in
        \~/*) dest="$RM_HOME/${dest#\~/}" ;;
        *) dest="$RM_ROOT$dest" ;;
    esac
    if [ "$kind" = docker ]; then
        command -v docker >/dev/null 2>&1 || continue
        docker_files=1
    fi
    [ -d "${dest%/*}" ] || mkdir -p "${dest%/*}"
    mv -f "$RM_STAGE_DIR/$staged" "$dest"
    if [ "$owner" = runner ]; then
        set -- "$@" "$dest"
        # A file below the home directory: its directory is the user's too.
        case "$dest" in "$RM_HOME"/*/*) set -- "$@" "${dest%/*}" ;; esac
    fi
done <"$RM_STAGE_DIR/manifest"
if [ "$RM_SETUP_MODE" = bake ]; then
    # The runner's options are fixed by the image: asked once, here (as root, allowed for this).
    (
        cd "$RM_RUNNER_DIR"
        export RUNNER_ALLOW_RUNASROOT=1
        kept=
        for f in .env .path _diag; do [ ! -e "$f" ] || kept="$kept/$f/"; done
        for probe in config.sh:token-file run.sh:jitconfig-file; do
            if runner_has "${probe%%:*}" "${probe#*:}" </dev/null; then
                echo "${probe%%:*} --${probe#*:}"
            fi
        done >"$RM_CAPS_FILE.new"
        # What the probes wrote (env.sh writes .env and .path, logs go to _diag) is runner
        # state: not the image's.
        for f in .env .path _diag; do
            case "$kept" in *"/$f/"*) ;; *) rm -rf "$f" ;; esac
        done
    )
    mv -f "$RM_CAPS_FILE.new" "$RM_CAPS_FILE"
    # The image holds no runner state: the next runner's own setup writes it.
    chown -R "$RM_UID:$RM_GID" "$RM_RUNNER_DIR" "$RM_META_DIR" "$@"
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
    chown "$RM_UID:$RM_GID" "$RM_RUNNER_DIR" "$RM_RUNNER_DIR/.env" "$RM_META_DIR" "$RM_INSTALLED_FILE" "$@"
else
    chown -R "$RM_UID:$RM_GID" "$RM_RUNNER_DIR" "$RM_META_DIR" "$@"
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
