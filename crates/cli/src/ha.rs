//! The daemon side of `[ha]`: active/standby managers of one app and unit on several hosts.
//!
//! - [`Ha`] holds the [`Fence`] (the current term, checked by every mutating call: the
//!   provider and the registry are wrapped by `manager::lease`'s fenced backends), the lease
//!   store (a profile in the LXD/Incus cluster, `rm-lease-<app>-<unit>`), and the
//!   `runner_manager_ha_*` metrics. `run` starts the [`Keeper`], which renews or watches the
//!   lease; other commands never hold it.
//! - [`HaOps`] wraps the [`Operations`]: a pass, a flush or an image build is refused unless
//!   this manager is active (one-shot commands are never active: with `[ha]` only the active
//!   daemon acts); `status` carries the role and the holder.
//! - The daemon's pass loop waits while standby, and drops an in-flight pass when the term ends
//!   (`daemon.rs`); `/health` and `/metrics` are served either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use manager::events::HaMetrics;
use manager::lease::{
    Fence, FencedProvider, FencedRegistry, Keeper, LeaseStore, LeaseTiming, LeaseView,
};
use manager::provider::{InstanceProvider, RunnerRegistry};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::config::HaConfig;
use crate::ops::{
    FlushMode, FlushOutput, ImageBuildOutput, ImageListOutput, JobEvent, JobRecord, Operations,
    PassOutput, ReconcileOutput, RunnerBinCheckOutput, RunnerBinOutput, RunnerBinUpdateOutput,
    StatusOutput,
};

/// The role as `status`, `GET /runners` and `/health` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    /// `active` or `standby`.
    pub role: String,
    /// This manager.
    pub manager_id: String,
    /// The lease's holder as last read; `None` when nobody holds it yet.
    pub holder: Option<String>,
    /// The holder's tenure.
    pub generation: Option<u64>,
    /// Where the lease lives.
    pub lease: String,
}

/// Why a mutating operation was refused.
#[derive(Debug, thiserror::Error)]
#[error("standby: {manager_id} does not hold the lease ({holder}); only the active manager acts")]
pub struct NotActive {
    pub manager_id: String,
    pub holder: String,
}

/// The HA parts of one manager process.
pub struct Ha {
    fence: Arc<Fence>,
    store: Arc<dyn LeaseStore>,
    timing: LeaseTiming,
    metrics: Arc<HaMetrics>,
    keeper_started: AtomicBool,
}

impl Ha {
    /// The metrics to hand to [`Ha::new`].
    pub fn metrics(registry: &mut Registry) -> Arc<HaMetrics> {
        HaMetrics::register(registry)
    }

    /// `[ha]` on LXD/Incus: the lease in the profile `rm-lease-<app>-<unit>` of `lxd`'s server.
    pub fn on_lxd(
        config: &crate::config::Config,
        lxd: &lxd::Client,
        metrics: Arc<HaMetrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let owner = manager::Owner::new(&config.app_name, config.unit)
            .map_err(|e| anyhow::anyhow!("[ha]: {e}"))?;
        // The longest bound of a lease call (a claim's); the keeper bounds each call tighter.
        let store = manager::adapters::LxdLeaseStore::new(
            lxd.clone(),
            &owner,
            config
                .ha
                .timing
                .settle
                .max(config.ha.timing.request_timeout),
        );
        Ok(Self::new(&config.ha, Arc::new(store), metrics))
    }

    /// The fence starts standby; `manager_id` `None` makes one up.
    pub fn new(
        config: &HaConfig,
        store: Arc<dyn LeaseStore>,
        metrics: Arc<HaMetrics>,
    ) -> Arc<Self> {
        let manager_id = config
            .manager_id
            .clone()
            .unwrap_or_else(manager::lease::new_manager_id);
        let fence = Fence::new(manager_id, Some(Arc::clone(&metrics)));
        Arc::new(Self {
            fence,
            store,
            timing: config.timing,
            metrics,
            keeper_started: AtomicBool::new(false),
        })
    }

    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// `provider` with every mutating call checked against the lease.
    pub fn provider(&self, provider: Arc<dyn InstanceProvider>) -> Arc<dyn InstanceProvider> {
        Arc::new(FencedProvider::new(provider, Arc::clone(&self.fence)))
    }

