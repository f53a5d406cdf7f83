//! One listener per scale-set pool, and the worker that runs the pool's passes.
//!
//! The listener: the local session lock (one process per unit and state directory) → the set
//! created or adopted by name → a session (409: standby, asking again after a
//! bounded backoff) → the long poll with `X-ScaleSetMaxCapacity = max`. Each message is
//! acknowledged before it is handled (at-most-once handling; the statistics make it
//! level-triggered), then [`ScalerState::apply`] decides: `JobAvailable` acquired while there is
//! room, runners marked busy, the runners of completed jobs removed (RemoveRunner first: a
//! runner still running a job is left alone), and the desired count handed to the worker. An
//! empty poll re-sizes from the last statistics. An evicted session or a set deleted on the
//! service is re-created; broker errors (5xx, an empty 200) are retried with a backoff. On a
//! clean shutdown the session is deleted.
//!
//! The worker runs the pool's pass (`reconcile_demand(Some(pool))`: the unit's pass lock, so it
//! never overlaps the slow backstop or any other pass) whenever the count changes or a runner
//! goes, while this manager holds the session.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::events::{ScaleSetJobCompleted, ScaleSetJobStarted, ScaleSetScaled, SessionChanged};
use super::scaler::{Limits, ScalerState};
use super::{ApiError, ApiErrorKind, Removed, ScaleSetApi, ScaleSetPool, ScaleSetSettings};
use super::{Completed, JobRef, SessionState};
use crate::pool::PoolName;
use crate::provider::Chain;
use crate::RunnerManager;

/// What a listener needs besides the API and the manager.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub timings: ScaleSetSettings,
    /// Holds the session lock and this host's last session id.
    pub state_dir: PathBuf,
}

/// A pool's listener.
pub struct Listener<A: ScaleSetApi> {
    api: Arc<A>,
    manager: Arc<RunnerManager>,
    pool: ScaleSetPool,
    settings: ListenerSettings,
}

/// Why a session ended.
enum SessionEnd {
    /// Shut down: the session was deleted.
    Stopped,
    /// Re-create the session.
    Lost,
    /// Re-create or adopt the set, then a session.
    SetGone,
}

/// A doubling wait between `min` and `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max).max(self.min);
        wait
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Waits `d`; `false` when asked to stop meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    let stopped = tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !*stop.borrow()
}

/// The session lock: held while this process may hold the pool's session, so that two processes
/// of one unit on one state directory never both ask for it (the kernel releases the lock of a
/// dead process; the service frees a dead process's session once it is not polled).
struct SessionFile {
    _file: File,
}

impl SessionFile {
    fn path(dir: &std::path::Path, app: &str, unit: u32, pool: &PoolName) -> PathBuf {
        dir.join(format!("scaleset-{app}-{unit}-{pool}.session"))
    }

    /// `None` while another process holds it.
    fn try_take(path: &std::path::Path) -> std::io::Result<Option<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl<A: ScaleSetApi + 'static> Listener<A> {
    pub fn new(
        api: Arc<A>,
        manager: Arc<RunnerManager>,
        pool: ScaleSetPool,
        settings: ListenerSettings,
    ) -> Self {
        Self {
            api,
            manager,
            pool,
            settings,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            min_idle: self.pool.min_idle,
            max: self.pool.max,
        }
    }

    /// The session's owner: `<host>/<app>-<unit>`.
    pub fn owner(&self) -> String {
        let owner = self.manager.owner();
        format!(
            "{}/{}-{}",
            self.settings.timings.owner_host,
            owner.app_name(),
            owner.unit()
        )
    }

    fn set_state(&self, state: SessionState, desired: Option<usize>) {
        let hub = self.manager.scale_set_hub();
        if hub.state(&self.pool.pool) == state && desired.is_none() {
            return;
        }
        hub.set_state(&self.pool.pool, state, desired);
        SessionChanged {
            pool: self.pool.pool.to_string(),
            state,
            scale_set_id: hub.scale_set_id(&self.pool.pool),
            owner: self.owner(),
        }
        .emit(self.manager.telemetry());
    }

