#!/usr/bin/env bash
# Runs every test of the workspace against a real Incus daemon and the GitHub simulator.
# Brings the daemon up first (idempotent). Usage: sudo ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/incus-env.sh up
# The fake runner agent runs inside busybox containers: it must be a static binary.
./scripts/build-fake-runner.sh
export RUNNER_MANAGER_TEST_INCUS=1
cargo test --workspace --all-targets "$@" 2>&1
