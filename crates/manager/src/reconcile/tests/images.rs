//! Baked pools on the simulated provider: the build, launches from the image, the canary's
//! promotion and rollback, the rotation of idle runners, and images deleted once unused.

use super::*;
use crate::images::{ImageState, IMAGE_KEY, PROP_POOL, PROP_RUNNER_SHA256, PROP_STATE};
use crate::pool::{ImageMode, PoolName, PoolSpec, Sizing};

fn baked(min_idle: usize, max: usize) -> PoolSpec {
    PoolSpec {
        name: PoolName::new("small").expect("valid"),
        image: "jammy".into(),
        instance_type: crate::model::InstanceType::Container,
        resources: resources(),
        profiles: Vec::new(),
        labels: vec!["small".into()],
        runner_group: None,
        registration: RegistrationMode::Jit,
        sizing: Sizing::Demand { min_idle, max },
        priority: 0,
        marked: true,
        image_mode: ImageMode::Baked,
        placement: crate::pool::Placement::default(),
    }
}

fn baked_world(min_idle: usize) -> World {
    app_world(|c| c.pools = vec![baked(min_idle, 6)])
}

/// The image each owned instance was launched from (`-` for a plain launch).
fn images_in_use(w: &World) -> Vec<String> {
    let mut out: Vec<String> = w
        .owned_instances()
        .iter()
        .map(|n| {
            w.provider
                .instance(n)
                .expect("instance")
                .config
                .get(IMAGE_KEY)
                .cloned()
                .unwrap_or_else(|| "-".into())
        })
        .collect();
    out.sort();
    out
}

fn state_of(w: &World, fingerprint: &str) -> Option<String> {
    w.provider
        .images()
        .get(fingerprint)
        .and_then(|i| i.properties.get(PROP_STATE).cloned())
}

async fn pass(w: &World) -> ReconcileReport {
    w.manager.reconcile_demand(None).await.expect("pass")
}

/// A pool of three runners on image A, built, launched and promoted.
async fn on_a_good_image() -> (World, crate::images::BakedImage) {
    let w = baked_world(3);
    let a = build(&w).await;
    pass(&w).await;
    pass(&w).await;
    (w, a)
}

async fn build(w: &World) -> crate::images::BakedImage {
    w.manager.build_image(&baked(0, 6)).await.expect("built")
}

#[tokio::test]
async fn a_built_image_holds_the_runner_and_no_secret_and_no_build_instance_stays() {
    let w = baked_world(2);
    let built = w.manager.ensure_images().await;
    let image = match built.as_slice() {
        [(pool, Ok(Some(image)))] if pool.as_str() == "small" => image.clone(),
        other => panic!("one image built: {other:?}"),
    };
    assert_eq!(image.state, ImageState::Canary);
    let images = w.provider.images();
    let sim = images.get(&image.fingerprint).expect("published");
    assert_eq!(sim.properties[PROP_POOL], "small");
    assert_eq!(
        sim.properties[PROP_RUNNER_SHA256],
        w.manager.runner_bin().expect("cached").sha256
    );
    assert!(sim
        .files
        .contains_key(&format!("{}/config.sh", crate::install::RUNNER_DIR)));
    for (path, (content, _)) in &sim.files {
        let text = String::from_utf8_lossy(content);
        assert!(
            !text.contains(REG_TOKEN) && !text.contains(JIT_PREFIX),
            "{path} holds a secret"
        );
        assert!(
            !path.contains(".jitconfig") && !path.contains("registration-token"),
            "{path}"
        );
    }
    assert!(
        w.provider.instance_names().is_empty(),
        "the build instance is gone: {:?}",
        w.provider.instance_names()
    );
    // Current: nothing more to build.
    let again = w.manager.ensure_images().await;
    assert!(matches!(again.as_slice(), [(_, Ok(None))]), "{again:?}");
}

