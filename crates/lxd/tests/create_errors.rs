//! Creates that can never succeed as asked fail with a permanent error naming what is missing,
//! on the real daemon (Incus by default; LXD 5.0 with `LXD_SOCKET=/var/lib/lxd/unix.socket`).
//! Start it with `sudo ./scripts/incus-env.sh up`. Every name starts with `lxdt-`; the guards
//! delete whatever a failing test may have left.

mod common;

use common::{assert_no_instance, busybox, client, Cleanup};

use lxd::{Error, ImageSource, Object, ObjectKind};

fn missing(err: &Error) -> &Object {
    err.missing()
        .unwrap_or_else(|| panic!("expected Error::Missing, got {err:?}"))
}

/// `err` is permanent and names the missing `kind` `name`.
fn assert_missing(err: &Error, kind: ObjectKind, name: &str) {
    assert_eq!(missing(err), &Object::new(kind, name), "{err}");
    assert!(err.is_permanent(), "{err:?}");
}

/// Incus 6.0 fails the create operation with "Image not provided for instance creation", LXD 5.0
/// the POST with 404 "Image alias not found": both become `Missing` naming the alias.
#[tokio::test]
async fn create_from_a_missing_alias_names_it() {
    let (c, _g, name) = common::named("noalias").await;
    let alias = common::unique("noalias");
    let spec = busybox(&name);
    let spec = lxd::InstanceSpec {
        source: ImageSource::Alias(alias.clone()),
        ..spec
    };
    let err = c.create_instance(&spec).await.expect_err("no such alias");
    assert_missing(&err, ObjectKind::ImageAlias, &alias);
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&alias), "{err}");
    assert!(
        err.server_message().is_some_and(|m| !m.is_empty()),
        "the daemon's own text is kept: {err:?}"
    );
    assert_no_instance(&c, &name).await;

    // The same answer before creating anything.
    let err = c
        .check_image(&ImageSource::Alias(alias.clone()))
        .await
        .expect_err("no such alias");
    assert_missing(&err, ObjectKind::ImageAlias, &alias);
    c.check_image(&ImageSource::Alias("busybox".into()))
        .await
        .expect("busybox is there");
    let err = c
        .check_image(&ImageSource::Fingerprint("00000000deadbeef".into()))
        .await
        .expect_err("no such image");
    assert_eq!(missing(&err).kind, ObjectKind::Image, "{err:?}");
}

/// Both daemons answer the POST with 500 `Requested profile "x" doesn't exist`.
#[tokio::test]
async fn create_with_a_missing_profile_names_it() {
    let (c, _g, name) = common::named("noprof").await;
    let profile = common::unique("noprof");
    let spec = busybox(&name).profiles(["default".to_owned(), profile.clone()]);
    let err = c.create_instance(&spec).await.expect_err("no such profile");
    assert_missing(&err, ObjectKind::Profile, &profile);
    assert_no_instance(&c, &name).await;

    let err = c
        .check_profiles(&["default", profile.as_str()])
        .await
        .expect_err("no such profile");
    assert_missing(&err, ObjectKind::Profile, &profile);
    c.check_profiles(&["default"])
        .await
        .expect("default exists");
    c.check_profiles::<&str>(&[])
        .await
        .expect("nothing to check");
}

/// A root disk on a pool that does not exist fails inside the create operation.
#[tokio::test]
async fn create_on_a_missing_storage_pool_names_it() {
    let (c, _g, name) = common::named("nopool").await;
    let pool = common::unique("nopool");
    let spec = busybox(&name).device(
        "root",
        [("type", "disk"), ("path", "/"), ("pool", pool.as_str())],
    );
    let err = c.create_instance(&spec).await.expect_err("no such pool");
    assert_missing(&err, ObjectKind::StoragePool, &pool);
    assert_no_instance(&c, &name).await;
}

/// A client scoped to a project that does not exist: every check and the create name the project.
#[tokio::test]
async fn a_missing_project_is_named() {
    let c = client().await;
    let project = common::unique("noproj");
    let p = c.with_project(&project);
    let g = Cleanup::new();
    let name = g.name("noproj");
    let err = p
        .create_instance(&busybox(&name))
        .await
        .expect_err("no such project");
    assert_missing(&err, ObjectKind::Project, &project);
    let err = p
        .check_image(&ImageSource::Alias("busybox".into()))
        .await
        .expect_err("no such project");
    assert_missing(&err, ObjectKind::Project, &project);
    let err = p
        .check_profiles(&["default"])
        .await
        .expect_err("no such project");
    assert_missing(&err, ObjectKind::Project, &project);
    assert_no_instance(&c, &name).await;
}

/// 403: the server refuses for good (here: the `default` profile cannot be deleted).
#[tokio::test]
async fn forbidden_is_permanent() {
    let c = client().await;
    let err = c
        .delete_profile("default")
        .await
        .expect_err("default cannot be deleted");
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    assert!(err.is_permanent(), "{err:?}");
    c.get_profile("default").await.expect("still there");
}
