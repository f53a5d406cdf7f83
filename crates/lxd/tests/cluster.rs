//! The client against a real 3-member Incus cluster (`scripts/incus-cluster.sh up`; members m1,
//! m2, m3). These tests kill and restart members: they run one at a time (the nextest group
//! `incus-cluster`, and `cluster::serial` under plain `cargo test`).

use std::time::{Duration, Instant};

use lxd::{Client, Endpoint, ExecRequest, ImageSource, InstanceSpec, ObjectKind, Timeouts};
use test_support::cluster::{self, Cleanup, MEMBERS};
use test_support::incus_ignored;

/// A plain `cargo test` (no cluster) must report the cluster tests as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    incus_ignored::assert_only_these_run_by_default(
        &std::env::current_exe().expect("the test binary"),
        &["incus_tests_are_ignored_by_default"],
    );
}

fn busybox(name: &str) -> InstanceSpec {
    InstanceSpec::new(name, ImageSource::Alias("busybox".into())).started()
}

/// A cluster test's start: its turn on the cluster, a client, and its names (`<tag>-…`),
/// deleted on the way out.
async fn setup(tag: &str) -> (cluster::Serial, Client, Cleanup) {
    let serial = cluster::serial().await;
    let c = cluster::connect().await;
    let g = Cleanup::new(&c, cluster::unique_prefix(tag));
    (serial, c, g)
}

/// Creates and starts a busybox `name` on `target` (a member, or `@group`), which must work.
async fn create_on(c: &Client, name: &str, target: &str) {
    c.create_instance(&busybox(name).target(target))
        .await
        .unwrap_or_else(|e| panic!("create {name} on {target}: {e}"));
}

/// `script`'s standard output in `name`, trimmed; the exec must work.
async fn run(c: &Client, name: &str, script: &str) -> String {
    let out = c
        .exec(name, &ExecRequest::shell(script))
        .await
        .unwrap_or_else(|e| panic!("exec {script:?} in {name}: {e}"));
    out.stdout_text().trim().to_owned()
}

#[tokio::test]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_members_are_listed_with_status_groups_and_resources() {
    let _serial = cluster::serial().await;
    let c = cluster::connect().await;
    let info = c.cluster().await.expect("GET /1.0/cluster");
    assert!(info.enabled);
    assert_eq!(info.server_name, "m1");

    let members = c.cluster_members().await.expect("members");
    let mut names: Vec<&str> = members.iter().map(|m| m.server_name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, MEMBERS);
    for m in &members {
        let n = m.server_name.trim_start_matches('m');
        assert_eq!(m.url, format!("https://127.0.1.{n}:8443"), "{m:?}");
        assert_eq!(m.status, "Online", "{m:?}");
        assert!(!m.message.is_empty(), "{m:?}");
        assert!(m.roles.iter().any(|r| r.starts_with("database")), "{m:?}");
        assert!(
            m.groups.iter().any(|g| g == cluster::DEFAULT_GROUP),
            "{m:?}"
        );
    }
    let one = c.cluster_member("m2").await.expect("member m2");
    assert_eq!(one.server_name, "m2");
    assert!(c
        .cluster_member("nosuch")
        .await
        .is_err_and(|e| e.is_not_found()));

    let groups = c.cluster_groups().await.expect("groups");
    let default = groups
        .iter()
        .find(|g| g.name == cluster::DEFAULT_GROUP)
        .expect("the default group");
    let mut in_default = default.members.clone();
    in_default.sort();
    assert_eq!(in_default, MEMBERS);

    // Every member's resources, asked concurrently through m1, each within a short timeout.
    let started = Instant::now();
    let all = futures::future::join_all(
        MEMBERS
            .iter()
            .map(|m| c.resources(Some(m), Duration::from_secs(5))),
    )
    .await;
    for (m, r) in MEMBERS.iter().zip(all) {
        let r = r.unwrap_or_else(|e| panic!("resources of {m}: {e}"));
        assert!(r.cpu_threads >= 1, "{m}: {r:?}");
        assert!(r.memory_total > 0 && r.memory_used > 0, "{m}: {r:?}");
        assert!(r.memory_used <= r.memory_total, "{m}: {r:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let own = c
        .resources(None, Duration::from_secs(5))
        .await
        .expect("own");
    assert!(own.cpu_threads >= 1);
    let unknown = c
        .resources(Some("nosuch"), Duration::from_secs(5))
        .await
        .expect_err("no such member");
    assert!(unknown.is_not_found(), "{unknown:?}");

    // Any member's socket is the same cluster.
    let m3 = cluster::connect_member("m3").await;
    assert_eq!(m3.cluster().await.expect("m3").server_name, "m3");
    assert_eq!(m3.cluster_members().await.expect("from m3").len(), 3);
}

/// The standalone daemon (incus-env.sh) answers the same calls as "not clustered".
#[tokio::test]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_calls_on_a_standalone_server() {
    let c = Client::connect(
        Endpoint::Unix("/var/lib/incus/unix.socket".into()),
        Timeouts::default(),
    )
    .await
    .expect("the standalone daemon (./scripts/incus-env.sh up)");
    assert!(!c.server().clustered);
    let info = c.cluster().await.expect("GET /1.0/cluster");
    assert!(!info.enabled);
    assert!(c.cluster_members().await.expect("members").is_empty());
    assert!(c.cluster_groups().await.expect("groups").is_empty());
    let r = c
        .resources(None, Duration::from_secs(5))
        .await
        .expect("resources");
    assert!(r.cpu_threads >= 1 && r.memory_total > 0);
    let err = c
        .create_instance(&busybox("lxdt-cluster-standalone").target("m1"))
        .await
        .expect_err("a target on a standalone server");
    assert!(err.is_permanent(), "{err:?}");
    assert!(err.to_string().contains("clustered"), "{err}");
}

