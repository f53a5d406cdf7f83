# Asks the runner to stop, run as root by the manager (see guest::stop): SIGTERM to the process
# group of start.sh (it runs in its own session, so the group is the whole runner), then to
# run.sh's recorded pid. actions/runner cancels its job and reports it on SIGTERM.
# `kill -SIG -PGID`, never `kill -SIG -- -PGID`: dash's kill builtin rejects `--`.
if [ -s "$RM_META_DIR/runner.pgid" ]; then
    kill -TERM "-$(cat "$RM_META_DIR/runner.pgid")" 2>/dev/null
fi
if [ -s "$RM_PID_FILE" ]; then
    kill -TERM "$(cat "$RM_PID_FILE")" 2>/dev/null
fi
exit 0
