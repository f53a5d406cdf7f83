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
//! - [`config`]: the `runner-manager` binary's config for a simulator and real Incus.
//! - [`on_both_images!`]: an Incus test on each guest image.

pub mod cluster;
pub mod config;
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
        mod busybox {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                #[ignore = "needs Incus: run by scripts/test.sh"]
                async fn $name() {
                    super::$name($crate::incus::BUSYBOX).await;
                }
            )+
        }
        mod debian {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                #[ignore = "needs Incus: run by scripts/test.sh"]
                async fn $name() {
                    super::$name($crate::incus::DEBIAN).await;
                }
            )+
        }
    };
}