    /// Runs until `stop`; the worker runs beside it.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let worker = tokio::spawn(run_worker(
            Arc::clone(&self.manager),
            self.pool.pool.clone(),
            self.settings.timings.error_backoff_min,
            stop.clone(),
        ));
        let timings = self.settings.timings.clone();
        let mut standby = Backoff::new(timings.standby_min, timings.standby_max);
        let mut failing = Backoff::new(timings.error_backoff_min, timings.error_backoff_max);
        let owner = self.manager.owner();
        let path = SessionFile::path(
            &self.settings.state_dir,
            owner.app_name(),
            owner.unit(),
            &self.pool.pool,
        );
        // 1. The local lock: another process of this unit on this state directory may hold
        // the session.
        let file = loop {
            match SessionFile::try_take(&path) {
                Ok(Some(file)) => break file,
                Ok(None) => {
                    self.set_state(SessionState::Standby, None);
                    tracing::info!(message = "Another process holds the scale-set session lock; standing by.",
                        pool = %self.pool.pool, lock = %path.display());
                    if !pause(standby.next(), &mut stop).await {
                        return self.finish(worker).await;
                    }
                }
                Err(error) => {
                    self.set_state(SessionState::Failing, None);
                    tracing::warn!(message = "Opening the scale-set session lock failed.",
                        pool = %self.pool.pool, lock = %path.display(), %error);
                    if !pause(failing.next(), &mut stop).await {
                        return self.finish(worker).await;
                    }
                }
            }
        };
        standby.reset();
        failing.reset();
        'set: loop {
            // 2. The set, created or adopted by name.
            let set = match self.api.ensure_scale_set(&self.pool).await {
                Ok(set) => set,
                Err(error) => {
                    self.failed("ensuring the scale set", &error);
                    if !pause(failing.next(), &mut stop).await {
                        break 'set;
                    }
                    continue 'set;
                }
            };
            self.manager
                .scale_set_hub()
                .set_scale_set_id(&self.pool.pool, Some(set.id));
            // 3. Sessions, until stopped or the set is gone.
            loop {
                let created = self.api.create_session(set.id, &self.owner()).await;
                let (session, session_id, statistics) = match created {
                    Ok(s) => s,
                    Err(error) => match error.kind {
                        ApiErrorKind::SessionConflict => {
                            self.set_state(SessionState::Standby, None);
                            let wait = standby.next();
                            tracing::info!(message = "Another session holds the scale set; standing by.",
                                pool = %self.pool.pool, retry_in_ms = wait.as_millis() as u64);
                            if !pause(wait, &mut stop).await {
                                break 'set;
                            }
                            continue;
                        }
                        ApiErrorKind::ScaleSetGone => {
                            self.failed("creating a session", &error);
                            if !pause(failing.next(), &mut stop).await {
                                break 'set;
                            }
                            continue 'set;
                        }
                        _ => {
                            self.failed("creating a session", &error);
                            if !pause(failing.next(), &mut stop).await {
                                break 'set;
                            }
                            continue;
                        }
                    },
                };
                standby.reset();
                failing.reset();
                tracing::info!(message = "Scale-set session created.", pool = %self.pool.pool,
                    session_id = %session_id);
                let end = self.session(set.id, session, statistics, &mut stop).await;
                match end {
                    SessionEnd::Stopped => break 'set,
                    SessionEnd::Lost => {
                        self.set_state(SessionState::Connecting, None);
                        continue;
                    }
                    SessionEnd::SetGone => {
                        self.set_state(SessionState::Connecting, None);
                        self.manager
                            .scale_set_hub()
                            .set_scale_set_id(&self.pool.pool, None);
                        continue 'set;
                    }
                }
            }
        }
        drop(file);
        self.finish(worker).await
    }

    async fn finish(&self, worker: tokio::task::JoinHandle<()>) {
        self.set_state(SessionState::Stopped, None);
        let _ = worker.await;
    }

    fn failed(&self, what: &str, error: &ApiError) {
        self.set_state(SessionState::Failing, None);
        tracing::warn!(message = "Scale-set call failed.", pool = %self.pool.pool, what,
            error = %Chain(error));
    }

    /// One session: the long poll until it ends.
    async fn session(
        &self,
        set_id: u64,
        mut session: A::Session,
        statistics: super::Statistics,
        stop: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let limits = self.limits();
        let mut scaler = ScalerState::new(statistics);
        let desired = scaler.desired(limits);
        self.manager
            .scale_set_hub()
            .set_desired(&self.pool.pool, desired);
        self.set_state(SessionState::Active, Some(desired));
        self.publish(&scaler, true);
        let timings = &self.settings.timings;
        let mut failing = Backoff::new(timings.error_backoff_min, timings.error_backoff_max);
        let mut last_id = 0i64;
        loop {
            let polled = tokio::select! {
                polled = self.api.get_message(&mut session, last_id, limits.max) => Some(polled),
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(polled) = polled else {
                self.close(&session).await;
                return SessionEnd::Stopped;
            };
            match polled {
                Ok(None) => {
                    failing.reset();
                    // Jobs offered when there was no room are acquired once there is.
                    let pending = scaler.acquirable(limits);
                    if let Some(end) = self
                        .acquire(&mut session, set_id, &mut scaler, &pending)
                        .await
                    {
                        return end;
                    }
                    self.publish(&scaler, false);
                }
                Ok(Some(message)) => {
                    failing.reset();
                    // Ack first: at-most-once handling. A message whose ack failed is not
                    // handled: it comes back (the cursor stays before it).
                    if let Err(error) = self.api.delete_message(&mut session, message.id).await {
                        match self.session_error("acknowledging a message", &error) {
                            Some(end) => return end,
                            None => {
                                if !pause(failing.next(), stop).await {
                                    self.close(&session).await;
                                    return SessionEnd::Stopped;
                                }
                                continue;
                            }
                        }
                    }
                    last_id = message.id;
                    self.manager
                        .telemetry()
                        .metrics
                        .scale_set
                        .messages_total
                        .get_or_create(&vec![("pool", self.pool.pool.to_string())])
                        .inc();
                    let decision = scaler.apply(&message, limits);
                    if let Some(end) = self
                        .acquire(&mut session, set_id, &mut scaler, &decision.acquire)
                        .await
                    {
                        return end;
                    }
                    for started in &decision.started {
                        self.job_started(&started.job, &started.runner_name);
                    }
                    for completed in decision.completed {
                        self.job_completed(completed);
                    }
                    self.publish(&scaler, false);
                }
                Err(error) => match self.session_error("polling for messages", &error) {
                    Some(end) => return end,
                    None => {
                        if !pause(failing.next(), stop).await {
                            self.close(&session).await;
                            return SessionEnd::Stopped;
                        }
                    }
                },
            }
        }
    }

    /// Acquires `ids` (none: no call); `Some` when the session ended.
    async fn acquire(
        &self,
        session: &mut A::Session,
        set_id: u64,
        scaler: &mut ScalerState,
        ids: &[i64],
    ) -> Option<SessionEnd> {
        if ids.is_empty() {
            return None;
        }
        match self.api.acquire_jobs(session, set_id, ids).await {
            Ok(won) => {
                scaler.acquired(ids);
                tracing::info!(message = "Jobs acquired.", pool = %self.pool.pool,
                    asked = ids.len(), won = won.len());
                None
            }
            // Not acquired: they stay pending, asked for again after the next poll.
            Err(error) => self.session_error("acquiring jobs", &error),
        }
    }

    /// What an error in a session means: `None` to go on (after a backoff).
    fn session_error(&self, what: &str, error: &ApiError) -> Option<SessionEnd> {
        tracing::warn!(message = "Scale-set session call failed.", pool = %self.pool.pool, what,
            error = %Chain(error));
        match error.kind {
            ApiErrorKind::SessionGone | ApiErrorKind::SessionConflict => Some(SessionEnd::Lost),
            ApiErrorKind::ScaleSetGone => Some(SessionEnd::SetGone),
            ApiErrorKind::Other => None,
        }
    }

    async fn close(&self, session: &A::Session) {
        // Stop acting first, then give the session back.
        self.set_state(SessionState::Stopped, None);
        match tokio::time::timeout(Duration::from_secs(10), self.api.delete_session(session)).await
        {
            Ok(Ok(())) => {
                tracing::info!(message = "Scale-set session deleted.", pool = %self.pool.pool)
            }
            Ok(Err(error)) => {
                tracing::warn!(message = "Deleting the scale-set session failed.", pool = %self.pool.pool,
                error = %Chain(&error))
            }
            Err(_) => {
                tracing::warn!(message = "Deleting the scale-set session timed out.", pool = %self.pool.pool)
            }
        }
    }

    /// Records the desired count; wakes the worker when it changed.
    fn publish(&self, scaler: &ScalerState, force: bool) {
        let desired = scaler.desired(self.limits());
        let hub = self.manager.scale_set_hub();
        let changed = hub.set_desired(&self.pool.pool, desired) || force;
        ScaleSetScaled {
            pool: self.pool.pool.to_string(),
            statistics: scaler.statistics,
            desired,
            changed,
        }
        .emit(self.manager.telemetry());
        if changed {
            hub.wake(&self.pool.pool);
        }
    }

    fn job_started(&self, job: &JobRef, runner: &str) {
        let between = |a: Option<time::OffsetDateTime>, b: Option<time::OffsetDateTime>| {
            let (a, b) = (a?, b?);
            Duration::try_from(b - a).ok()
        };
        ScaleSetJobStarted {
            pool: self.pool.pool.to_string(),
            job_id: job.job_id.clone(),
            runner: runner.to_owned(),
            queue_time: between(job.queue_time, job.runner_assign_time),
            startup_time: between(job.scale_set_assign_time, job.runner_assign_time),
        }
        .emit(self.manager.telemetry());
    }

    /// Telemetry, then the runner's removal in the background: RemoveRunner (a runner still
    /// running a job is left alone), then its instance; then the worker is woken.
    fn job_completed(&self, completed: Completed) {
        ScaleSetJobCompleted {
            pool: self.pool.pool.to_string(),
            job_id: completed.job.job_id.clone(),
            runner: completed.runner.as_ref().map(|(_, n)| n.clone()),
            result: completed.result.clone(),
        }
        .emit(self.manager.telemetry());
        let Some((runner_id, name)) = completed.runner else {
            return;
        };
        let Some(name) = self.manager.owner().parse_name(&name) else {
            return;
        };
        let api = Arc::clone(&self.api);
        let manager = Arc::clone(&self.manager);
        let pool = self.pool.pool.clone();
        tokio::spawn(async move {
            match api.remove_runner(runner_id).await {
                Ok(Removed::Removed) => {}
                Ok(Removed::JobStillRunning) => {
                    tracing::info!(message = "Runner still runs a job after its completion; left alone.",
                        pool = %pool, runner = %name);
                    return;
                }
                Err(error) => {
                    // The backstop finds it: a finished runner is removed by the next pass.
                    tracing::warn!(message = "Removing a finished runner failed.", pool = %pool,
                        runner = %name, error = %Chain(&error));
                    manager.scale_set_hub().wake(&pool);
                    return;
                }
            }
            match manager.provider().delete(name.as_str()).await {
                Ok(()) => {
                    tracing::info!(message = "Finished runner removed.", pool = %pool, runner = %name)
                }
                Err(error) => {
                    tracing::warn!(message = "Deleting a finished runner's instance failed.",
                    pool = %pool, runner = %name, error = %Chain(&error))
                }
            }
            manager.scale_set_hub().wake(&pool);
        });
    }
}

/// Runs the pool's passes while this manager holds its session: when woken (the desired
/// count changed, a runner went), and again after a pass's requeue hint.
pub async fn run_worker(
    manager: Arc<RunnerManager>,
    pool: PoolName,
    retry: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let Some(waker) = manager.scale_set_hub().waker(&pool) else {
        return;
    };
    let mut requeue: Option<Duration> = None;
    let mut failures = 0u32;
    loop {
        let again = async {
            match requeue {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = waker.notified() => {}
            () = again => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Gather the rest of a burst into one pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if manager.scale_set_hub().desired(&pool).is_none() {
            requeue = None;
            continue;
        }
        match manager.reconcile_demand(Some(&pool)).await {
            Ok(report) => {
                failures = 0;
                requeue = report.requeue_after;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let wait = retry
                    .saturating_mul(2u32.saturating_pow(failures.min(6)))
                    .min(Duration::from_secs(60));
                tracing::warn!(message = "Scale-set pass failed.", pool = %pool, error = %Chain(&error),
                    retry_in_ms = wait.as_millis() as u64);
                requeue = Some(wait);
            }
        }
    }
}
