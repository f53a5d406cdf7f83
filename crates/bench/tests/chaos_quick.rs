//! CI subset of the reliability suite (R1 busy runners, R3 GitHub faults): the same checks as
//! `chaos`, with few iterations. github-sim runs in a child process (the `chaos` binary); the
//! instance provider is the SIMULATION one.

use std::sync::Arc;

use bench::chaos::{r1, r1_busy_lie, r3};
use bench::fleet::{write_tarball, RUNNER_VERSION};
use bench::outside::{Outside, OutsideOptions};
use bench::tally::Tally;

/// github-sim in a child process (the `chaos` binary), serving a tarball in its own directory.
async fn outside() -> (tempfile::TempDir, Arc<Outside>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = OutsideOptions {
        tarball: write_tarball(dir.path(), 0).expect("tarball"),
        runner_version: RUNNER_VERSION.to_owned(),
        secondary_per_minute: 10_000,
    };
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_chaos"));
    let outside = Outside::spawn_with(exe, &options).await.expect("child");
    (dir, Arc::new(outside))
}

/// Prints the counts; every iteration ran, with no failure and no leak.
fn assert_no_failure(counts: &Tally, iterations: u64) {
    println!("{}", counts.render());
    assert_eq!(counts.iterations, iterations);
    let failures_and_leaks = (counts.failures, counts.leaks);
    assert_eq!(failures_and_leaks, (0, 0), "{}", counts.render());
}

/// [`assert_no_failure`], and no busy job killed.
fn assert_clean_run(counts: &Tally, iterations: u64) {
    assert_no_failure(counts, iterations);
    assert_detail(counts, "busy jobs killed", |n| n == 0);
}

/// The detail `key` of `counts` is as `expected` says.
fn assert_detail(counts: &Tally, key: &str, expected: impl Fn(u64) -> bool) {
    let n = counts.get(key);
    assert!(expected(n), "{key}: {n}\n{}", counts.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_no_busy_job_is_killed() {
    let (_dir, outside) = outside().await;
    let counts = r1(&outside, 20, 10, 0x5eed_0001, false)
        .await
        .expect("r1 runs");
    assert_clean_run(&counts, 30);
    // The races were exercised: GitHub refused some removals because a job had just landed.
    assert_detail(&counts, "removals skipped because GitHub said busy", |n| {
        n > 0
    });
}

/// R1 while GitHub's busy flag lies for every job and its DELETE succeeds mid-job: the manager
/// looks inside each removal candidate (and freezes it) before deregistering, so no job dies.
/// (Without the look inside: 23 of 30 iterations killed a job.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_lie_no_busy_job_is_killed_when_github_lies() {
    let (_dir, outside) = outside().await;
    let counts = r1_busy_lie(&outside, 20, 10, 0x5eed_0003, 1.0)
        .await
        .expect("r1-lie runs");
    assert_clean_run(&counts, 30);
    assert_detail(&counts, "jobs killed by deletion (sim counter)", |n| n == 0);
    // The lie was exercised: busy runners were deleted through it (their jobs queued again).
    let lie = "busy runners deleted through the lie (sim counter)";
    assert_detail(&counts, lie, |n| n > 0);
}

/// A booting instance with no registration at observe time registers and takes a job while the
/// pass runs: it must keep its job. (Before the fix in manager/src/plan.rs such an instance was
/// scaled down or flushed without a GitHub check: 10 of 10 jobs killed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1b_booting_instance_registering_mid_pass_keeps_its_job() {
    let (_dir, outside) = outside().await;
    let counts = r1(&outside, 5, 5, 0x5eed_0002, true)
        .await
        .expect("r1b runs");
    assert_clean_run(&counts, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_fault_storms_delete_nothing_healthy_and_recover() {
    let (_dir, outside) = outside().await;
    let counts = r3(&outside, 8, 0x5eed_0003).await.expect("r3 runs");
    assert_no_failure(&counts, 8);
    assert_eq!(counts.get("backoff probes"), 10);
    assert_eq!(counts.get("converged in one pass after the storm"), 2);
    assert!(counts.get("client rate-limit waits (retry-after honoured)") >= 4);
    assert!(counts.get("client retries (5xx, timeouts, drops)") >= 4);
}
