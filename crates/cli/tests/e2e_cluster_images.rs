//! A baked image on the real 3-member Incus cluster (`scripts/incus-cluster.sh`): the real
//! binary, the GitHub simulator, busybox containers and the fake runner.
//!
//! - `cluster_baked_image_serves_every_member`: `image build` on the cluster publishes one image
//!   (built on whichever member the cluster placed the build instance), and a baked pool of three
//!   runners spread over m1, m2 and m3 launches every one of them from that image: the cluster
//!   makes it available to every member. The runners come online and run a job each; then the
//!   fleet is flushed and the image deleted.

mod e2e_env;

use std::collections::BTreeMap;
use std::time::Duration;

use e2e_env::*;
use github_sim::JobStatus;
use serde_json::{json, Value};
use test_support::cluster;

const POOL: &str = "baked";
const IMAGE_KEY: &str = "user.runner-manager.image";
const APP_PROPERTY: &str = "runner-manager.app";

/// A plain `cargo test` (no cluster) must report the cluster test as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    test_support::incus_ignored::assert_only_these_run_by_default(
        &std::env::current_exe().expect("the test binary"),
        &["incus_tests_are_ignored_by_default"],
    );
}

/// Deletes, when dropped, every image of the app on the cluster (even when the test failed).
struct ImageGuard {
    app: String,
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let app = self.app.clone();
        test_support::incus::block_on_own_thread(async move {
            let lxd = cluster::connect().await;
            test_support::images::delete_tagged(&lxd, APP_PROPERTY, &app).await;
        });
    }
}

/// One baked pool of `runners` idle runners (min_idle = max) on the cluster's socket.
fn write_config(env: &Env, runners: u32) {
    let tables = format!(
        "\n[cluster]\novercommit_cpu = 16.0\n{}",
        baked_pool(POOL, "jit", runners, runners, "")
    );
    env.write_pools_config(
        &tables,
        &ServerSection {
            port: free_port(),
            interval_seconds: 3600,
        },
        "",
    );
    let text = std::fs::read_to_string(&env.config).expect("config");
    let text = with_lxd_keys(&text, &cluster::socket(), "");
    std::fs::write(&env.config, text).expect("config written");
}

/// The app's runner instances (not the build instance): name → (member, baked image).
async fn runners(env: &Env) -> BTreeMap<String, (String, Option<String>)> {
    env.instances()
        .await
        .into_iter()
        .filter(|i| !i.name.contains("-build-"))
        .map(|i| {
            let image = i.config.get(IMAGE_KEY).cloned();
            (i.name, (i.location, image))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_baked_image_serves_every_member() {
    let _serial = cluster::serial().await;
    let mut env = Env::new(test_support::incus::BUSYBOX).await;
    env.lxd = cluster::connect().await;
    let _images = ImageGuard {
        app: env.app.clone(),
    };
    let members = cluster::MEMBERS.len() as u32;
    write_config(&env, members);
    env.update_runner_bin().await;

    // One image, published on the cluster; no build instance is left.
    let doc = env
        .run(&["image", "build", "--json"])
        .await
        .json("image build");
    assert_eq!(doc["failed"], json!([]), "{doc}");
    assert_eq!(doc["built"].as_array().map(Vec::len), Some(1), "{doc}");
    let built: &Value = &doc["built"][0];
    let fingerprint = built["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("one image built: {doc}"))
        .to_owned();
    let alias = built["alias"].as_str().expect("alias").to_owned();
    env.clock.mark(&format!("built {alias} ({fingerprint})"));
    let image = env.lxd.get_image(&fingerprint).await.expect("the image");
    assert!(image.has_alias(&alias), "{image:?}");
    assert_eq!(
        image.properties.get(APP_PROPERTY),
        Some(&env.app),
        "{image:?}"
    );
    assert!(runners(&env).await.is_empty(), "no build instance is left");

    // A runner on every member, each launched from the image.
    env.reconcile_until_clean().await;
    let fleet = runners(&env).await;
    env.clock.mark(&format!("fleet: {fleet:?}"));
    let mut on: Vec<&str> = fleet.values().map(|(m, _)| m.as_str()).collect();
    on.sort_unstable();
    assert_eq!(on, cluster::MEMBERS, "one runner per member: {fleet:?}");
    for (name, (member, image)) in &fleet {
        assert_eq!(
            image.as_deref(),
            Some(fingerprint.as_str()),
            "{name} on {member} was not launched from the baked image"
        );
    }

    // Every one of them comes online and runs a job.
    env.wait_online(fleet.len()).await;
    let jobs: Vec<u64> = (0..members)
        .map(|_| env.enqueue(&["self-hosted", POOL], "echo baked on the cluster"))
        .collect();
    let done = env
        .eventually(
            "every job completed",
            WAIT,
            Duration::from_millis(200),
            || async {
                let views: Vec<_> = jobs.iter().filter_map(|id| env.sim.job(*id)).collect();
                if views.len() == jobs.len()
                    && views.iter().all(|j| {
                        j.status == JobStatus::Completed
                            && j.conclusion.as_deref() == Some("success")
                    })
                {
                    Ok(views)
                } else {
                    Err(format!("{views:#?}"))
                }
            },
        )
        .await;
    let ran_on: std::collections::BTreeSet<_> =
        done.iter().filter_map(|j| j.runner_name.clone()).collect();
    assert_eq!(
        ran_on.len(),
        jobs.len(),
        "each job on its own runner: {done:#?}"
    );
    for runner in &ran_on {
        assert!(
            fleet.contains_key(runner),
            "{runner} is not one of {fleet:?}"
        );
    }

    env.flush_all(u64::from(members)).await;
    env.assert_nothing_left().await;
}
