//! The daemon loop of `run`: one reconcile pass at a time, on a timer and on request.
//!
//! - A pass runs at start, then every `interval` (± `jitter`).
//! - [`DaemonHandle::trigger`] (webhooks) and [`DaemonHandle::reconcile_now`] (`POST /reconcile`)
//!   ask for a prompt pass. Requests that arrive before a pass starts are coalesced into it; a
//!   request that arrives during a pass gets exactly one more pass after it. Two passes never run
//!   at once, and `flush` waits for the running pass (the same work lock).
//! - A failed or timed-out pass is logged and retried after a capped exponential backoff; while
//!   backing off, requests wait for the retry instead of hammering a failing GitHub or LXD.
//! - A pass that leaves work for later returns a requeue hint (kube-rs's `Action::requeue`):
//!   JIT pacing held creations back, or a step failed. The next pass then comes after the hint
//!   instead of the daemon's own delay (the interval, or the backoff), never sooner than
//!   [`REQUEUE_FLOOR`] nor later than the interval; requests still coalesce into it.
//! - A partial pass (a step failed) counts as a failed pass, everywhere: `/health`'s
//!   `consecutive_failures` and `last_error`, and the consecutive-failures gauge, agree; only a
//!   pass without a failed step is a success (`last_success_unix`, counts back to 0).
//! - Shutdown stops new work; the in-flight pass may finish within `shutdown_grace`.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::Rng;
use serde::Serialize;
use tokio::sync::{oneshot, Notify};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{error, info, warn, Instrument};

use crate::ops::{FlushMode, FlushOutput, Operations, PassOutput, ReconcileOutput};

/// The soonest a requeue hint brings the next pass.
pub const REQUEUE_FLOOR: Duration = Duration::from_secs(1);

/// Timing of the loop.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// Runners to keep.
    pub quantity: u32,
    /// Time between passes (`server.reconcile_interval_seconds`).
    pub interval: Duration,
    /// Each interval is scaled by a random factor in `1 ± jitter`.
    pub jitter: f64,
    /// First retry delay after a failed pass; doubled per failure.
    pub backoff_initial: Duration,
    /// Cap of the retry delay.
    pub backoff_max: Duration,
    /// A pass that takes longer is abandoned (and counted as failed).
    pub pass_timeout: Duration,
    /// How long shutdown waits for the in-flight pass.
    pub shutdown_grace: Duration,
    /// Update the runner binary before the first pass.
    pub update_runner_bin_at_start: bool,
    /// A pass asked for by an event (a webhook, a recovered delivery, a built image) starts
    /// this long after the first ask, so that a burst of deliveries makes one pass, not one for
    /// the first job and another for the rest. A pass someone waits for (`POST /reconcile`)
    /// starts at once.
    pub coalesce: Duration,
}

impl DaemonSettings {
    /// Production defaults for a given interval and quantity.
    pub fn new(quantity: u32, interval: Duration) -> Self {
        Self {
            quantity,
            interval,
            jitter: 0.1,
            backoff_initial: Duration::from_secs(5),
            backoff_max: interval.min(Duration::from_secs(300)),
            pass_timeout: Duration::from_secs(30 * 60),
            shutdown_grace: Duration::from_secs(120),
            update_runner_bin_at_start: true,
            coalesce: Duration::from_millis(150),
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// When a hinted pass comes: after `hint`, within [`REQUEUE_FLOOR`] and the interval.
    fn requeue(&self, hint: Duration) -> Duration {
        hint.max(REQUEUE_FLOOR).min(self.interval)
    }

    fn jittered_interval(&self) -> Duration {
        if self.jitter <= 0.0 {
            return self.interval;
        }
        let jitter = self.jitter.min(0.9);
        let factor = rand::rng().random_range(1.0 - jitter..=1.0 + jitter);
        self.interval.mul_f64(factor)
    }
}

/// Why a pass was asked for (a bounded set: it is a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerSource {
    Startup,
    Timer,
    Retry,
    /// The previous pass asked to come back sooner (its requeue hint).
    Requeue,
    Webhook,
    Api,
    /// Deliveries recovered from GitHub's webhook delivery log.
    Recovery,
    /// A baked pool's image was built.
    Image,
}

impl TriggerSource {
    pub const ALL: [Self; 8] = [
        Self::Startup,
        Self::Timer,
        Self::Retry,
        Self::Requeue,
        Self::Webhook,
        Self::Api,
        Self::Recovery,
        Self::Image,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Timer => "timer",
            Self::Retry => "retry",
            Self::Requeue => "requeue",
            Self::Webhook => "webhook",
            Self::Api => "api",
            Self::Recovery => "recovery",
            Self::Image => "image",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// Why a requested pass gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("reconcile failed: {0}")]
    Failed(String),
    #[error("reconcile timed out after {0:?}")]
    TimedOut(Duration),
    #[error("runner-manager is shutting down")]
    ShuttingDown,
    /// `[ha]`: this manager does not hold the lease (or lost it during the pass).
    #[error("not acting: {0}")]
    Standby(String),
}

pub type PassResult = Result<ReconcileOutput, PassError>;

/// The loop's state, for `/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DaemonState {
    pub passes: u64,
    pub consecutive_failures: u32,
    pub last_success_unix: Option<u64>,
    pub last_error: Option<String>,
    pub in_flight: bool,
    pub shutting_down: bool,
    /// `[ha]`: the role and the lease's holder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<crate::ha::HaStatus>,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonExit {
    /// No pass was running at shutdown.
    Idle,
    /// The in-flight pass finished within the grace period.
    PassFinished,
    /// The in-flight pass was abandoned after the grace period.
    PassAbandoned,
}

enum Outcome {
    Done(anyhow::Result<PassOutput>),
    TimedOut,
    Abandoned,
    /// `[ha]`: the lease's term ended during the pass, which was dropped.
    Fenced,
}

/// Daemon metrics (the manager's own metrics cover the passes themselves).
#[derive(Clone, Default)]
pub struct DaemonMetrics {
    triggers: Family<SourceLabel, Counter>,
    consecutive_failures: Gauge,
}

impl DaemonMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "runner_manager_reconcile_triggers",
            "Reconcile passes asked for, by source",
            metrics.triggers.clone(),
        );
        for source in TriggerSource::ALL {
            // Creates the sample at 0, so rates work from the first scrape.
            drop(metrics.triggers.get_or_create(&SourceLabel {
                source: source.as_str(),
            }));
        }
        registry.register(
            "runner_manager_reconcile_consecutive_failures",
            "Failed reconcile passes since the last successful one",
            metrics.consecutive_failures.clone(),
        );
        metrics
    }
}

