//! R6 in CI: the secret scan of a full cycle (token and JIT mode) of the real binary on real
//! Incus. Runs when `RUNNER_MANAGER_TEST_INCUS=1` (scripts/test.sh); needs the runner-manager
//! binary of this profile (a workspace test run builds it).

use std::time::Duration;

use bench::bad_input::runner_manager_binary;
use bench::secret_scan::{run, Mode, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_in_logs_configs_processes_or_endpoints() {
    if std::env::var("RUNNER_MANAGER_TEST_INCUS").as_deref() != Ok("1") {
        eprintln!("skipped: set RUNNER_MANAGER_TEST_INCUS=1 (scripts/test.sh) to run on Incus");
        return;
    }
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
