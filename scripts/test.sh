#!/usr/bin/env bash
# Runs every test of the workspace against a real Incus daemon and the GitHub simulator.
# Brings the daemon up first (idempotent). Usage: sudo ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/incus-env.sh up
# The fake runner agent runs inside busybox containers: it must be a static binary.
./scripts/build-fake-runner.sh
export RUNNER_MANAGER_TEST_INCUS=1
# cargo-nextest runs each test in its own process. Tests that drive real Incus containers get up
# to two retries: Incus 6.0.4 was measured stalling container starts and stops for a minute or more
# under load (its own pre-start hook times out). A retried test is reported as FLAKY, not hidden.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --retries 2 --no-fail-fast "$@" 2>&1
  cargo test --workspace --doc 2>&1
else
  cargo test --workspace --all-targets "$@" 2>&1
fi
# R4 (incusd restarted in the middle of a reconcile, crates/bench/src/incus_chaos.rs) restarts the
# shared daemon, so it never runs inside the parallel suite above: one quick iteration here, after
# it, with the debug build (about a minute).
cargo build -p runner-manager --bin runner-manager 2>&1
cargo run -p bench --bin chaos-incus -- --quick r4 2>&1