#[derive(Default)]
struct Queue {
    requested: bool,
    sources: Vec<TriggerSource>,
    details: Vec<String>,
    waiters: Vec<oneshot::Sender<PassResult>>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
    state: Mutex<DaemonState>,
    /// Held by a pass and by a flush: they never overlap.
    work: tokio::sync::Mutex<()>,
    ops: Arc<dyn Operations>,
    metrics: DaemonMetrics,
    pass_timeout: Duration,
    /// `[ha]`: passes run only while active.
    gate: std::sync::OnceLock<crate::ha::RoleGate>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind, still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Asks the daemon for work; cheap to clone.
#[derive(Clone)]
pub struct DaemonHandle {
    shared: Arc<Shared>,
}

impl DaemonHandle {
    /// Asks for a prompt pass and returns at once (webhooks).
    pub fn trigger(&self, source: TriggerSource, detail: impl Into<String>) -> bool {
        self.enqueue(source, detail.into(), None)
    }

    /// Asks for a prompt pass and waits for its result (`POST /reconcile`).
    pub async fn reconcile_now(
        &self,
        source: TriggerSource,
        detail: impl Into<String>,
    ) -> PassResult {
        let (tx, rx) = oneshot::channel();
        if !self.enqueue(source, detail.into(), Some(tx)) {
            return Err(PassError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(PassError::ShuttingDown))
    }

    /// Flushes runners once no pass is running (`POST /flush`).
    pub async fn flush(&self, mode: FlushMode) -> anyhow::Result<FlushOutput> {
        if lock(&self.shared.queue).closed {
            anyhow::bail!("runner-manager is shutting down");
        }
        let _work = self.shared.work.lock().await;
        match timeout(self.shared.pass_timeout, self.shared.ops.flush(mode)).await {
            Ok(result) => result,
            Err(_) => anyhow::bail!("flush timed out after {:?}", self.shared.pass_timeout),
        }
    }

    /// The operations behind this daemon (for read-only calls such as `status`).
    pub fn ops(&self) -> &Arc<dyn Operations> {
        &self.shared.ops
    }

    pub fn state(&self) -> DaemonState {
        let mut state = lock(&self.shared.state).clone();
        state.ha = self.shared.gate.get().map(crate::ha::RoleGate::status);
        state
    }

    fn enqueue(
        &self,
        source: TriggerSource,
        detail: String,
        waiter: Option<oneshot::Sender<PassResult>>,
    ) -> bool {
        {
            let mut queue = lock(&self.shared.queue);
            if queue.closed {
                return false;
            }
            queue.requested = true;
            if !queue.sources.contains(&source) {
                queue.sources.push(source);
            }
            if queue.details.len() < 8 {
                queue.details.push(detail);
            }
            queue.waiters.extend(waiter);
        }
        self.shared
            .metrics
            .triggers
            .get_or_create(&SourceLabel {
                source: source.as_str(),
            })
            .inc();
        self.shared.wake.notify_one();
        true
    }
}

/// The loop. Create it with [`Daemon::new`], hand out [`Daemon::handle`], then [`Daemon::run`].
pub struct Daemon {
    settings: DaemonSettings,
    shared: Arc<Shared>,
}

impl Daemon {
    pub fn new(ops: Arc<dyn Operations>, settings: DaemonSettings, metrics: DaemonMetrics) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            state: Mutex::new(DaemonState::default()),
            work: tokio::sync::Mutex::new(()),
            ops,
            metrics,
            pass_timeout: settings.pass_timeout,
            gate: std::sync::OnceLock::new(),
        });
        Self { settings, shared }
    }

    /// `[ha]`: passes run only while `gate` says active; a pass is dropped when its term ends.
    pub fn with_gate(self, gate: crate::ha::RoleGate) -> Self {
        let _ = self.shared.gate.set(gate);
        self
    }

    pub fn handle(&self) -> DaemonHandle {
        DaemonHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> DaemonExit {
        tokio::pin!(shutdown);
        let settings = &self.settings;
        let shared = &self.shared;

        if settings.update_runner_bin_at_start {
            let update = timeout(settings.pass_timeout, shared.ops.runner_bin_update());
            tokio::select! {
                biased;
                () = &mut shutdown => return self.close(DaemonExit::Idle),
                result = update => match result {
                    Ok(Ok(output)) if output.updated => info!(message = "Runner binary updated.", file = %output.binary.filename),
                    Ok(Ok(_)) => info!(message = "Runner binary is up to date."),
                    Ok(Err(err)) => warn!(message = "Runner binary update failed; continuing.", error = %format!("{err:#}")),
                    Err(_) => warn!(message = "Runner binary update timed out; continuing."),
                },
            }
        }

        let mut next_due = Instant::now();
        let mut next_source = TriggerSource::Startup;
        let mut failures: u32 = 0;
        loop {
            if let Some(gate) = shared.gate.get() {
                if gate.active_generation().is_none() {
                    // Standby: no pass. Whoever asks is told at once; the first pass of a
                    // tenure starts as soon as this manager takes over.
                    let activated = tokio::select! {
                        biased;
                        () = &mut shutdown => return self.close(DaemonExit::Idle),
                        () = gate.activated() => true,
                        () = shared.wake.notified() => false,
                    };
                    let waiters = {
                        let mut queue = lock(&shared.queue);
                        queue.requested = false;
                        queue.sources.clear();
                        queue.details.clear();
                        std::mem::take(&mut queue.waiters)
                    };
                    for waiter in waiters {
                        let _ = waiter.send(Err(PassError::Standby(gate.describe())));
                    }
                    if activated {
                        next_due = Instant::now();
                        next_source = TriggerSource::Startup;
                        failures = 0;
                    }
                    continue;
                }
            }
            let backing_off = failures > 0;
            let by_timer = tokio::select! {
                biased;
                () = &mut shutdown => return self.close(DaemonExit::Idle),
                () = sleep_until(next_due) => true,
                () = shared.wake.notified(), if !backing_off => false,
            };
            // An event's pass gathers the rest of its burst first.
            let waited_for = !lock(&shared.queue).waiters.is_empty();
            if !by_timer && !waited_for && !settings.coalesce.is_zero() {
                tokio::select! {
                    biased;
                    () = &mut shutdown => return self.close(DaemonExit::Idle),
                    () = tokio::time::sleep(settings.coalesce) => {}
                }
            }
            let (sources, details, waiters) = {
                let mut queue = lock(&shared.queue);
                let requested = std::mem::take(&mut queue.requested);
                if !by_timer && !requested {
                    continue;
                }
                (
                    std::mem::take(&mut queue.sources),
                    std::mem::take(&mut queue.details),
                    std::mem::take(&mut queue.waiters),
                )
            };
            let mut reasons: Vec<TriggerSource> = Vec::new();
            if by_timer {
                reasons.push(next_source);
                if next_source != TriggerSource::Startup {
                    shared
                        .metrics
                        .triggers
                        .get_or_create(&SourceLabel {
                            source: next_source.as_str(),
                        })
                        .inc();
                }
            }
            reasons.extend(sources);

            let span = tracing::info_span!("reconcile", reasons = ?reasons, details = ?details);
            // A running flush holds the work lock; shutdown must not wait for it.
            let work = tokio::select! {
                biased;
                () = &mut shutdown => {
                    drop(waiters);
                    return self.close(DaemonExit::Idle);
                }
                work = shared.work.lock().instrument(span.clone()) => work,
            };
            lock(&shared.state).in_flight = true;
            let term = shared
                .gate
                .get()
                .and_then(crate::ha::RoleGate::active_generation);
            let fenced = async {
                match (shared.gate.get(), term) {
                    (Some(gate), Some(generation)) => gate.ended(generation).await,
                    _ => std::future::pending().await,
                }
            };
            let pass = async {
                match timeout(
                    settings.pass_timeout,
                    shared.ops.reconcile_pass(settings.quantity),
                )
                .await
                {
                    Ok(result) => Outcome::Done(result),
                    Err(_) => Outcome::TimedOut,
                }
            }
            .instrument(span.clone());
            tokio::pin!(pass);
            let (outcome, exit) = tokio::select! {
                biased;
                outcome = &mut pass => (outcome, None),
                () = fenced => {
                    warn!(message = "The lease's term ended: the in-flight pass is cut short.");
                    (Outcome::Fenced, None)
                }
                () = &mut shutdown => {
                    info!(message = "Shutting down; waiting for the in-flight reconcile.", grace = ?settings.shutdown_grace);
                    lock(&shared.queue).closed = true;
                    match timeout(settings.shutdown_grace, &mut pass).await {
                        Ok(outcome) => (outcome, Some(DaemonExit::PassFinished)),
                        Err(_) => (Outcome::Abandoned, Some(DaemonExit::PassAbandoned)),
                    }
                }
            };
            drop(work);
            let mut hint = None;
            let result: PassResult = match outcome {
                Outcome::Done(Ok(pass)) => {
                    hint = pass.requeue_after;
                    Ok(pass.output)
                }
                // `[ha]`: the term ended between the loop's check and the pass's own.
                Outcome::Done(Err(err)) if err.is::<crate::ha::NotActive>() => {
                    Err(PassError::Standby(format!("{err:#}")))
                }
                Outcome::Done(Err(err)) => Err(PassError::Failed(format!("{err:#}"))),
                Outcome::TimedOut => Err(PassError::TimedOut(settings.pass_timeout)),
                Outcome::Abandoned => Err(PassError::ShuttingDown),
                Outcome::Fenced => Err(PassError::Standby("the lease's term ended".into())),
            };
            // A pass cut short by the end of the term is no failure of this manager's.
            if matches!(result, Err(PassError::Standby(_))) {
                lock(&shared.state).in_flight = false;
            } else {
                failures = self.record(&result, &span);
            }
            let (delay, source) = match (&result, hint) {
                (Ok(output), None) if output.failed == 0 => {
                    (settings.jittered_interval(), TriggerSource::Timer)
                }
                (Ok(output), Some(hint)) if output.failed == 0 => {
                    (settings.requeue(hint), TriggerSource::Requeue)
                }
                // A partial pass (some creations or removals failed) is retried sooner than
                // after a whole interval, a missing runner being a missing runner: after the
                // manager's hint, or with the daemon's own backoff without one.
                (Ok(_), Some(hint)) => (settings.requeue(hint), TriggerSource::Retry),
                (Ok(_) | Err(_), _) => (settings.backoff(failures), TriggerSource::Retry),
            };
            next_due = Instant::now() + delay;
            next_source = source;
            shared.metrics.consecutive_failures.set(i64::from(failures));
            for waiter in waiters {
                // A requester that gave up is fine.
                let _ = waiter.send(result.clone());
            }
            if let Some(exit) = exit {
                return self.close(exit);
            }
        }
    }

    /// Records a pass in the state `/health` shows; returns the consecutive failures, which
    /// the loop's backoff and the gauge use too. A partial pass is a failure (see the module
    /// docs).
    fn record(&self, result: &PassResult, span: &tracing::Span) -> u32 {
        let _entered = span.enter();
        let mut state = lock(&self.shared.state);
        state.passes += 1;
        state.in_flight = false;
        match result {
            Ok(output) => {
                info!(
                    message = "Reconcile finished.",
                    quantity = output.quantity,
                    delta = output.delta,
                    created = output.created,
                    removed = output.removed,
                    failed = output.failed
                );
                if output.failed == 0 {
                    state.consecutive_failures = 0;
                    state.last_error = None;
                    state.last_success_unix = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs());
                } else {
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    state.last_error = Some(format!(
                        "{} step(s) of the pass failed (the runner-manager log names them)",
                        output.failed
                    ));
                }
            }
            Err(err) => {
                error!(message = "Reconcile failed; retrying with backoff.", error = %err);
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                state.last_error = Some(err.to_string());
            }
        }
        state.consecutive_failures
    }

    fn close(&self, exit: DaemonExit) -> DaemonExit {
        let waiters = {
            let mut queue = lock(&self.shared.queue);
            queue.closed = true;
            std::mem::take(&mut queue.waiters)
        };
        for waiter in waiters {
            let _ = waiter.send(Err(PassError::ShuttingDown));
        }
        {
            let mut state = lock(&self.shared.state);
            state.shutting_down = true;
            state.in_flight = false;
        }
        info!(message = "Daemon loop stopped.", exit = ?exit);
        exit
    }
}