#[tokio::test]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_create_with_a_target_member_or_group() {
    let (_serial, c, g) = setup("lxdt-cl").await;
    // Groups a failed run of this test left behind (the tests run one at a time).
    for stale in c.cluster_groups().await.expect("groups") {
        if stale.name.starts_with("lxdt-cl-") {
            c.delete_cluster_group(&stale.name)
                .await
                .expect("stale group");
        }
    }

    // On each member, through m1: the create of a member other than m1 is forwarded, and its
    // operation URL carries `?project=default`; the wait must really wait (the instance is
    // Running when the call returns).
    for m in MEMBERS {
        let name = g.name(m);
        let started = Instant::now();
        create_on(&c, &name, m).await;
        eprintln!("create + start on {m}: {:?}", started.elapsed());
        let i = c.get_instance(&name).await.expect("created");
        assert_eq!(i.location, m);
        assert!(i.is_running(), "{name} on {m}: {}", i.status);
        // The exec is forwarded to the member.
        let out = run(&c, &name, "echo hello from $(hostname)").await;
        assert_eq!(out, format!("hello from {name}"));
    }
    let listed = c.list_instances().await.expect("list");
    for m in MEMBERS {
        let i = listed.iter().find(|i| i.name == g.name(m)).expect("listed");
        assert_eq!(i.location, m);
    }

    // On a group: created on its member.
    let group = g.prefix().trim_end_matches('-').to_owned();
    c.create_cluster_group(&group, "lxd crate test", &["m2"])
        .await
        .expect("create group");
    let groups = c.cluster_groups().await.expect("groups");
    assert!(groups
        .iter()
        .any(|x| x.name == group && x.members == ["m2"]));
    let on_group = g.name("grp");
    let created = c
        .create_instance(&busybox(&on_group).target(format!("@{group}")))
        .await;
    let location = c.get_instance(&on_group).await.map(|i| i.location);
    assert!(c.delete_cluster_group(&group).await.expect("delete group") || created.is_err());
    created.expect("create on the group");
    assert_eq!(location.expect("created on the group"), "m2");
    assert!(!c.delete_cluster_group(&group).await.expect("gone"));

    // Unknown member or group: permanent, naming it.
    let err = c
        .create_instance(&busybox(&g.name("nomember")).target("nosuch"))
        .await
        .expect_err("no such member");
    assert!(err.is_permanent(), "{err:?}");
    let missing = err.missing().expect("names what is missing");
    assert_eq!(missing.kind, ObjectKind::ClusterMember);
    assert_eq!(missing.name.as_deref(), Some("nosuch"));
    let err = c
        .create_instance(&busybox(&g.name("nogroup")).target("@nosuchgroup"))
        .await
        .expect_err("no such group");
    let missing = err.missing().expect("names what is missing");
    assert_eq!(missing.kind, ObjectKind::ClusterGroup, "{err}");
    assert_eq!(missing.name.as_deref(), Some("nosuchgroup"));
}

