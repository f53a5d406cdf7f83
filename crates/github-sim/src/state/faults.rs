//! Injected faults: per-endpoint request faults, the busy-lie fault and webhook delivery
//! failures.

use super::*;

/// A fault to inject (admin API `POST /_sim/faults`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// `"METHOD /template"` (as in the request counters), the template alone (any method), or `*`.
    pub endpoint: String,
    /// Answer with this status and a GitHub error body.
    pub status: Option<u16>,
    /// Delay the answer.
    pub latency_ms: Option<u64>,
    /// Close the connection without an answer (done by unwinding the connection task, so it
    /// needs `panic = "unwind"`, the default).
    #[serde(default)]
    pub drop: bool,
    /// `retry-after` header (seconds) on the faulty answer.
    pub retry_after: Option<u64>,
    /// Message of the error body (default: the status's reason phrase).
    pub message: Option<String>,
    /// Apply to the next K matching calls only (default: until cleared).
    pub count: Option<u32>,
    /// Apply to this fraction (0..=1) of matching calls (default: all).
    pub rate: Option<f64>,
}

impl FaultSpec {
    /// A fault answering `status` on `endpoint`.
    pub fn status(endpoint: impl Into<String>, status: u16) -> Self {
        Self {
            endpoint: endpoint.into(),
            status: Some(status),
            ..Self::default()
        }
    }

    /// Limits the fault to the next `count` matching calls.
    pub fn times(mut self, count: u32) -> Self {
        self.count = Some(count);
        self
    }

    fn matches(&self, key: &str) -> bool {
        if self.endpoint == "*" || self.endpoint == key {
            return true;
        }
        key.split_once(' ')
            .is_some_and(|(_, template)| template == self.endpoint)
    }
}

/// Make the next `count` webhook deliveries fail without reaching the receiver (admin API
/// `POST /_sim/faults/webhooks`): as a connection failure (`status` absent), or as if the
/// receiver had answered `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFaultSpec {
    /// How many deliveries (at least 1).
    pub count: u32,
    /// The HTTP status to record instead of a connection failure.
    pub status: Option<u16>,
}

/// What to do to a request hit by a fault.
#[derive(Clone, Debug)]
pub(crate) struct FaultAction {
    pub status: Option<u16>,
    pub latency: Option<Duration>,
    pub drop: bool,
    pub retry_after: Option<u64>,
    pub message: Option<String>,
}

#[derive(Debug)]
pub(super) struct Fault {
    id: u64,
    spec: FaultSpec,
}

/// The "busy flag lies" fault (admin API `POST /_sim/faults/busy-lie`): for a runner holding a
/// job, the REST list and get report `busy: false`, and `DELETE` deregisters it (204) instead of
/// answering 422. A job the runner had picked up is killed (see [`JobView::killed_by_deletion`]);
/// one it had not picked up yet goes back to the queue, as when an idle runner is deleted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusyLieSpec {
    /// The fraction (0..=1) of jobs the lie covers, decided once per job (so the list, the get
    /// and the `DELETE` agree about a runner). Default: every job.
    pub rate: Option<f64>,
    /// Disarm after this many busy runners were deleted through the lie (default: until
    /// cleared).
    pub count: Option<u32>,
    /// Seed of the per-job draw (default: random), for repeatable runs.
    pub seed: Option<u64>,
}

impl BusyLieSpec {
    /// The lie about every busy runner, until cleared.
    pub fn all() -> Self {
        Self::default()
    }

    /// The lie about this fraction (0..=1) of jobs.
    pub fn rate(rate: f64) -> Self {
        Self {
            rate: Some(rate),
            ..Self::default()
        }
    }

    /// Whether the lie covers `job_id`.
    fn covers(&self, seed: u64, job_id: u64) -> bool {
        match self.rate {
            None => true,
            Some(rate) if rate >= 1.0 => true,
            Some(rate) if rate <= 0.0 => false,
            Some(rate) => {
                let draw = (splitmix64(seed ^ job_id) >> 11) as f64 / (1u64 << 53) as f64;
                draw < rate
            }
        }
    }
}

