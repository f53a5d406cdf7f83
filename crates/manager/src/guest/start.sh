# Started detached by runner-manager. Waits for the network (network-wait.sh: at once when the
# register script waited already), then runs the runner once, recording its pid and exit code.
# In JIT mode the config stays in its 0600 file: `--jitconfig-file` when the runner supports it,
# else it is read into ACTIONS_RUNNER_INPUT_JITCONFIG (actions/runner reads any argument from
# ACTIONS_RUNNER_INPUT_<NAME>) and the file is deleted before the runner starts.
cd "$RM_RUNNER_DIR" || exit 1
echo $$ >"$RM_META_DIR/runner.pgid"
network_wait
set --
if [ -f "$RM_JIT_FILE" ]; then
    if runner_has run.sh jitconfig-file; then
        # The runner reads and deletes the file: the config never sits in an environment.
        set -- --jitconfig-file "$RM_JIT_FILE"
    else
        ACTIONS_RUNNER_INPUT_JITCONFIG="$(cat "$RM_JIT_FILE")"
        rm -f "$RM_JIT_FILE"
        export ACTIONS_RUNNER_INPUT_JITCONFIG
    fi
fi
./run.sh "$@" >>"$RM_META_DIR/runner.log" 2>&1 &
echo $! >"$RM_PID_FILE"
unset ACTIONS_RUNNER_INPUT_JITCONFIG
wait $!
echo $? >"$RM_EXIT_FILE"