#[tokio::test]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_member_killed_is_offline_fails_fast_and_comes_back() {
    let (_serial, c, g) = setup("lxdt-ck").await;
    let on_m3 = g.name("m3");
    let on_m2 = g.name("m2");
    create_on(&c, &on_m3, "m3").await;
    create_on(&c, &on_m2, "m2").await;

    let killed = cluster::kill_member("m3").await;
    let started = Instant::now();
    let m = cluster::wait_member_status(&c, "m3", "Offline", Duration::from_secs(40)).await;
    eprintln!("m3 Offline after {:?}: {}", started.elapsed(), m.message);
    assert!(!m.message.is_empty());

    // Listing is prompt; m3's instance is reported, with status Error.
    let listed = cluster::within(Duration::from_secs(5), c.list_instances())
        .await
        .expect("list with a member down");
    let i3 = listed
        .iter()
        .find(|i| i.name == on_m3)
        .expect("m3's instance listed");
    assert_eq!(i3.location, "m3");
    assert_eq!(i3.status, "Error");
    let i2 = listed
        .iter()
        .find(|i| i.name == on_m2)
        .expect("m2's instance listed");
    assert!(i2.is_running());
    let members = cluster::within(Duration::from_secs(5), c.cluster_members())
        .await
        .expect("members");
    assert_eq!(
        members.iter().filter(|m| m.status == "Online").count(),
        2,
        "{members:?}"
    );

    // Calls that need m3 fail fast and say the member is unavailable.
    let late = busybox(&g.name("late")).target("m3");
    let err = cluster::within(Duration::from_secs(5), c.create_instance(&late))
        .await
        .expect_err("m3 is down");
    assert!(err.is_member_unavailable(), "{err:?}");
    assert!(err.is_transient() && !err.is_permanent(), "{err:?}");
    let resources = c.resources(Some("m3"), Duration::from_secs(5));
    let err = cluster::within(Duration::from_secs(2), resources)
        .await
        .expect_err("m3 is down");
    assert!(err.is_member_unavailable(), "{err:?}");
    let exec = ExecRequest::shell("true");
    let err = cluster::within(Duration::from_secs(5), c.exec(&on_m3, &exec))
        .await
        .expect_err("m3 is down");
    assert!(err.is_member_unavailable(), "{err:?}");
    // The rest of the cluster works.
    create_on(&c, &g.name("meanwhile"), "m2").await;

    // Back: usable again, its container kept running.
    let took = killed.start().await;
    eprintln!("m3 usable again {took:?} after start");
    cluster::wait_member_status(&c, "m3", "Online", Duration::from_secs(30)).await;
    let i3 = c.get_instance(&on_m3).await.expect("m3's instance");
    assert!(i3.is_running(), "{}", i3.status);
    assert_eq!(run(&c, &on_m3, "echo back").await, "back");
    create_on(&c, &g.name("after"), "m3").await;
    let r = c
        .resources(Some("m3"), Duration::from_secs(5))
        .await
        .expect("m3's resources again");
    assert!(r.cpu_threads >= 1);
}

/// A member that was offline and is restarted: once the cluster lists it Online again, calls
/// forwarded to it work at the first try of the caller (the client repeats "Server isn't ready
/// yet" while no member is offline).
#[tokio::test]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_member_back_from_offline_is_usable_once_online() {
    let (_serial, c, g) = setup("lxdt-cb").await;
    let on_m2 = g.name("m2");
    create_on(&c, &on_m2, "m2").await;
    let killed = cluster::kill_member("m2").await;
    cluster::wait_member_status(&c, "m2", "Offline", Duration::from_secs(40)).await;
    let started = Instant::now();
    killed.start_nowait().await;
    cluster::wait_member_status(&c, "m2", "Online", Duration::from_secs(30)).await;
    eprintln!("m2 Online {:?} after its restart began", started.elapsed());
    let r = c
        .resources(Some("m2"), Duration::from_secs(10))
        .await
        .expect("m2's resources once Online");
    assert!(r.cpu_threads >= 1);
    assert_eq!(run(&c, &on_m2, "echo still here").await, "still here");
    eprintln!("m2 usable {:?} after its restart began", started.elapsed());
}
