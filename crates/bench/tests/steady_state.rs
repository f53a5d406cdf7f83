//! End to end at small N: the fleet settles to N online idle runners (agents long-polling in the
//! child), and an idle pass then costs one conditional list GET answered 304, 0 rate-limit points.

use std::sync::Arc;
use std::time::Duration;

use bench::fleet::{write_tarball, Fleet, RUNNER_VERSION};
use bench::outside::{Outside, OutsideOptions, RestCost};
use manager::RegistrationMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pass_costs_one_304() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tarball = write_tarball(dir.path(), 0).expect("tarball");
    let options = OutsideOptions {
        tarball,
        runner_version: RUNNER_VERSION.to_owned(),
        secondary_per_minute: 80,
    };
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_api-cost"));
    let outside = Arc::new(Outside::spawn_with(exe, &options).await.expect("child"));
    let fleet = Fleet::new(&outside, "smoke", RegistrationMode::Token, 4)
        .await
        .expect("fleet");
    fleet.converge(5, 3).await.expect("converges");
    outside
        .wait_online_idle(5, Duration::from_secs(20))
        .await
        .expect("5 online idle runners");
    fleet.converge(5, 1).await.expect("warm-up is idle");
    outside.reset_request_counts().await.expect("reset");
    let report = fleet
        .manager
        .reconcile(5, &fleet.resources)
        .await
        .expect("reconcile");
    assert!(report.created.is_empty() && report.removed.is_empty());
    assert_eq!(report.counts.idle, 5);
    let cost = RestCost::from_counts(&outside.request_counts().await.expect("counts"));
    assert_eq!(
        (
            cost.requests,
            cost.not_modified,
            cost.rate_limit_cost,
            cost.content_creating
        ),
        (1, 1, 0, 0),
        "{cost:?}"
    );
    // The runners are still online: their agents keep long-polling in the child.
    outside
        .wait_online_idle(5, Duration::from_secs(5))
        .await
        .expect("still online");
}
