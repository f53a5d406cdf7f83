//! CI subset of R2 (`bench::incus_chaos`): `runner-manager reconcile` SIGKILLed 3 times while it
//! creates runners and `runner-manager flush` 3 times while it removes them (one with
//! `--idle-only`), on REAL Incus with the REAL binary; after each kill one clean reconcile must
//! converge (exactly `quantity` runners, no orphan, no dangling registration, all online), and
//! nothing is left at the end.
//!
//! Needs Incus, so it is `#[ignore]`d (a plain `cargo test` reports it as ignored, never as
//! passed); `scripts/test.sh` runs it with `--run-ignored all`. The binary under test is `runner-manager` in this test's target profile directory
//! (built by `cargo nextest run --workspace --all-targets`), or `RUNNER_MANAGER_BIN`.
//! R4 (incusd restart) is not here: it would break the tests running beside it; `scripts/test.sh`
//! runs it after the test suite (`chaos-incus --quick r4`).

use std::path::PathBuf;

use bench::incus_chaos::{render, run, Options};

use test_support::incus_ignored;

/// A plain `cargo test` (no daemon) must report the Incus test as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    incus_ignored::assert_only_these_run_by_default(
        &std::env::current_exe().expect("the test binary"),
        &["incus_tests_are_ignored_by_default"],
    );
}

/// `RUNNER_MANAGER_BIN`, else `runner-manager` in this test's profile directory
/// (`target/<profile>/deps/<test>` → `target/<profile>/runner-manager`).
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RUNNER_MANAGER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("runner-manager");
    assert!(
        path.is_file(),
        "{} is missing: build it (cargo build -p runner-manager) or set RUNNER_MANAGER_BIN",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Incus: run by scripts/test.sh"]
async fn r2_kill_9_during_create_and_flush_then_one_pass_converges() {
    let incus_env = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/incus-env.sh"
    ));
    let options = Options::new(binary(), incus_env, true, 0x5eed_1002);
    let tallies = run(&options, "r2").await.expect("R2 runs");
    let table = render(&tallies);
    println!("{table}");
    let iterations: Vec<(&str, u64)> = tallies
        .iter()
        .map(|t| (t.check.as_str(), t.iterations))
        .collect();
    assert_eq!(
        iterations,
        [
            ("R2 kill -9 during create", 3),
            ("R2 kill -9 during flush", 3),
            ("leak check (final flush)", 1),
        ],
        "{table}"
    );
    for tally in &tallies {
        assert_eq!((tally.failures, tally.leaks), (0, 0), "{table}");
    }
    // Every kill was classified by where it landed, and one flush kill was `--idle-only`.
    let create = &tallies[0];
    let landed = create.get("kills after the pass had ended")
        + create.get("kills before any instance existed")
        + create.get("kills with an instance created, not registered")
        + create.get("kills with a registration not yet online");
    assert!(landed >= 1, "{table}");
    let flush = &tallies[1];
    assert_eq!(flush.get("flush --idle-only kills"), 1, "{table}");
    assert_eq!(
        flush.get("kills after the flush had ended")
            + flush.get("kills before any removal")
            + flush.get("kills mid-flush")
            + flush.get("kills after every removal"),
        3,
        "{table}"
    );
}
