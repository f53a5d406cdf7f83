//! The pure image decisions: selection, the canary's split and verdict, what is outdated and
//! what is deleted.
use super::*;

fn image(fp: &str, pool: &str, built_at: i64, state: ImageState) -> BakedImage {
    BakedImage {
        fingerprint: fp.to_owned(),
        alias: format!("app-0-{pool}-2.331.0-{built_at}"),
        pool: PoolName::new(pool).expect("valid"),
        base_image: "jammy".into(),
        base_fingerprint: "base".into(),
        runner_version: "2.331.0".into(),
        runner_sha256: "sha".into(),
        manager_version: MANAGER_VERSION.into(),
        built_at,
        state,
        size: 0,
        properties: BTreeMap::new(),
    }
}

fn small() -> PoolName {
    PoolName::new("small").expect("valid")
}

fn fps(selection: &Selection) -> (Option<&str>, Option<&str>) {
    (
        selection.good.as_ref().map(|i| i.fingerprint.as_str()),
        selection.canary.as_ref().map(|i| i.fingerprint.as_str()),
    )
}

#[test]
fn the_newest_good_image_with_a_newer_canary() {
    let images = [
        image("a", "small", 100, ImageState::Good),
        image("b", "small", 200, ImageState::Good),
        image("c", "small", 300, ImageState::Canary),
        image("x", "small", 400, ImageState::Bad),
        image("z", "other", 500, ImageState::Good),
    ];
    assert_eq!(fps(&select(&images, &small())), (Some("b"), Some("c")));
    // A canary older than the good image is stale: not launched.
    let images = [
        image("c", "small", 100, ImageState::Canary),
        image("b", "small", 200, ImageState::Good),
    ];
    assert_eq!(fps(&select(&images, &small())), (Some("b"), None));
    assert_eq!(fps(&select(&[], &small())), (None, None));
}

#[test]
fn launches_split_between_canary_and_good() {
    let both = Selection {
        good: Some(image("b", "small", 200, ImageState::Good)),
        canary: Some(image("c", "small", 300, ImageState::Canary)),
    };
    assert_eq!(both.split(10, 0.2), (2, 8));
    assert_eq!(
        both.split(3, 0.2),
        (1, 2),
        "at least one launch tries the canary"
    );
    assert_eq!(both.split(0, 0.2), (0, 0));
    let first = Selection {
        canary: both.canary.clone(),
        ..Selection::default()
    };
    assert_eq!(first.split(4, 0.2), (4, 0), "nothing to fall back to");
    let settled = Selection {
        good: both.good.clone(),
        ..Selection::default()
    };
    assert_eq!(settled.split(4, 0.2), (0, 4));
}

#[test]
fn outdated_once_a_good_image_exists() {
    let selection = Selection {
        good: Some(image("b", "small", 200, ImageState::Good)),
        canary: Some(image("c", "small", 300, ImageState::Canary)),
    };
    assert!(selection.is_outdated(Some("a")));
    assert!(
        selection.is_outdated(None),
        "a plain launch in a baked pool"
    );
    assert!(!selection.is_outdated(Some("b")));
    assert!(!selection.is_outdated(Some("c")));
    assert!(!Selection::default().is_outdated(None));
}

#[test]
fn the_canary_is_promoted_when_its_runners_come_online_and_rolled_back_when_one_fails() {
    let online = (Some("c"), RunnerState::Idle { online: true });
    let booting = (Some("c"), RunnerState::Booting);
    let dead = (Some("c"), RunnerState::Remove(RemovalReason::ProcessDead));
    let other = (Some("b"), RunnerState::Remove(RemovalReason::ProcessDead));
    assert_eq!(judge("c", [online, booting], 0, 1), Verdict::Promote);
    assert_eq!(judge("c", [online, booting], 0, 2), Verdict::Wait);
    assert_eq!(judge("c", [booting, other], 0, 1), Verdict::Wait);
    assert_eq!(judge("c", [online, dead], 0, 1), Verdict::RollBack);
    assert_eq!(
        judge("c", [online], 1, 1),
        Verdict::RollBack,
        "a launch failed"
    );
    let finished = (Some("c"), RunnerState::Remove(RemovalReason::Finished));
    assert_eq!(
        judge("c", [finished], 0, 1),
        Verdict::Wait,
        "a job done is no failure"
    );
}

#[test]
fn unused_images_go_but_the_good_one_and_the_canary_stay() {
    let images = [
        image("a", "small", 100, ImageState::Good),
        image("b", "small", 200, ImageState::Good),
        image("c", "small", 300, ImageState::Good),
        image("d", "small", 400, ImageState::Canary),
        image("x", "small", 350, ImageState::Bad),
        image("y", "small", 360, ImageState::Bad),
        image("z", "other", 50, ImageState::Good),
    ];
    let selection = select(&images, &small());
    let in_use = BTreeSet::from(["y"]);
    let deleted: Vec<&str> = garbage(&images, &small(), &selection, &in_use)
        .iter()
        .map(|i| i.fingerprint.as_str())
        .collect();
    // "x" and "y" are bad and newer than the good "c": kept ("y" is in use too).
    assert_eq!(deleted, ["a", "b"]);
}

#[test]
fn images_of_other_owners_are_not_ours() {
    let owner = Owner::new("app", 0).expect("valid");
    let info = |app: &str, unit: &str| crate::provider::ImageInfo {
        fingerprint: "f".into(),
        aliases: vec!["app-0-small-2.331.0-1".into()],
        properties: BTreeMap::from([
            (PROP_APP.to_owned(), app.to_owned()),
            (PROP_UNIT.to_owned(), unit.to_owned()),
            (PROP_POOL.to_owned(), "small".to_owned()),
            (PROP_STATE.to_owned(), "good".to_owned()),
            (PROP_BUILT_AT.to_owned(), "7".to_owned()),
        ]),
        size: 1,
    };
    let mine = BakedImage::from_info(&info("app", "0"), &owner).expect("ours");
    assert_eq!((mine.state, mine.built_at), (ImageState::Good, 7));
    assert!(BakedImage::from_info(&info("app", "1"), &owner).is_none());
    assert!(BakedImage::from_info(&info("other", "0"), &owner).is_none());
}

#[test]
fn runner_versions_from_tarball_names() {
    assert_eq!(
        runner_version("actions-runner-linux-x64-2.331.0.tar.gz"),
        "2.331.0"
    );
    assert_eq!(runner_version("r.tgz"), "r.tgz");
}