    /// `registry` with every registration change checked against the lease.
    pub fn registry(&self, registry: Arc<dyn RunnerRegistry>) -> Arc<dyn RunnerRegistry> {
        Arc::new(FencedRegistry::new(registry, Arc::clone(&self.fence)))
    }

    /// Starts keeping the lease (`run` only) until `stop`; on stop the tenure ends at once.
    pub fn spawn_keeper(
        &self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        self.keeper_started.store(true, Ordering::SeqCst);
        tracing::info!(message = "Keeping the HA lease.", manager_id = %self.fence.manager_id(),
            store = %self.store.describe(), lease = ?self.timing.lease, renew = ?self.timing.renew);
        let keeper = Keeper::new(
            Arc::clone(&self.store),
            self.timing,
            Arc::clone(&self.fence),
            Some(Arc::clone(&self.metrics)),
        );
        tokio::spawn(keeper.run(stop))
    }

    /// The role now.
    pub fn status(&self) -> HaStatus {
        view_status(&self.fence.view(), &self.store.describe())
    }

    /// The role, reading the lease once when no keeper runs (one-shot commands).
    async fn current_status(&self) -> HaStatus {
        if self.keeper_started.load(Ordering::SeqCst) {
            return self.status();
        }
        let mut status = self.status();
        match tokio::time::timeout(self.timing.request_timeout, self.store.read()).await {
            Ok(Ok(Some(stored))) => {
                status.holder = stored.record.as_ref().map(|r| r.holder.clone());
                status.generation = stored.record.as_ref().map(|r| r.generation);
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::warn!(message = "Reading the HA lease failed.", error = %manager::provider::Chain(&error));
            }
            Err(_) => tracing::warn!(message = "Reading the HA lease timed out."),
        }
        status
    }

    fn require_active(&self) -> Result<(), NotActive> {
        if self.fence.is_active() {
            return Ok(());
        }
        let view = self.fence.view();
        Err(NotActive {
            manager_id: view.manager_id,
            holder: match (view.holder, view.generation) {
                (Some(h), Some(g)) => format!("held by {h}, generation {g}"),
                (Some(h), None) => format!("held by {h}"),
                _ => "no holder seen".to_owned(),
            },
        })
    }
}

fn view_status(view: &LeaseView, store: &str) -> HaStatus {
    HaStatus {
        role: view.role.as_str().to_owned(),
        manager_id: view.manager_id.clone(),
        holder: view.holder.clone(),
        generation: view.generation,
        lease: store.to_owned(),
    }
}

/// Whether the manager is active, for the daemon's loop.
#[derive(Clone)]
pub struct RoleGate {
    fence: Arc<Fence>,
    ha: Arc<Ha>,
}

impl RoleGate {
    pub fn new(ha: &Arc<Ha>) -> Self {
        Self {
            fence: Arc::clone(&ha.fence),
            ha: Arc::clone(ha),
        }
    }

    /// For `/health`.
    pub fn status(&self) -> HaStatus {
        self.ha.status()
    }

    /// The current tenure's generation, if active.
    pub fn active_generation(&self) -> Option<u64> {
        self.fence
            .term(std::time::Instant::now())
            .map(|t| t.generation)
    }

    pub async fn activated(&self) {
        self.fence.activated().await;
    }

    pub async fn ended(&self, generation: u64) {
        self.fence.ended(generation).await;
    }

    pub fn describe(&self) -> String {
        let view = self.fence.view();
        match view.holder {
            Some(holder) => format!("standby (holder {holder})"),
            None => "standby (no holder seen yet)".to_owned(),
        }
    }
}

/// [`Operations`] that act only while the lease is held.
pub struct HaOps {
    inner: Arc<dyn Operations>,
    ha: Arc<Ha>,
}

impl HaOps {
    pub fn new(inner: Arc<dyn Operations>, ha: Arc<Ha>) -> Self {
        Self { inner, ha }
    }
}

