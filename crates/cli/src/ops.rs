//! What the binary asks of the manager, and what it gets back.
//!
//! [`Operations`] is the seam between the command line / HTTP server / daemon loop and
//! `manager::RunnerManager`: the commands, the server and the daemon are written against it, so they
//! are tested with a fake, and `backend.rs` plugs the real manager in. The output types are the
//! `--json` documents of the command line and the bodies of the HTTP API.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The manager's operations, as the binary uses them. Implementations serialize their own
/// mutating work if they need to; the daemon additionally never runs two passes at once.
#[async_trait]
pub trait Operations: Send + Sync + 'static {
    /// One reconcile pass towards `quantity` runners.
    async fn reconcile(&self, quantity: u32) -> anyhow::Result<ReconcileOutput>;
    /// One reconcile pass, with the manager's hint of when the next one should run: what the
    /// daemon calls. The default gives no hint (the daemon keeps its own schedule).
    async fn reconcile_pass(&self, quantity: u32) -> anyhow::Result<PassOutput> {
        Ok(PassOutput {
            output: self.reconcile(quantity).await?,
            requeue_after: None,
        })
    }
    /// One reconcile pass acting on one pool only (`reconcile --pool NAME`). The default:
    /// the backend has no pools.
    async fn reconcile_pool(&self, pool: &str) -> anyhow::Result<ReconcileOutput> {
        anyhow::bail!("no pool {pool:?}: pools are declared with [[pools]] in the config")
    }
    /// Starts the scale-set listeners (`run` only); each ends, deleting its session, once
    /// `stop` turns true. The default: no scale-set pools.
    fn start_scale_sets(
        &self,
        _stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        Vec::new()
    }
    /// Removes owned runners: idle ones with [`FlushMode::IdleOnly`], busy ones too with
    /// [`FlushMode::IncludingBusy`].
    async fn flush(&self, mode: FlushMode) -> anyhow::Result<FlushOutput>;
    /// [`Self::flush`] of one pool's runners (`flush --pool NAME`).
    async fn flush_pool(&self, _mode: FlushMode, pool: &str) -> anyhow::Result<FlushOutput> {
        anyhow::bail!("no pool {pool:?}: pools are declared with [[pools]] in the config")
    }
    /// Records a `workflow_job` delivery in the job table. The default keeps no table.
    async fn record_job(&self, _event: &JobEvent) -> anyhow::Result<JobRecord> {
        Ok(JobRecord::NotKept)
    }
    /// Applies the `workflow_job` deliveries GitHub logged since `since` that the job table
    /// has not seen (see `deliveries.rs`). `None`: the backend reads no delivery log (no hook
    /// is configured, or it keeps no job table).
    async fn recover_deliveries(
        &self,
        _since: time::OffsetDateTime,
    ) -> anyhow::Result<Option<crate::deliveries::RecoveryReport>> {
        Ok(None)
    }
    /// Builds the baked pools' images: `pool` alone (always built), or every baked pool whose
    /// newest image is not current. The default has no images.
    async fn image_build(&self, _pool: Option<&str>) -> anyhow::Result<ImageBuildOutput> {
        anyhow::bail!("no pool has image_mode = \"baked\"")
    }
    /// The manager's images.
    async fn image_list(&self) -> anyhow::Result<ImageListOutput> {
        Ok(ImageListOutput { images: Vec::new() })
    }
    /// Whether a delivery (by GUID) was recorded already. The default keeps no table.
    async fn seen_delivery(&self, _guid: &str) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// The owned runners, and the dangling and orphan items.
    async fn status(&self) -> anyhow::Result<StatusOutput>;
    /// The newest runner binary for `os`/`arch` (GitHub's downloads list).
    async fn runner_bin_latest(&self, os: &str, arch: &str) -> anyhow::Result<RunnerBinOutput>;
    /// Downloads the newest runner binary into the cache when it changed.
    async fn runner_bin_update(&self) -> anyhow::Result<RunnerBinUpdateOutput>;
    /// Whether the runner binary is in the cache.
    async fn runner_bin_check(&self) -> anyhow::Result<RunnerBinCheckOutput>;
    /// With `[ha]`: the lease, the fence and the role (see `ha.rs`). The default: no HA.
    fn ha(&self) -> Option<std::sync::Arc<crate::ha::Ha>> {
        None
    }
}

/// A `workflow_job` delivery, in the manager's terms.
pub use manager::jobs::JobEvent;

/// What recording a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRecord {
    /// The job is new or moved forward.
    Applied,
    /// This delivery was recorded before (a redelivery, or recovered already).
    Duplicate,
    /// Older than what the table knows (deliveries out of order).
    Stale,
    /// The backend keeps no job table.
    NotKept,
}

/// Which runners `flush` removes: the manager's own type (`IdleOnly`: busy ones finish their
/// job; `IncludingBusy`: every runner the manager owns).
pub use manager::FlushMode;

