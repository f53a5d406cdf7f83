//! `RunnerManager`: keeps a fleet of self-hosted GitHub Actions runners alive on LXD/Incus.
//!
//! - [`model`]: names, ownership, resources, proxies, secrets (validated types).
//! - [`provider`]: the two outside systems as traits ([`provider::InstanceProvider`] for LXD,
//!   [`provider::RunnerRegistry`] for GitHub), in the manager's own types.
//! - [`plan`]: the pure decision function.
//! - [`reconcile`]: the [`RunnerManager`] façade and the reconcile loop, top to bottom.
//! - [`guest`]: every path inside an instance and the shell scripts that run there.
//! - [`install`]: what goes into an instance.
//! - [`runner_bin`]: the verified runner tarball cache.
//! - [`events`]: typed telemetry (logs, Prometheus metrics, the metrics events log).
//! - [`tap`]: a provider wrapper that reports every call (benchmarks time the manager with it).
//! - [`scaleset`]: scale-set mode (a pool driven by a runner scale set's message session).
//! - [`lease`]: active/standby: the lease kept in the cluster, the fence every action checks.
//! - [`adapters`]: `lxd::Client` and `github::Client` behind the two traits.
//! - `sim_provider` (feature `simulation`): SIMULATION — an in-memory provider for scale
//!   benchmarks only; the production build does not have it.

pub mod adapters;
pub mod demand;
pub mod events;
pub mod guest;
pub mod images;
pub mod install;
pub mod jobs;
pub mod lease;
pub mod model;
pub mod placement;
pub mod plan;
pub mod policy;
pub mod pool;
pub mod provider;
pub mod reconcile;
pub mod runner_bin;
pub mod scaleset;
#[cfg(any(test, feature = "simulation"))]
pub mod sim_provider;
pub mod tap;

pub use model::{
    GitHubPath, InstanceType, ModelError, Owner, PathError, ProxySettings, ProxyUrl,
    RegistrationMode, Resources, RunnerName, Secret, Size, SizeError,
};
pub use reconcile::{
    Backends, FlushMode, FlushReport, ManagerConfig, ManagerError, PoolReport, ReconcileReport,
    RunnerInfo, RunnerManager, RunnerView,
};
