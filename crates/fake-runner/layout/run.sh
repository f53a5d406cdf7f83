#!/bin/sh
# Runs the runner (the github-sim fake of actions/runner's run.sh): the listener long-polls the
# simulator for jobs, runs each with `sh`, and exits after one job when ephemeral.
#
# Usage: ./run.sh [--jitconfig ENCODED_JIT_CONFIG] [--once]
#
# Extensions that keep the JIT config out of `ps`: --jitconfig-file PATH (read, then deleted),
# or ACTIONS_RUNNER_INPUT_JITCONFIG=<config> in the environment.
# The listener loads KEY=VALUE lines from .env, and honours http_proxy/https_proxy/no_proxy
# (lower case wins) and ACTIONS_RUNNER_HOOK_JOB_STARTED / ACTIONS_RUNNER_HOOK_JOB_COMPLETED.
# SIGTERM/SIGINT are forwarded to the listener, which goes offline and exits.
#
# Exit codes, as actions/runner's run-helper.sh: 0 for almost everything (the job's result is
# reported to the server, not here); the listener is restarted after a retryable error (2).

case "$0" in */*) runner_root=${0%/*} ;; *) runner_root=. ;; esac
. "$runner_root/prelude.sh"

listener_pid=
forward() {
    if [ -n "$listener_pid" ]; then
        kill "-$1" "$listener_pid" 2>/dev/null
    fi
}
trap 'forward TERM' TERM
trap 'forward INT' INT

while :; do
    ./bin/Runner.Listener run "$@" &
    listener_pid=$!
    wait "$listener_pid"
    return_code=$?
    # A trapped signal interrupts `wait`; wait again until the listener has really exited.
    while kill -0 "$listener_pid" 2>/dev/null; do
        wait "$listener_pid"
        return_code=$?
    done
    listener_pid=

    case "$return_code" in
        0)
            echo "Runner listener exit with 0 return code, stop the service, no retry needed."
            exit 0 ;;
        1)
            echo "Runner listener exit with terminated error, stop the service, no retry needed."
            exit 0 ;;
        2)
            echo "Runner listener exit with retryable error, re-launch runner in 5 seconds."
            sleep 5 ;;
        3|4)
            echo "Runner listener exit because of updating, re-launch runner in 5 seconds."
            sleep 5 ;;
        5)
            echo "Runner listener exit with Session Conflict error, stop the service, no retry needed."
            exit 0 ;;
        7)
            echo "Runner listener exit with deprecated version error, stop the service, no retry needed."
            if [ "$ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE" = "1" ]; then
                exit 7
            fi
            exit 0 ;;
        *)
            echo "Exiting with unknown error code: ${return_code}"
            exit 0 ;;
    esac
done