/// `reconcile --json` and `POST /reconcile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileOutput {
    /// The target number of runners.
    pub quantity: u32,
    /// The seed's return value: `quantity` minus the healthy runners before the pass.
    pub delta: i64,
    /// Runners created in this pass.
    pub created: u32,
    /// Runners removed in this pass (unhealthy, finished, surplus).
    pub removed: u32,
    /// Planned for removal, but GitHub said busy: left running.
    pub skipped_busy: u32,
    /// Creations or removals that failed (the next pass retries).
    pub failed: u32,
    /// Each pool planned (empty for backends without pools).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolPassOutput>,
    /// Queued jobs that no pool matches.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unmatched_jobs: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One pool in a reconcile pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolPassOutput {
    pub name: String,
    /// Runners wanted: `min(max, busy + queued + min_idle)`.
    pub desired: u32,
    pub idle: u32,
    pub busy: u32,
    pub booting: u32,
    /// Queued jobs routed to the pool.
    pub queued: u32,
    pub created: u32,
    pub removed: u32,
    /// No longer configured: idle runners go, busy ones finish first.
    pub draining: bool,
}

/// A reconcile pass as the daemon sees it: the document it hands to requesters, and when to
/// come back (not part of any JSON document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassOutput {
    pub output: ReconcileOutput,
    /// The pass left work for later (JIT pacing held creations back, a step failed): run the
    /// next pass after this long instead of the daemon's own delay. `None`: no hint.
    pub requeue_after: Option<Duration>,
}

/// `flush --json` and `POST /flush`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushOutput {
    /// Runners removed.
    pub removed: u32,
    /// Busy runners left alone.
    pub skipped_busy: u32,
}

/// `status --json` and `GET /runners`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusOutput {
    pub runners: Vec<RunnerStatus>,
    /// The runners by pool (configured pools, then pools that only have runners left).
    #[serde(default)]
    pub pools: Vec<PoolStatus>,
    /// Registrations of ours on GitHub without an instance.
    pub dangling: Vec<String>,
    /// Instances of ours without a GitHub registration.
    pub orphans: Vec<String>,
    /// With `[ha]`: this manager's role and the lease's holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<crate::ha::HaStatus>,
}

/// One owned runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerStatus {
    pub name: String,
    /// The pool it belongs to (`default` for the single-pool form).
    #[serde(default = "default_pool")]
    pub pool: String,
    /// LXD's status, e.g. `Running`, `Stopped`.
    pub instance_status: String,
    /// `online` or `offline`; `None` when GitHub has no registration for it.
    pub github_status: Option<String>,
    /// `None` when GitHub has no registration for it.
    pub busy: Option<bool>,
    /// Since the instance was created.
    pub age_seconds: Option<u64>,
    /// The runner application version, when known.
    pub version: Option<String>,
    /// The baked image it was launched from (alias); `None` for a launch from a base image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// One of the manager's images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOutput {
    pub pool: String,
    pub alias: String,
    pub fingerprint: String,
    /// `canary`, `good` or `bad`.
    pub state: String,
    pub runner_version: String,
    pub runner_sha256: String,
    pub base_image: String,
    pub base_fingerprint: String,
    pub manager_version: String,
    /// Unix seconds.
    pub built_at: i64,
    pub size_bytes: u64,
}

/// `image build --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBuildOutput {
    /// The images built.
    pub built: Vec<ImageOutput>,
    /// Pools whose newest image was current.
    pub current: Vec<String>,
    /// Pools whose build failed, with the error.
    pub failed: Vec<(String, String)>,
}

/// `image list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageListOutput {
    pub images: Vec<ImageOutput>,
}

fn default_pool() -> String {
    manager::pool::PoolName::DEFAULT.to_owned()
}

/// One pool in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    /// `None` for a pool that is no longer configured (draining) or the single-pool form.
    pub min_idle: Option<u32>,
    pub max: Option<u32>,
    pub idle: u32,
    pub busy: u32,
    pub booting: u32,
    /// Runners to be removed (unhealthy, dangling, orphan).
    pub unhealthy: u32,
    /// Its runners' names.
    pub runners: Vec<String>,
    pub configured: bool,
}

/// `runner-bin latest --json`: one item of GitHub's downloads list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerBinOutput {
    pub os: String,
    pub architecture: String,
    pub download_url: String,
    pub filename: String,
    pub sha256_checksum: Option<String>,
}

/// `runner-bin update --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerBinUpdateOutput {
    /// `false` when the cached binary already was the newest.
    pub updated: bool,
    pub binary: RunnerBinOutput,
    /// Where the binary is cached.
    pub path: String,
}

/// `runner-bin check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerBinCheckOutput {
    pub present: bool,
    pub path: String,
}
