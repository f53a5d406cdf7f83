#!/bin/sh
# Registers this runner (the github-sim fake of actions/runner's config.sh).
#
# Usage: ./config.sh --url URL --token TOKEN [--name NAME] [--labels a,b] [--runnergroup GROUP]
#                    [--work DIR] [--ephemeral] [--unattended] [--replace] [--disableupdate]
#                    [--no-default-labels]
#        ./config.sh remove --token TOKEN      (or: ./config.sh remove --local)
#        ./config.sh --help
#
# Any option can also be given as ACTIONS_RUNNER_INPUT_<NAME> (e.g. ACTIONS_RUNNER_INPUT_URL).
# Extensions that keep the token out of `ps`: ACTIONS_RUNNER_INPUT_TOKEN=<token> in the
# environment, or --token-file PATH (a 0600 file holding the token).
#
# Exit codes: 0 ok; 1 bad input, refused by the server, or already configured; 2 the server
# could not be reached (retry later). Refuses root unless RUNNER_ALLOW_RUNASROOT is set.

case "$0" in */*) runner_root=${0%/*} ;; *) runner_root=. ;; esac
. "$runner_root/prelude.sh"

. ./env.sh

case "$1" in
    [Rr][Ee][Mm][Oo][Vv][Ee]) exec ./bin/Runner.Listener "$@" ;;
    *) exec ./bin/Runner.Listener configure "$@" ;;
esac
