//! Images published from instances, their aliases and properties, on the real daemon (Incus by
//! default; LXD 5.0 with `LXD_SOCKET=/var/lib/lxd/unix.socket`). Start it with
//! `sudo ./scripts/incus-env.sh up`. Every instance and alias name starts with `lxdt-`, every
//! published image carries the property `user.lxdt-images` = its test's tag; the guards delete
//! all of them, also when a test fails.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use common::{busybox, client, Cleanup};

use lxd::{Client, Endpoint, Error, ExecRequest, ImageSource, PublishSpec, Stop, Timeouts};

/// The property that marks the images a test published.
const TAG_KEY: &str = "user.lxdt-images";

/// Deletes, when dropped, the aliases it was given and every image tagged with its tag
/// (`TAG_KEY`), even when the test panics before it learns a fingerprint.
struct ImageGuard {
    tag: String,
    aliases: Mutex<Vec<String>>,
}

impl ImageGuard {
    fn new(tag: &str) -> Self {
        ImageGuard {
            tag: common::unique(tag),
            aliases: Mutex::new(Vec::new()),
        }
    }

    /// Registers and returns a fresh unique alias name; `suffix` (such as `/v1`) is appended.
    fn alias(&self, tag: &str, suffix: &str) -> String {
        let a = format!("{}{suffix}", common::unique(tag));
        self.aliases.lock().expect("not poisoned").push(a.clone());
        a
    }

    /// A publish spec that carries the guard's tag.
    fn spec(&self) -> PublishSpec {
        PublishSpec::new().property(TAG_KEY, &self.tag)
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let aliases = std::mem::take(&mut *self.aliases.lock().unwrap_or_else(|e| e.into_inner()));
        let tag = self.tag.clone();
        let sock = common::socket();
        // The test's runtime may be unwinding: a runtime of its own, on a thread of its own.
        test_support::incus::block_on_own_thread(async move {
            let Ok(c) = Client::connect(Endpoint::Unix(sock), Timeouts::default()).await else {
                return;
            };
            for a in &aliases {
                if let Err(e) = c.delete_image_alias_if_exists(a).await {
                    eprintln!("cleanup: {e}");
                }
            }
            test_support::images::delete_tagged(&c, TAG_KEY, &tag).await;
        });
    }
}

/// Runs `script` in `name` and returns its stdout; fails the test on a non-zero exit.
async fn sh(c: &Client, name: &str, script: &str) -> String {
    let out = c
        .exec(name, &ExecRequest::shell(script))
        .await
        .unwrap_or_else(|e| panic!("exec {script:?} in {name}: {e}"));
    assert!(
        out.success(),
        "{script:?} in {name}: {:?} {}",
        out.status,
        out.stderr_text()
    );
    out.stdout_text()
}

/// The images tagged with `tag`.
async fn tagged(c: &Client, tag: &str) -> Vec<lxd::Image> {
    let mut all = c.list_images().await.expect("list images");
    all.retain(|i| i.properties.get(TAG_KEY).map(String::as_str) == Some(tag));
    all
}

/// A publishing test's start: a client, its instances' guard, its images' guard (`tag`) and
/// the instance to publish, a busybox named after `tag`, created `running` or stopped.
async fn publishing(tag: &str, running: bool) -> (Client, Cleanup, ImageGuard, String) {
    let (c, g) = (client().await, Cleanup::new());
    let name = g.name(tag);
    let spec = busybox(&name);
    let spec = if running { spec.started() } else { spec };
    c.create_instance(&spec)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    (c, g, ImageGuard::new(tag), name)
}

/// No image carries the test's tag and `alias` resolves to nothing.
async fn assert_nothing_published(c: &Client, images: &ImageGuard, alias: &str) {
    assert!(tagged(c, &images.tag).await.is_empty(), "no image left");
    assert_eq!(c.image_alias_target(alias).await.expect("resolve"), None);
}

