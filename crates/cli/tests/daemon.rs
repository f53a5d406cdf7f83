//! The daemon loop on a paused tokio clock: timer, coalescing, no concurrency, backoff and
//! shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::FakeOps;
use runner_manager::daemon::{
    Daemon, DaemonExit, DaemonHandle, DaemonMetrics, DaemonSettings, PassError, TriggerSource,
};
use runner_manager::ops::{FlushMode, Operations};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

fn settings() -> DaemonSettings {
    DaemonSettings {
        quantity: 3,
        interval: Duration::from_secs(300),
        jitter: 0.0,
        backoff_initial: Duration::from_secs(5),
        backoff_max: Duration::from_secs(60),
        pass_timeout: Duration::from_secs(600),
        shutdown_grace: Duration::from_secs(30),
        update_runner_bin_at_start: false,
        coalesce: Duration::ZERO,
    }
}

struct Running {
    handle: DaemonHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<DaemonExit>,
}

impl Running {
    /// Runs `daemon` until [`Running::shut_down`].
    fn spawn(daemon: Daemon) -> Self {
        let handle = daemon.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon.run(async move {
            let _ = stopped.await;
        }));
        Self { handle, stop, task }
    }

    /// Asks the daemon to stop and waits for it.
    async fn shut_down(self) -> DaemonExit {
        self.stop.send(()).unwrap();
        self.task.await.unwrap()
    }
}

fn start(ops: Arc<dyn Operations>, settings: DaemonSettings) -> Running {
    Running::spawn(Daemon::new(ops, settings, DaemonMetrics::default()))
}

/// Sends `n` webhook triggers (`job 0`, `job 1`...), `gap` apart, each accepted.
async fn trigger_webhooks(running: &Running, n: usize, gap: Duration) {
    for n in 0..n {
        assert!(running
            .handle
            .trigger(TriggerSource::Webhook, format!("job {n}")));
        if !gap.is_zero() {
            sleep(gap).await;
        }
    }
}

/// The start time, a fake whose passes take `pass`, and its daemon running on `settings`.
fn started(pass: Duration, settings: DaemonSettings) -> (Instant, Arc<FakeOps>, Running) {
    started_with(FakeOps::with_pass_duration(pass), settings)
}

/// The start time and `ops`'s daemon running on `settings`.
fn started_with(ops: Arc<FakeOps>, settings: DaemonSettings) -> (Instant, Arc<FakeOps>, Running) {
    let running = start(ops.clone(), settings);
    (Instant::now(), ops, running)
}

/// Seconds since `t0` of each pass start.
fn start_times(ops: &FakeOps, t0: Instant) -> Vec<u64> {
    ops.starts
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.duration_since(t0).as_secs())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn passes_at_start_then_every_interval() {
    let (t0, ops, running) = started(Duration::from_secs(10), settings());
    sleep(Duration::from_secs(1_000)).await;
    // Start at 0, finish at 10, next at 310, 620, 930.
    assert_eq!(start_times(&ops, t0), [0, 310, 620, 930]);
    assert_eq!(running.shut_down().await, DaemonExit::Idle);
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_bounds() {
    let (t0, ops, running) = started(
        Duration::ZERO,
        DaemonSettings {
            jitter: 0.1,
            ..settings()
        },
    );
    sleep(Duration::from_secs(3_000)).await;
    let times = start_times(&ops, t0);
    assert!(times.len() >= 10, "{times:?}");
    for gap in times.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            (270..=330).contains(&gap),
            "gap {gap} outside 300 ± 10%: {times:?}"
        );
    }
    running.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_pass_coalesce_into_one_more_pass() {
    let (t0, ops, running) = started(Duration::from_secs(10), settings());
    sleep(Duration::from_secs(2)).await;
    trigger_webhooks(&running, 5, Duration::ZERO).await;
    sleep(Duration::from_secs(100)).await;
    // The startup pass (0-10), then exactly one pass for the five triggers (10-20).
    assert_eq!(start_times(&ops, t0), [0, 10]);
    assert_eq!(ops.max_in_flight.load(Ordering::SeqCst), 1);
    // The timer restarts after the triggered pass.
    sleep(Duration::from_secs(300)).await;
    assert_eq!(start_times(&ops, t0), [0, 10, 320]);
    running.shut_down().await;
}