#[async_trait]
impl Operations for HaOps {
    async fn reconcile(&self, quantity: u32) -> anyhow::Result<ReconcileOutput> {
        self.ha.require_active()?;
        self.inner.reconcile(quantity).await
    }

    async fn reconcile_pass(&self, quantity: u32) -> anyhow::Result<PassOutput> {
        self.ha.require_active()?;
        self.inner.reconcile_pass(quantity).await
    }

    async fn reconcile_pool(&self, pool: &str) -> anyhow::Result<ReconcileOutput> {
        self.ha.require_active()?;
        self.inner.reconcile_pool(pool).await
    }

    fn start_scale_sets(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        // Their creations and removals go through the fenced provider and registry.
        self.inner.start_scale_sets(stop)
    }

    async fn flush(&self, mode: FlushMode) -> anyhow::Result<FlushOutput> {
        self.ha.require_active()?;
        self.inner.flush(mode).await
    }

    async fn flush_pool(&self, mode: FlushMode, pool: &str) -> anyhow::Result<FlushOutput> {
        self.ha.require_active()?;
        self.inner.flush_pool(mode, pool).await
    }

    async fn record_job(&self, event: &JobEvent) -> anyhow::Result<JobRecord> {
        // The job table is local: a standby keeps it, ready for when it takes over.
        self.inner.record_job(event).await
    }

    async fn recover_deliveries(
        &self,
        since: time::OffsetDateTime,
    ) -> anyhow::Result<Option<crate::deliveries::RecoveryReport>> {
        self.inner.recover_deliveries(since).await
    }

    async fn image_build(&self, pool: Option<&str>) -> anyhow::Result<ImageBuildOutput> {
        self.ha.require_active()?;
        self.inner.image_build(pool).await
    }

    async fn image_list(&self) -> anyhow::Result<ImageListOutput> {
        self.inner.image_list().await
    }

    async fn seen_delivery(&self, guid: &str) -> anyhow::Result<bool> {
        self.inner.seen_delivery(guid).await
    }

    async fn status(&self) -> anyhow::Result<StatusOutput> {
        let mut status = self.inner.status().await?;
        status.ha = Some(self.ha.current_status().await);
        Ok(status)
    }

    async fn runner_bin_latest(&self, os: &str, arch: &str) -> anyhow::Result<RunnerBinOutput> {
        self.inner.runner_bin_latest(os, arch).await
    }

    async fn runner_bin_update(&self) -> anyhow::Result<RunnerBinUpdateOutput> {
        // The runner binary cache is local to this host.
        self.inner.runner_bin_update().await
    }

    async fn runner_bin_check(&self) -> anyhow::Result<RunnerBinCheckOutput> {
        self.inner.runner_bin_check().await
    }

