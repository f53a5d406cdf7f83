//! R6 in CI: the secret scan of a full cycle (token and JIT mode) of the real binary on real
//! Incus, so it is `#[ignore]`d (a plain `cargo test` reports it as ignored, never as passed);
//! `scripts/test.sh` runs it with `--run-ignored all`. Needs the runner-manager binary of this
//! profile (a workspace test run builds it).

use std::time::Duration;

use bench::bad_input::runner_manager_binary;
use bench::secret_scan::{run, Mode, Options};

use test_support::incus_ignored;

/// A plain `cargo test` (no daemon) must report the Incus test as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    incus_ignored::assert_only_these_run_by_default(
        &std::env::current_exe().expect("the test binary"),
        &["incus_tests_are_ignored_by_default"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Incus: run by scripts/test.sh"]
async fn no_secret_in_logs_configs_processes_or_endpoints() {
    let binary = runner_manager_binary(false).expect("the runner-manager binary");
    let options = Options {
        binary,
        modes: vec![Mode::Token, Mode::Jit],
        job_sleep: Duration::from_secs(3),
    };
    let outcome = run(&options).await.expect("the cycles run");
    println!("{}", outcome.table());
    for hit in &outcome.hits {
        eprintln!("HIT: {hit}");
    }
    assert_eq!(outcome.failed_controls(), 0, "a control found nothing");
    assert!(outcome.rows.iter().any(|r| r.control), "no control ran");
    assert_eq!(
        outcome.leaks(),
        0,
        "secrets found:\n{}",
        outcome.hits.join("\n")
    );
}
