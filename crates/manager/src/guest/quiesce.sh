# Before the manager deregisters a healthy runner (scale-down, an idle-only flush): is a job
# running in this instance, whatever GitHub says? If not, freeze the runner (SIGSTOP to its
# process group) so that it cannot take one while its registration is deleted: a job message
# that reaches a frozen runner is never acquired, and GitHub gives the job to another runner.
# The manager thaws it (resume.sh) when the deletion does not happen. Run as root.
#   10  a job runs: the job-started hook wrote its record and the job-completed one has not,
#       or a Runner.Worker process is alive. The runner is left running.
#   0   no job; the runner is frozen (or was not running)
# Any other code (or no answer) means the manager could not tell.
job_runs() {
    if [ -s "$RM_META_DIR/pre-job.json" ] && [ ! -s "$RM_META_DIR/post-job.json" ]; then
        return 0
    fi
    for comm in "$RM_PROC"/[0-9]*/comm; do
        name=
        read -r name <"$comm" 2>/dev/null || continue
        [ "$name" = Runner.Worker ] && return 0
    done
    return 1
}
job_runs && exit 10
if [ -s "$RM_META_DIR/runner.pgid" ]; then
    # `kill -SIG -PGID`: dash's kill builtin rejects `kill -SIG -- -PGID`.
    kill -STOP "-$(cat "$RM_META_DIR/runner.pgid")" 2>/dev/null
    # A job that started between the look and the freeze: thaw and report it.
    if job_runs; then
        kill -CONT "-$(cat "$RM_META_DIR/runner.pgid")" 2>/dev/null
        exit 10
    fi
fi
exit 0