/// Publish a stopped container with two aliases and properties; read it back by list, get and
/// alias; launch from it; retarget, create and delete aliases; replace the properties; delete it.
#[tokio::test]
async fn images_publish_launch_retarget_and_delete() {
    let (c, g, images, source) = publishing("pubflow", true).await;
    let marker = common::unique("marker");
    sh(&c, &source, &format!("echo {marker} > /root/marker")).await;
    c.stop_instance(&source, Stop::Force)
        .await
        .expect("stop the source");

    // Two aliases, one with a '/' (percent-encoded in paths).
    let a1 = images.alias("pub", "");
    let a2 = images.alias("pub", "/v1");
    let spec = images
        .spec()
        .alias(&a1)
        .alias(&a2)
        .property("user.role", "runner")
        .description("published by lxd tests")
        .compression("none");
    let fp = c
        .publish_instance(&source, &spec)
        .await
        .expect("publish the stopped container");
    assert_eq!(fp.len(), 64, "fingerprint {fp:?}");

    // Listed, fetched, resolved.
    let listed = tagged(&c, &images.tag).await;
    assert_eq!(
        listed.iter().map(|i| &i.fingerprint).collect::<Vec<_>>(),
        vec![&fp]
    );
    let mut names = listed[0].alias_names();
    names.sort();
    let mut expected = vec![a1.clone(), a2.clone()];
    expected.sort();
    assert_eq!(names, expected);

    let img = c.get_image(&fp).await.expect("get the published image");
    assert_eq!(img.fingerprint, fp);
    assert!(img.has_alias(&a1) && img.has_alias(&a2), "{img:?}");
    let property = |key: &str| img.properties.get(key).map(String::as_str);
    assert_eq!(property("user.role"), Some("runner"));
    assert_eq!(property("description"), Some("published by lxd tests"));
    assert_eq!(
        property("os"),
        Some("busybox"),
        "properties of the source image are inherited: {:?}",
        img.properties
    );
    assert!(!img.public && !img.cached, "{img:?}");
    assert!(img.size > 0, "{img:?}");
    assert!(!img.created_at.is_empty(), "{img:?}");
    assert_eq!(img.last_used_at, None, "not used yet: {img:?}");
    assert_eq!(
        c.image_alias(&a2).await.expect("alias entry").description,
        "published by lxd tests"
    );
    for a in [&a1, &a2] {
        assert_eq!(
            c.image_alias_target(a).await.expect("resolve"),
            Some(fp.clone()),
            "{a}"
        );
    }
    assert_eq!(
        c.image_alias_target(&common::unique("noalias"))
            .await
            .expect("a missing alias is an answer"),
        None
    );

    // A container launched from the alias has the file.
    let launched = g.name("publaunch");
    c.create_instance(&lxd::InstanceSpec {
        source: ImageSource::Alias(a1.clone()),
        ..busybox(&launched).started()
    })
    .await
    .expect("launch from the published alias");
    assert_eq!(sh(&c, &launched, "cat /root/marker").await.trim(), marker);
    assert!(
        c.get_image(&fp).await.expect("get").last_used_at.is_some(),
        "used by the launch"
    );

    // Retarget an alias to another image and back; set creates a missing one.
    let base = c
        .image_alias_target("busybox")
        .await
        .expect("resolve busybox")
        .expect("the busybox alias (incus-env.sh up imports it)");
    c.set_image_alias(&a2, &base).await.expect("retarget");
    assert_eq!(
        c.image_alias_target(&a2).await.expect("resolve"),
        Some(base.clone())
    );
    assert_eq!(
        c.image_alias(&a2).await.expect("alias entry").description,
        "published by lxd tests",
        "retargeting keeps the description"
    );
    let img = c.get_image(&fp).await.expect("get");
    assert_eq!(img.alias_names(), vec![a1.clone()]);
    c.set_image_alias(&a2, &fp).await.expect("retarget back");
    assert_eq!(
        c.image_alias_target(&a2).await.expect("resolve"),
        Some(fp.clone())
    );
    let a3 = images.alias("pubset", "");
    c.set_image_alias(&a3, &fp)
        .await
        .expect("set creates a missing alias");
    assert_eq!(
        c.image_alias_target(&a3).await.expect("resolve"),
        Some(fp.clone())
    );
    let a4 = images.alias("pubdesc", "");
    c.create_image_alias_with_description(&a4, &fp, "fourth")
        .await
        .expect("create with a description");
    assert_eq!(
        c.image_alias(&a4).await.expect("alias").description,
        "fourth"
    );
    let dup = c
        .create_image_alias_with_description(&a4, &fp, "again")
        .await
        .expect_err("the alias exists");
    assert!(dup.is_conflict(), "{dup:?}");

    // Replace the properties: the ones not given are gone, other settings kept.
    let props = BTreeMap::from([
        (TAG_KEY.to_owned(), images.tag.clone()),
        ("os".to_owned(), "busybox".to_owned()),
        ("user.role".to_owned(), "runner-v2".to_owned()),
    ]);
    c.update_image_properties(&fp, &props)
        .await
        .expect("update properties");
    let img = c.get_image(&fp).await.expect("get");
    assert_eq!(img.properties, props);
    assert!(!img.public);
    assert_eq!(img.aliases.len(), 4, "{img:?}");

    // Delete an alias (twice), then the image (twice): its aliases go with it.
    assert!(c
        .delete_image_alias_if_exists(&a1)
        .await
        .expect("delete alias"));
    assert!(!c
        .delete_image_alias_if_exists(&a1)
        .await
        .expect("deleting a missing alias is fine"));
    assert_eq!(c.image_alias_target(&a1).await.expect("resolve"), None);
    assert!(c.delete_image_if_exists(&fp).await.expect("delete image"));
    let gone = c.get_image(&fp).await.expect_err("deleted");
    assert!(gone.is_not_found(), "{gone:?}");
    assert!(!c
        .delete_image_if_exists(&fp)
        .await
        .expect("deleting a missing image is fine"));
    assert_eq!(c.image_alias_target(&a2).await.expect("resolve"), None);
    assert_eq!(c.image_alias_target(&a3).await.expect("resolve"), None);
    assert_eq!(
        c.image_alias_target("busybox").await.expect("resolve"),
        Some(base),
        "the base image is untouched"
    );
}