/// A burst of deliveries that starts while no pass runs makes one pass, not one for the first
/// delivery and another for the rest; a pass someone waits for is not delayed.
#[tokio::test(start_paused = true)]
async fn a_burst_of_events_makes_one_pass_after_the_coalescing_delay() {
    let settings = DaemonSettings {
        coalesce: Duration::from_millis(150),
        ..settings()
    };
    let (t0, ops, running) = started(Duration::from_secs(10), settings);
    sleep(Duration::from_secs(20)).await; // after the startup pass
    trigger_webhooks(&running, 30, Duration::from_millis(3)).await;
    sleep(Duration::from_secs(30)).await;
    assert_eq!(start_times(&ops, t0), [0, 20], "one pass for the burst");
    let asked = Instant::now();
    running
        .handle
        .reconcile_now(TriggerSource::Api, "test")
        .await
        .expect("pass succeeds");
    assert_eq!(
        asked.elapsed(),
        Duration::from_secs(10),
        "a waited-for pass starts at once"
    );
    running.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_share_one_pass_and_its_result() {
    let (t0, ops, running) = started(Duration::from_secs(10), settings());
    sleep(Duration::from_secs(20)).await; // after the startup pass
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let handle = running.handle.clone();
            tokio::spawn(async move { handle.reconcile_now(TriggerSource::Api, "test").await })
        })
        .collect();
    for request in requests {
        let output = request.await.unwrap().expect("pass succeeds");
        assert_eq!(output.quantity, 3);
    }
    assert_eq!(start_times(&ops, t0), [0, 20]);
    assert_eq!(ops.max_in_flight.load(Ordering::SeqCst), 1);
    running.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn flush_waits_for_the_running_pass() {
    let (_, ops, running) = started(Duration::from_secs(10), settings());
    sleep(Duration::from_secs(1)).await;
    let t1 = Instant::now();
    let output = running.handle.flush(FlushMode::IdleOnly).await.unwrap();
    // The startup pass ran from 0 to 10: flush started after it.
    assert_eq!(t1.elapsed().as_secs(), 9);
    assert_eq!(output.removed, 2);
    assert_eq!(*ops.flushes.lock().unwrap(), [FlushMode::IdleOnly]);
    running.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_then_recover() {
    let (t0, ops, running) = started_with(FakeOps::failing(5), settings());
    sleep(Duration::from_secs(200)).await;
    // Retries after 5, 10, 20, 40, then capped at 60; then the regular interval.
    assert_eq!(start_times(&ops, t0), [0, 5, 15, 35, 75, 135]);
    let state = running.handle.state();
    assert_eq!(state.consecutive_failures, 0);
    assert!(state.last_success_unix.is_some());
    sleep(Duration::from_secs(300)).await;
    assert_eq!(start_times(&ops, t0), [0, 5, 15, 35, 75, 135, 435]);
    running.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_partial_pass_is_retried_with_backoff_not_after_an_interval() {
    let (t0, ops, running) = started_with(FakeOps::partial(2), settings());
    sleep(Duration::from_secs(100)).await;
    // Two partial passes retried after 5 and 10 s; then the regular interval.
    assert_eq!(start_times(&ops, t0), [0, 5, 15]);
    sleep(Duration::from_secs(300)).await;
    assert_eq!(start_times(&ops, t0), [0, 5, 15, 315]);
    running.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn requests_during_backoff_wait_for_the_retry() {
    let (t0, ops, running) = started_with(FakeOps::failing(2), settings());
    sleep(Duration::from_secs(1)).await; // first pass failed at 0, retry due at 5
    assert_eq!(running.handle.state().consecutive_failures, 1);
    assert!(running
        .handle
        .state()
        .last_error
        .unwrap()
        .contains("connection refused"));
    let result = running
        .handle
        .reconcile_now(TriggerSource::Api, "test")
        .await;
    assert!(
        matches!(result, Err(PassError::Failed(ref m)) if m.contains("connection refused")),
        "{result:?}"
    );
    assert_eq!(t0.elapsed().as_secs(), 5);
    assert_eq!(start_times(&ops, t0), [0, 5]);
    running.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_in_flight_pass_finish() {
    let (_, ops, running) = started(Duration::from_secs(20), settings());
    sleep(Duration::from_secs(5)).await;
    let handle = running.handle.clone();
    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.reconcile_now(TriggerSource::Api, "late").await })
    };
    sleep(Duration::from_millis(1)).await;
    let t1 = Instant::now();
    assert_eq!(running.shut_down().await, DaemonExit::PassFinished);
    assert_eq!(
        t1.elapsed().as_secs(),
        14,
        "waited for the pass (5..20 s), not longer"
    );
    assert_eq!(ops.finished.load(Ordering::SeqCst), 1);
    assert_eq!(ops.passes(), 1, "no new pass after shutdown");
    assert_eq!(waiter.await.unwrap(), Err(PassError::ShuttingDown));
    // New work is refused.
    assert!(!handle.trigger(TriggerSource::Webhook, "after"));
    assert!(handle.flush(FlushMode::IncludingBusy).await.is_err());
    assert!(handle.state().shutting_down);
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_a_pass_after_the_grace_period() {
    let (_, ops, running) = started(Duration::from_secs(500), settings());
    sleep(Duration::from_secs(5)).await;
    let t1 = Instant::now();
    assert_eq!(running.shut_down().await, DaemonExit::PassAbandoned);
    assert_eq!(t1.elapsed().as_secs(), 30);
    assert_eq!(ops.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hung_pass_times_out_and_is_retried() {
    let (t0, ops, running) = started(
        Duration::from_secs(1_000),
        DaemonSettings {
            pass_timeout: Duration::from_secs(100),
            ..settings()
        },
    );
    sleep(Duration::from_secs(110)).await;
    assert_eq!(start_times(&ops, t0), [0, 105]);
    assert!(running
        .handle
        .state()
        .last_error
        .unwrap()
        .contains("timed out"));
    running.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn updates_the_runner_binary_at_start_and_survives_its_failure() {
    let updating = DaemonSettings {
        update_runner_bin_at_start: true,
        ..settings()
    };
    let ops = FakeOps::new();
    let running = start(ops.clone(), updating.clone());
    sleep(Duration::from_secs(1)).await;
    assert_eq!(ops.bin_updates.load(Ordering::SeqCst), 1);
    assert_eq!(ops.passes(), 1);
    running.shut_down().await;

    let ops = FakeOps::new();
    *ops.fail_everything.lock().unwrap() = true;
    let running = start(ops.clone(), updating.clone());
    sleep(Duration::from_secs(1)).await;
    assert_eq!(ops.passes(), 1, "the loop runs although the update failed");
    running.shut_down().await;
}

/// The fake's operations with a tweak: a flush that blocks first (its pass lock held), or
/// passes that each take the next scripted requeue hint (none once the script is out).
struct Tweaked {
    fake: Arc<FakeOps>,
    flush_delay: Option<Duration>,
    hints: std::sync::Mutex<std::collections::VecDeque<Option<Duration>>>,
}

impl Tweaked {
    /// Flushes that first sleep for `delay`.
    fn slow_flush(fake: Arc<FakeOps>, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            fake,
            flush_delay: Some(delay),
            hints: Default::default(),
        })
    }

    /// Passes that hand back `hints`, one each.
    fn hinted(fake: Arc<FakeOps>, hints: impl IntoIterator<Item = Option<Duration>>) -> Arc<Self> {
        Arc::new(Self {
            fake,
            flush_delay: None,
            hints: std::sync::Mutex::new(hints.into_iter().collect()),
        })
    }
}

#[async_trait::async_trait]
impl Operations for Tweaked {
    async fn reconcile(
        &self,
        quantity: u32,
    ) -> anyhow::Result<runner_manager::ops::ReconcileOutput> {
        self.fake.reconcile(quantity).await
    }
    async fn reconcile_pass(
        &self,
        quantity: u32,
    ) -> anyhow::Result<runner_manager::ops::PassOutput> {
        let output = self.fake.reconcile(quantity).await?;
        let requeue_after = self.hints.lock().unwrap().pop_front().flatten();
        Ok(runner_manager::ops::PassOutput {
            output,
            requeue_after,
        })
    }
    async fn flush(&self, mode: FlushMode) -> anyhow::Result<runner_manager::ops::FlushOutput> {
        if let Some(delay) = self.flush_delay {
            sleep(delay).await;
        }
        self.fake.flush(mode).await
    }
    async fn status(&self) -> anyhow::Result<runner_manager::ops::StatusOutput> {
        self.fake.status().await
    }
    async fn runner_bin_latest(
        &self,
        os: &str,
        arch: &str,
    ) -> anyhow::Result<runner_manager::ops::RunnerBinOutput> {
        self.fake.runner_bin_latest(os, arch).await
    }
    async fn runner_bin_update(
        &self,
    ) -> anyhow::Result<runner_manager::ops::RunnerBinUpdateOutput> {
        self.fake.runner_bin_update().await
    }
    async fn runner_bin_check(&self) -> anyhow::Result<runner_manager::ops::RunnerBinCheckOutput> {
        self.fake.runner_bin_check().await
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_for_a_flush_to_release_the_lock() {
    let fake = FakeOps::new();
    let running = start(
        Tweaked::slow_flush(fake.clone(), Duration::from_secs(1_000)),
        settings(),
    );
    let handle = running.handle.clone();
    sleep(Duration::from_secs(1)).await; // startup pass done
    let flushing = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.flush(FlushMode::IncludingBusy).await })
    };
    sleep(Duration::from_secs(1)).await;
    assert!(handle.trigger(TriggerSource::Webhook, "job")); // the pass waits for the flush
    sleep(Duration::from_secs(1)).await;
    let t1 = Instant::now();
    assert_eq!(running.shut_down().await, DaemonExit::Idle);
    assert_eq!(t1.elapsed().as_secs(), 0);
    assert_eq!(fake.passes(), 1, "the triggered pass never started");
    flushing.abort();
}

/// A pass that leaves work for later (JIT pacing, a failed step) is followed by the next one
/// after its hint, well before the interval; never sooner than the 1 s floor nor later than
/// the interval; a request during the wait still coalesces into one prompt pass.
#[tokio::test(start_paused = true)]
async fn a_requeue_hint_brings_the_next_pass_before_the_interval() {
    let t0 = Instant::now();
    let fake = FakeOps::with_pass_duration(Duration::from_secs(2));
    let hints = [
        Some(Duration::from_secs(20)),
        Some(Duration::ZERO),
        Some(Duration::from_secs(40)),
        Some(Duration::from_secs(10_000)),
    ];
    let running = start(Tweaked::hinted(fake.clone(), hints), settings());
    // 0-2, hint 20 s → 22-24, hint 0 → the floor, 25-27, hint 40 s → due at 67.
    sleep(Duration::from_secs(30)).await;
    assert_eq!(start_times(&fake, t0), [0, 22, 25]);
    // A webhook during that wait is served at once, in one pass.
    trigger_webhooks(&running, 3, Duration::ZERO).await;
    // 30-32, hint 10 000 s → capped at the interval: 332; then no hint, the interval: 634.
    sleep(Duration::from_secs(700)).await;
    assert_eq!(start_times(&fake, t0), [0, 22, 25, 30, 332, 634]);
    assert_eq!(running.handle.state().consecutive_failures, 0);
    running.shut_down().await;
}

/// A partial pass counts as a failure for `/health` and for the gauge alike, and a clean pass
/// resets both.
#[tokio::test(start_paused = true)]
async fn a_partial_pass_is_a_failure_for_health_and_the_gauge_alike() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = DaemonMetrics::register(&mut registry);
    let gauge = |registry: &prometheus_client::registry::Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("runner_manager_reconcile_consecutive_failures "))
            .map(|v| v.parse::<u32>().unwrap())
            .unwrap()
    };
    let ops = FakeOps::partial(2);
    let running = Running::spawn(Daemon::new(ops.clone(), settings(), metrics));
    let handle = running.handle.clone();
    sleep(Duration::from_secs(1)).await; // the first partial pass, at 0
    let state = handle.state();
    assert_eq!((state.consecutive_failures, gauge(&registry)), (1, 1));
    assert!(state.last_success_unix.is_none(), "{state:?}");
    assert!(
        state.last_error.as_deref().unwrap().contains("1 step(s)"),
        "{state:?}"
    );
    sleep(Duration::from_secs(5)).await; // the second, at 5
    assert_eq!(
        (handle.state().consecutive_failures, gauge(&registry)),
        (2, 2)
    );
    sleep(Duration::from_secs(10)).await; // a clean one, at 15
    let state = handle.state();
    assert_eq!((state.consecutive_failures, gauge(&registry)), (0, 0));
    assert!(state.last_success_unix.is_some() && state.last_error.is_none());
    running.shut_down().await;
}
