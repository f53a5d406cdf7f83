//! Fixtures shared by the test binaries of several crates and the benchmarks; never a dependency
//! of a shipped crate.
//!
//! - [`cluster`]: the 3-member Incus cluster of `scripts/incus-cluster.sh`: clients, killing and
//!   restarting members, waiting for a member's status, per-test names and cleanup.
//! - [`incus_ignored`]: keeps the Incus tests `#[ignore]`d, so a plain `cargo test` reports them
//!   as ignored, never as passed.
//! - [`incus`]: the Incus bridge's address, random app names, and the cleanup of a test's
//!   instances (by name prefix) on its own thread and runtime.
//! - [`sim`]: the GitHub simulator on the Incus bridge, serving the fake runner tarball.
//! - [`policy`]: a pre-job policy service double.
//! - [`http`]: serving an HTTP service double on an ephemeral port.
//! - [`client`]: requests a test makes as an HTTP client, their answers asserted.
//! - [`images`]: deleting the images a test published, by a property it gave them.
//! - [`config`]: the `runner-manager` binary's config for a simulator and real Incus.
//! - [`command`]: a command of the machine run to its end, its success asserted.
//! - [`on_both_images!`]: an Incus test on each guest image; [`on_busybox_only!`]: on busybox.

pub mod client;
pub mod cluster;
pub mod command;
pub mod config;
pub mod http;
pub mod images;
pub mod incus;
pub mod incus_ignored;
pub mod policy;
pub mod sim;

/// Generates `busybox::$name` and `debian::$name` for each `$name`: two `#[ignore]`d tests (they
/// need Incus) that run the caller's `async fn $name(image: &str)` on each image
/// ([`incus::BUSYBOX`], [`incus::DEBIAN`]), on a multi-thread runtime of `worker_threads`, so
/// both run in parallel and a failure names its image.
///
/// ```text
/// test_support::on_both_images!(worker_threads = 2; reconcile_and_flush, jobs_run);
/// ```
#[macro_export]
macro_rules! on_both_images {
    (worker_threads = $threads:tt; $($name:ident),+ $(,)?) => {
        $crate::on_image!(busybox = BUSYBOX, worker_threads = $threads; $($name),+);
        $crate::on_image!(debian = DEBIAN, worker_threads = $threads; $($name),+);
    };
}

/// Generates `busybox_only::$name` for each `$name`: an `#[ignore]`d test (it needs Incus) that
/// runs the caller's `async fn $name(image: &str)` on [`incus::BUSYBOX`] alone, on a
/// multi-thread runtime of `worker_threads`.
///
/// ```text
/// test_support::on_busybox_only!(worker_threads = 2; burst_of_30_jobs);
/// ```
#[macro_export]
macro_rules! on_busybox_only {
    (worker_threads = $threads:tt; $($name:ident),+ $(,)?) => {
        $crate::on_image!(busybox_only = BUSYBOX, worker_threads = $threads; $($name),+);
    };
}

/// Generates `$module::$name` for each `$name`: an `#[ignore]`d test (it needs Incus) that runs
/// the caller's `async fn $name(image: &str)` on the image [`incus`]`::$image`, on a
/// multi-thread runtime of `worker_threads`.
#[macro_export]
macro_rules! on_image {
    ($module:ident = $image:ident, worker_threads = $threads:tt; $($name:ident),+ $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                #[ignore = "needs Incus: run by scripts/test.sh"]
                async fn $name() {
                    super::$name($crate::incus::$image).await;
                }
            )+
        }
    };
}