#[tokio::test]
async fn the_first_image_takes_the_launches_and_is_promoted_once_runners_come_online() {
    let w = baked_world(2);
    let image = build(&w).await;
    let report = pass(&w).await;
    assert_eq!(report.created.len(), 2, "{report:?}");
    assert_eq!(images_in_use(&w), vec![image.fingerprint.clone(); 2]);
    // From the image, the install exec carries no runner tarball.
    let setups: Vec<_> = w
        .provider
        .execs()
        .into_iter()
        .filter(|e| e.argv.iter().any(|a| a.contains("RM_SETUP_MODE=baked")))
        .collect();
    assert_eq!(setups.len(), 2);
    assert!(setups.iter().all(|e| e.stdin.unwrap_or(0) < 64 * 1024));
    // Online: promoted; nothing else changes.
    let again = pass(&w).await;
    assert!(
        again.created.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
    assert_eq!(state_of(&w, &image.fingerprint).as_deref(), Some("good"));
}

#[tokio::test]
async fn a_new_image_rotates_in_idle_runners_busy_ones_finish_and_the_old_image_goes() {
    let (w, a) = on_a_good_image().await;
    assert_eq!(state_of(&w, &a.fingerprint).as_deref(), Some("good"));
    // A job on one runner: the pool grows to busy 1 + min_idle 3.
    let busy = w.owned_instances().into_iter().next().expect("a runner");
    w.registry.set_busy(&busy);
    assert_eq!(pass(&w).await.created.len(), 1);

    // B: one idle A runner makes room for the canary, which comes online and is promoted.
    let b = build(&w).await;
    let report = pass(&w).await;
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert_eq!(report.removed[0].1, RemovalReason::Outdated);
    assert_ne!(report.removed[0].0.as_str(), busy, "the busy runner stays");
    assert_eq!(report.created.len(), 1, "{report:?}");
    pass(&w).await;
    assert_eq!(state_of(&w, &b.fingerprint).as_deref(), Some("good"));
    // The other idle A runners are replaced by B ones; the busy one stays on A.
    let report = pass(&w).await;
    assert_eq!(report.removed.len(), 2, "{report:?}");
    let mut expected = vec![a.fingerprint.clone()];
    expected.extend(vec![b.fingerprint.clone(); 3]);
    expected.sort();
    assert_eq!(images_in_use(&w), expected);
    assert!(
        w.provider.images().contains_key(&a.fingerprint),
        "A serves a busy runner"
    );

    // The busy job ends: its runner goes, and with it the last use of A.
    w.runner_finishes(&busy);
    pass(&w).await;
    pass(&w).await;
    assert_eq!(images_in_use(&w), vec![b.fingerprint.clone(); 3]);
    assert!(
        !w.provider.images().contains_key(&a.fingerprint),
        "A deleted"
    );
    assert!(w.provider.images().contains_key(&b.fingerprint));
}

#[tokio::test]
async fn a_broken_canary_is_rolled_back_after_one_launch() {
    let (w, a) = on_a_good_image().await;
    let b = build(&w).await;
    w.provider.break_image(&b.alias);
    let report = pass(&w).await;
    assert_eq!(
        report.failed.len(),
        1,
        "the canary launch failed: {report:?}"
    );
    assert_eq!(state_of(&w, &b.fingerprint).as_deref(), Some("bad"));
    assert_eq!(state_of(&w, &a.fingerprint).as_deref(), Some("good"));
    // The pool goes on from A: back to three runners, all on A; B launched once only.
    pass(&w).await;
    assert_eq!(images_in_use(&w), vec![a.fingerprint.clone(); 3]);
    let creates = w.provider.calls_starting("create ");
    // Two builds, three runners from A, the one canary launch, its replacement from A.
    assert_eq!(creates, 2 + 3 + 1 + 1);
    // The bad image stays while it is the newest: it records that this runner on this base
    // failed, so the same build is not made again.
    assert!(w.provider.images().contains_key(&b.fingerprint));
    assert!(matches!(
        w.manager.ensure_images().await.as_slice(),
        [(_, Ok(None))]
    ));
}