/// A running instance cannot be published: the server's reason comes back, nothing is left.
#[tokio::test]
async fn images_publishing_a_running_instance_fails_clearly() {
    let (c, _g, images, name) = publishing("pubrun", true).await;
    let alias = images.alias("pubrun", "");
    let err = c
        .publish_instance(&name, &images.spec().alias(&alias))
        .await
        .expect_err("the instance is running");
    assert!(matches!(err, Error::OperationFailed { .. }), "{err:?}");
    let message = err
        .server_message()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(message.contains("running"), "{err}");
    assert!(err.to_string().contains(&name), "names the instance: {err}");
    assert_nothing_published(&c, &images, &alias).await;
}

/// An alias that exists already stops the publish before anything is built; a missing instance is
/// not found.
#[tokio::test]
async fn images_publish_conflicts_and_missing_instances() {
    let (c, g, images, name) = publishing("pubconf", false).await;
    let fresh = images.alias("pubconf", "");
    let err = c
        .publish_instance(&name, &images.spec().alias(&fresh).alias("busybox"))
        .await
        .expect_err("busybox is taken");
    assert!(err.is_conflict(), "{err:?}");
    assert!(err.to_string().contains("busybox"), "{err}");
    assert_nothing_published(&c, &images, &fresh).await;

    // The same alias twice passes the check, and the server fails the publish after building the
    // image (measured on Incus 6.0: `Alias already exists`): the image is deleted again.
    let twice = images.alias("pubtwice", "");
    let err = c
        .publish_instance(&name, &images.spec().alias(&twice).alias(&twice))
        .await
        .expect_err("the second alias clashes with the first");
    assert!(err.is_conflict(), "{err:?}");
    assert_nothing_published(&c, &images, &twice).await;

    let missing = g.name("pubnone");
    let err = c
        .publish_instance(&missing, &images.spec())
        .await
        .expect_err("no such instance");
    assert!(err.is_not_found(), "{err:?}");
    assert!(tagged(&c, &images.tag).await.is_empty(), "no image left");

    let err = c
        .publish_instance("bad_name", &images.spec())
        .await
        .expect_err("invalid name");
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
}
