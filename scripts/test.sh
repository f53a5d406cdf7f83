#!/usr/bin/env bash
# Runs every test of the workspace against a real Incus daemon and the GitHub simulator.
# Brings the daemon up first (idempotent; the first run also builds the Debian image).
#
#   ./scripts/test.sh [extra cargo nextest args]     as root (from a non-root shell: sudo ./scripts/test.sh)
#
# The tests that need Incus are `#[ignore = "needs Incus: run by scripts/test.sh"]`, so a plain
# `cargo test` reports them as ignored, never as passed; this script runs them (`--run-ignored
# all`). The end-to-end suites (manager::e2e, runner-manager::e2e_daemon, e2e_pools, e2e_images) run on both images
# `incus-env.sh up` imports, as `busybox::<test>` and `debian::<test>`; after the run this script
# prints how many ran, passed and failed on each image. The full log is target/test-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/incus-env.sh up
# The 3-member Incus cluster beside it (idempotent; left up). Tests that use it are
# `#[ignore = "needs the Incus cluster: run by scripts/test.sh"]` and run one at a time in the
# nextest group `incus-cluster` (.config/nextest.toml says which tests belong to it).
./scripts/incus-cluster.sh up
# The fake runner agent runs inside busybox containers: it must be a static binary.
./scripts/build-fake-runner.sh

LOG_DIR=target/test-logs
mkdir -p "$LOG_DIR"
LOG=$LOG_DIR/tests.log

# Per image: the e2e tests that ran and how they ended (from the run's log: nextest's final
# status line of each test, or libtest's `test NAME ... ok`), and those listed but not run.
e2e_summary() { # e2e_summary LOG [LISTED_E2E_TESTS_FILE]
  awk -v listed="${2:-}" '
    function image(name) {
      if (name ~ /^busybox::/) return "busybox"
      if (name ~ /^debian::/) return "debian/bookworm"
      return "no image suffix"
    }
    function record(name, outcome) { img = image(name); ran[img]++; count[img, outcome]++ }
    BEGIN {
      if (listed != "") while ((getline line < listed) > 0) { split(line, f, " "); total[image(f[2])]++ }
    }
    / Summary \[/ { summary = 1 }
    # nextest: "STATUS [ time] (k/N) BINARY TEST"; only the final attempt has a (k/N) counter.
    !summary && match($0, /\] +\( *[0-9]+\/[0-9]+\) +[^ ]+ +[^ ]+$/) {
      n = split($0, f, " "); binary = f[n - 1]; name = f[n]
      if (binary !~ /::e2e(_daemon|_pools|_images)?$/) next
      if ($0 ~ /^ *TRY [0-9]+ (PASS|LEAK) /) record(name, "flaky")
      else if ($0 ~ /^ *(PASS|LEAK) /) record(name, "passed")
      else record(name, "failed")
      next
    }
    # libtest (plain cargo test): only the per-image names are known to be e2e tests.
    /^test (busybox|debian)::[^ ]+ \.\.\. / {
      outcome = $NF == "ok" ? "passed" : $NF == "ignored" ? "ignored" : "failed"
      if (outcome == "ignored") { count[image($2), "ignored"]++ } else record($2, outcome)
    }
    END {
      printf "\n== end-to-end tests per image (manager::e2e; runner-manager::e2e_daemon, e2e_pools, e2e_images)\n"
      printf "%-22s %5s %7s %6s %7s %8s\n", "image", "ran", "passed", "flaky", "failed", "ignored"
      split("busybox|debian/bookworm|no image suffix", order, "|")
      for (i = 1; i <= 3; i++) {
        img = order[i]
        not_run = (img in total) ? total[img] - ran[img] : count[img, "ignored"] + 0
        printf "%-22s %5d %7d %6d %7d %8d\n", img, ran[img], count[img, "passed"], count[img, "flaky"],
          count[img, "failed"], not_run
      }
      printf "(no image suffix: tests that need one image or none; ignored: listed but not run;\n"
      printf " flaky: passed on a retry)\n"
    }
  ' "$1"
}

rc=0
if cargo nextest --version >/dev/null 2>&1; then
  # cargo-nextest runs each test in its own process. Tests that drive real Incus containers get
  # up to two retries: Incus 6.0.4 was measured stalling container starts and stops for a minute
  # or more under load (its own pre-start hook times out). A retried test is reported as FLAKY,
  # not hidden.
  cargo nextest run --workspace --all-targets --run-ignored all --retries 2 --no-fail-fast "$@" 2>&1 \
    | tee "$LOG" || rc=$?
  cargo nextest list --workspace --all-targets --run-ignored all --message-format oneline \
    -E 'binary(e2e) | binary(e2e_daemon) | binary(e2e_pools) | binary(e2e_images)' 2>/dev/null >"$LOG_DIR/e2e-tests.txt" || true
  e2e_summary "$LOG" "$LOG_DIR/e2e-tests.txt"
  [ "$rc" -eq 0 ] || exit "$rc"
  cargo test --workspace --doc 2>&1
else
  cargo test --workspace --all-targets "$@" -- --include-ignored 2>&1 | tee "$LOG" || rc=$?
  e2e_summary "$LOG"
  [ "$rc" -eq 0 ] || exit "$rc"
fi
# R4 (incusd restarted in the middle of a reconcile, crates/bench/src/incus_chaos.rs) restarts the
# shared daemon, so it never runs inside the parallel suite above: one quick iteration here, after
# it, with the debug build (about a minute).
cargo build -p runner-manager --bin runner-manager 2>&1
cargo run -p bench --bin chaos-incus -- --quick r4 2>&1