    fn ha(&self) -> Option<Arc<Ha>> {
        Some(Arc::clone(&self.ha))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use manager::lease::{LeaseRecord, LeaseStoreError, Stored, Version};

    use super::*;
    use crate::counting_ops::CountingOps;
    use crate::daemon::{Daemon, DaemonMetrics, DaemonSettings, PassError, TriggerSource};

    /// The lease in memory (the LXD store is tested on real daemons, `crates/lxd/tests/lease.rs`
    /// and `e2e_cluster_ha.rs`): here only the daemon's gating is under test.
    #[derive(Default)]
    struct MemStore(Mutex<Option<(LeaseRecord, u64)>>);

    #[async_trait]
    impl LeaseStore for MemStore {
        fn describe(&self) -> String {
            "memory".into()
        }
        async fn read(&self) -> Result<Option<Stored>, LeaseStoreError> {
            let current = self
                .0
                .lock()
                .map_err(|_| LeaseStoreError::Changed("poisoned".into()))?;
            Ok(current.as_ref().map(|(r, v)| Stored {
                record: Some(r.clone()),
                version: Version(v.to_string()),
            }))
        }
        async fn create(&self, record: &LeaseRecord) -> Result<(), LeaseStoreError> {
            let mut current = self
                .0
                .lock()
                .map_err(|_| LeaseStoreError::Changed("poisoned".into()))?;
            if current.is_some() {
                return Err(LeaseStoreError::Changed("exists".into()));
            }
            *current = Some((record.clone(), 1));
            Ok(())
        }
        async fn write(
            &self,
            record: &LeaseRecord,
            expected: &Version,
        ) -> Result<(), LeaseStoreError> {
            let mut current = self
                .0
                .lock()
                .map_err(|_| LeaseStoreError::Changed("poisoned".into()))?;
            match current.as_ref().map(|(_, v)| *v) {
                Some(v) if v.to_string() == expected.0 => {
                    *current = Some((record.clone(), v + 1));
                    Ok(())
                }
                _ => Err(LeaseStoreError::Changed("stale".into())),
            }
        }
    }

    fn config(id: &str) -> HaConfig {
        HaConfig {
            enabled: true,
            timing: LeaseTiming::new(Duration::from_secs(1), Duration::from_millis(250))
                .expect("timing"),
            manager_id: Some(id.into()),
        }
    }

    async fn until(what: &str, within: Duration, f: impl Fn() -> bool) {
        let started = Instant::now();
        while !f() {
            assert!(started.elapsed() < within, "{what} not within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standby_daemon_makes_no_pass_and_takes_over_when_the_holder_stops() {
        let store: Arc<dyn LeaseStore> = Arc::new(MemStore::default());
        let mut registry = Registry::default();
        // The holder: another manager's keeper on the same lease.
        let rival = Ha::new(
            &config("rival"),
            Arc::clone(&store),
            Ha::metrics(&mut registry),
        );
        let (stop_rival, rival_stopped) = tokio::sync::oneshot::channel::<()>();
        let rival_keeper = rival.spawn_keeper(async {
            let _ = rival_stopped.await;
        });
        until("the rival holds the lease", Duration::from_secs(5), || {
            rival.fence().is_active()
        })
        .await;

        // This daemon: standby, no pass, and a caller is told so at once.
        let mut registry = Registry::default();
        let ha = Ha::new(
            &config("me"),
            Arc::clone(&store),
            Ha::metrics(&mut registry),
        );
        let counting = Arc::new(CountingOps::default());
        let ops: Arc<dyn Operations> = Arc::new(HaOps::new(
            Arc::clone(&counting) as Arc<dyn Operations>,
            Arc::clone(&ha),
        ));
        let mut settings = DaemonSettings::new(1, Duration::from_secs(3600));
        settings.update_runner_bin_at_start = false;
        let daemon = Daemon::new(Arc::clone(&ops), settings, DaemonMetrics::default())
            .with_gate(RoleGate::new(&ha));
        let handle = daemon.handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (stop_keeper, keeper_stopped) = tokio::sync::oneshot::channel::<()>();
        let keeper = ha.spawn_keeper(async {
            let _ = keeper_stopped.await;
        });
        let running = tokio::spawn(daemon.run(async {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(counting.passes(), 0, "a standby makes no pass");
        let answer = handle.reconcile_now(TriggerSource::Api, "test").await;
        assert!(matches!(answer, Err(PassError::Standby(_))), "{answer:?}");
        let state = handle.state().ha.expect("the role is shown");
        assert_eq!(
            (state.role.as_str(), state.holder.as_deref()),
            ("standby", Some("rival"))
        );
        assert!(ops.flush(FlushMode::IdleOnly).await.is_err(), "nor a flush");
        assert_eq!(
            ops.status().await.expect("status").ha.map(|h| h.role),
            Some("standby".to_owned())
        );

        // The holder stops: this daemon takes over and its first pass runs at once.
        let _ = stop_rival.send(());
        rival_keeper.await.expect("rival keeper");
        until("the takeover and a pass", Duration::from_secs(3), || {
            counting.passes() >= 1
        })
        .await;
        assert_eq!(handle.state().ha.map(|h| h.role), Some("active".to_owned()));
        assert!(handle
            .reconcile_now(TriggerSource::Api, "test")
            .await
            .is_ok());

        let _ = stop_keeper.send(());
        keeper.await.expect("keeper");
        let _ = stop.send(());
        running.await.expect("daemon");
    }
}
