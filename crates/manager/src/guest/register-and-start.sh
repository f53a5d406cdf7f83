# Registers (token mode) and starts the runner, as its user (run by the setup exec). Parameters:
# RM_REGISTER (token or jit), RM_WAIT_STEPS (10 ms steps to wait for run.sh), and config.sh's
# arguments as the positional parameters. The last line printed is `alive`, `exited CODE` (then
# the tail of the runner's log), `waiting`, or `config-failed CODE` when config.sh failed.
# In token mode the network is waited for first (config.sh must reach GitHub); a JIT runner
# needs nothing before start.sh, which waits for the network itself before run.sh.
cd "$RM_RUNNER_DIR" || exit 1
# The token comes from its 0600 file: --token-file when the runner supports it, else
# ACTIONS_RUNNER_INPUT_TOKEN (actions/runner reads any argument from ACTIONS_RUNNER_INPUT_<NAME>);
# the file is deleted once read, and the variable lives only in config.sh's subshell.
configure() {
    if runner_has config.sh token-file; then
        ./config.sh --token-file "$RM_TOKEN_FILE" "$@"
        rc=$?
        rm -f "$RM_TOKEN_FILE"
        return $rc
    fi
    ACTIONS_RUNNER_INPUT_TOKEN="$(cat "$RM_TOKEN_FILE")"
    rm -f "$RM_TOKEN_FILE"
    export ACTIONS_RUNNER_INPUT_TOKEN
    exec ./config.sh "$@"
}
if [ "$RM_REGISTER" = token ]; then
    network_wait
    ( configure "$@" ) </dev/null >&2 || { rc=$?; echo "config-failed $rc"; exit $rc; }
fi
if command -v setsid >/dev/null; then
    setsid sh "$RM_SCRIPT_DIR/start.sh" </dev/null >/dev/null 2>&1 &
else
    nohup sh "$RM_SCRIPT_DIR/start.sh" </dev/null >/dev/null 2>&1 &
fi
i=0
while :; do
    if [ -s "$RM_EXIT_FILE" ]; then
        echo "exited $(cat "$RM_EXIT_FILE")"
        tail -c 400 "$RM_META_DIR/runner.log"
        exit 0
    fi
    if [ -s "$RM_PID_FILE" ] && read -r pid <"$RM_PID_FILE" && kill -0 "$pid" 2>/dev/null; then
        echo alive
        exit 0
    fi
    i=$((i + 1))
    if [ "$i" -ge "$RM_WAIT_STEPS" ]; then
        echo waiting
        exit 0
    fi
    sleep 0.01 2>/dev/null || sleep 1
done
