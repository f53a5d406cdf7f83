//! Thin adapters from the wire crates to the manager's traits: [`LxdProvider`] wraps
//! `lxd::Client`, [`GitHubRegistry`] wraps `github::Client`. Conversions are written by hand; no
//! wire type crosses into the core.

mod github;
mod lxd;
mod lxd_lease;
mod scaleset;

pub use self::github::GitHubRegistry;
pub use self::lxd::{LxdProvider, RUNNER_POOL};
pub use self::lxd_lease::{lease_profile, LxdLeaseStore};
pub use self::scaleset::ScaleSetAdapter;

use std::sync::Arc;

use crate::events::Metrics;
use crate::reconcile::Backends;

impl Backends {
    /// The real backends: Incus/LXD and GitHub (or the simulator). `group` is the org runner group
    /// for JIT registration (`None`: `default`).
    pub fn real(
        github: ::github::Client,
        group: Option<String>,
        lxd: ::lxd::Client,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            provider: Arc::new(LxdProvider::new(lxd)),
            registry: Arc::new(GitHubRegistry::new(github, group, Some(metrics.clone()))),
            metrics,
        }
    }
}