/// The busy-lie fault and what it did, as `GET /_sim/faults/busy-lie` shows it. The counters
/// cover the simulator's whole life (they survive disarming), so a harness reads deltas.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BusyLieStatus {
    /// The fault as armed now (`count`: deletions left), `None` when off.
    pub fault: Option<BusyLieSpec>,
    /// Busy runners deregistered by a REST `DELETE` through the lie.
    pub busy_runners_deleted: u64,
    /// Jobs killed that way (picked up and running when their runner was deleted).
    pub jobs_killed_by_deletion: u64,
    /// Their ids, in order.
    pub killed_job_ids: Vec<u64>,
    /// Jobs assigned but not yet picked up when their runner was deleted: queued again.
    pub jobs_requeued_by_deletion: u64,
}

#[derive(Debug)]
pub(super) struct BusyLie {
    spec: BusyLieSpec,
    seed: u64,
}

/// SplitMix64: a well-mixed hash of one word.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl State {
    pub(crate) fn add_fault(&mut self, spec: FaultSpec) -> u64 {
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.faults.push(Fault { id, spec });
        id
    }

    /// Clears every fault, the busy-lie and webhook faults included.
    pub(crate) fn clear_faults(&mut self) {
        self.faults.clear();
        self.busy_lie = None;
        self.webhook_fault = None;
    }

    /// Arms (`Some`) or disarms the busy-lie fault. Its counters are kept.
    pub(crate) fn set_busy_lie(&mut self, spec: Option<BusyLieSpec>) {
        self.busy_lie = spec.map(|spec| BusyLie {
            seed: spec.seed.unwrap_or_else(rand::random),
            spec,
        });
    }

    pub(crate) fn busy_lie_status(&self) -> BusyLieStatus {
        BusyLieStatus {
            fault: self.busy_lie.as_ref().map(|l| l.spec.clone()),
            ..self.busy_lie_counts.clone()
        }
    }

    /// Whether the busy-lie fault hides this runner's job from the REST API.
    pub(crate) fn busy_hidden(&self, runner: &Runner) -> bool {
        match (&self.busy_lie, runner.job) {
            (Some(lie), Some(job_id)) => lie.spec.covers(lie.seed, job_id),
            _ => false,
        }
    }

    /// The REST `DELETE` of a busy runner whose job the busy-lie fault hides: the runner is
    /// deregistered, and the job it was running is killed (one not picked up yet is queued
    /// again). Returns `false` (nothing done) when the runner is idle or not hidden.
    pub(crate) fn delete_busy_runner(&mut self, id: u64) -> bool {
        let Some(runner) = self.runners.get(&id) else {
            return false;
        };
        let Some(job_id) = runner.job.filter(|_| self.busy_hidden(runner)) else {
            return false;
        };
        let name = runner.name.clone();
        let running = self
            .jobs
            .get(&job_id)
            .is_some_and(|j| j.delivered_at.is_some() && j.status != JobStatus::Completed);
        if running {
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.killed_by_deletion = true;
                if !job.output.is_empty() && !job.output.ends_with('\n') {
                    job.output.push('\n');
                }
            }
            self.busy_lie_counts.jobs_killed_by_deletion += 1;
            self.busy_lie_counts.killed_job_ids.push(job_id);
        } else {
            self.busy_lie_counts.jobs_requeued_by_deletion += 1;
        }
        self.busy_lie_counts.busy_runners_deleted += 1;
        let reason = format!(
            "##[error]Killed: the self-hosted runner {name} (id {id}) was deleted through the REST \
             API (DELETE answered 204) while it ran this job, because GitHub reported it idle \
             (github-sim busy-lie fault).\n"
        );
        self.remove_runner_because(id, &reason);
        if let Some(lie) = self.busy_lie.as_mut() {
            if let Some(count) = lie.spec.count.as_mut() {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.busy_lie = None;
                }
            }
        }
        true
    }

    /// Arms (`Some`) or disarms the webhook fault.
    pub(crate) fn set_webhook_fault(&mut self, spec: Option<WebhookFaultSpec>) {
        self.webhook_fault = spec.filter(|s| s.count > 0);
    }

    pub(crate) fn webhook_fault(&self) -> Option<WebhookFaultSpec> {
        self.webhook_fault.clone()
    }

    /// The webhook fault hitting the next attempt, if any (consumes one of its `count`):
    /// `Some(None)` is a connection failure, `Some(Some(status))` an HTTP status.
    pub(crate) fn take_webhook_fault(&mut self) -> Option<Option<u16>> {
        let fault = self.webhook_fault.as_mut()?;
        let status = fault.status;
        fault.count = fault.count.saturating_sub(1);
        if fault.count == 0 {
            self.webhook_fault = None;
        }
        Some(status)
    }

    pub(crate) fn faults(&self) -> Vec<(u64, FaultSpec)> {
        self.faults.iter().map(|f| (f.id, f.spec.clone())).collect()
    }

    /// The fault hitting this request, if any (consumes one of its `count`).
    pub(crate) fn take_fault(&mut self, key: &str) -> Option<FaultAction> {
        let mut rng = rand::rng();
        let index = self.faults.iter().position(|f| {
            f.spec.matches(key)
                && f.spec
                    .rate
                    .is_none_or(|rate| rng.random_bool(rate.clamp(0.0, 1.0)))
        })?;
        let fault = &mut self.faults[index];
        let action = FaultAction {
            status: fault.spec.status,
            latency: fault.spec.latency_ms.map(Duration::from_millis),
            drop: fault.spec.drop,
            retry_after: fault.spec.retry_after,
            message: fault.spec.message.clone(),
        };
        if let Some(count) = fault.spec.count.as_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.faults.remove(index);
            }
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{runner, state};
    use super::super::*;

    #[test]
    fn busy_lie_rate_is_a_stable_per_job_draw() {
        let spec = BusyLieSpec::rate(0.5);
        let hidden: Vec<bool> = (1..=2000).map(|job| spec.covers(42, job)).collect();
        let n = hidden.iter().filter(|h| **h).count();
        assert!((800..=1200).contains(&n), "{n} of 2000 at rate 0.5");
        let again: Vec<bool> = (1..=2000).map(|job| spec.covers(42, job)).collect();
        assert_eq!(hidden, again, "same seed, same decisions");
        let other: Vec<bool> = (1..=2000).map(|job| spec.covers(43, job)).collect();
        assert_ne!(hidden, other, "another seed, other decisions");
        assert!((1..100).all(|job| BusyLieSpec::all().covers(1, job)));
        assert!((1..100).all(|job| BusyLieSpec::rate(1.0).covers(1, job)));
        assert!((1..100).all(|job| !BusyLieSpec::rate(0.0).covers(1, job)));
    }

    #[test]
    fn busy_lie_deletion_kills_a_running_job_only() {
        let mut state = state();
        let a = runner(&mut state, "octo/app", 1, &[], false);
        let (job, _) = state.enqueue(JobSpec::new(&[], "x")).expect("enqueue");
        state.take_assigned_job(a).expect("picked up");
        assert!(!state.delete_busy_runner(a), "no fault, no lie");
        state.set_busy_lie(Some(BusyLieSpec::all()));
        let now = state.clock.now();
        let json = state.runner_json(state.runner(a).expect("runner"), now);
        assert_eq!(json["busy"], false);
        assert!(
            state
                .runner_view(state.runner(a).expect("runner"), now)
                .busy
        );
        assert!(state.delete_busy_runner(a));
        let view = state.job_view(job).expect("job");
        assert!(view.killed_by_deletion);
        assert_eq!(view.conclusion.as_deref(), Some("failure"));
        let b = runner(&mut state, "octo/app", 1, &[], false);
        assert!(
            !state.delete_busy_runner(b),
            "idle runners go the normal way"
        );
        let status = state.busy_lie_status();
        assert_eq!(status.killed_job_ids, [job]);
        assert_eq!(status.fault, Some(BusyLieSpec::all()));
    }

    #[test]
    fn fault_counts_and_matching() {
        let mut state = state();
        state.add_fault(FaultSpec::status("/a/{x}", 500).times(2));
        assert!(state.take_fault("GET /b").is_none());
        assert_eq!(
            state.take_fault("POST /a/{x}").and_then(|f| f.status),
            Some(500)
        );
        assert!(state.take_fault("GET /a/{x}").is_some());
        assert!(state.take_fault("GET /a/{x}").is_none(), "used up");
        assert!(state.faults().is_empty());
    }

    #[test]
    fn webhook_fault_counts_down() {
        let mut state = state();
        state.set_webhook_fault(Some(WebhookFaultSpec {
            count: 2,
            status: None,
        }));
        assert_eq!(state.take_webhook_fault(), Some(None));
        assert_eq!(state.take_webhook_fault(), Some(None));
        assert_eq!(state.take_webhook_fault(), None);
        state.set_webhook_fault(Some(WebhookFaultSpec {
            count: 1,
            status: Some(503),
        }));
        assert_eq!(state.take_webhook_fault(), Some(Some(503)));
        assert!(state.webhook_fault().is_none());
    }
}
