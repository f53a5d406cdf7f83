//! The simulator's state: runners, jobs, tokens, counters, faults and rate-limit buckets.
//!
//! Everything lives in one [`State`] behind a `parking_lot::Mutex`; no method awaits, so the lock
//! is never held across an await point.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::config::{GroupConfig, OwnerConfig, SimConfig, WebhookTarget};
use crate::secret::Secret;
use crate::Scope;

/// Labels every runner gets unless registered with `--no-default-labels`.
pub const DEFAULT_LABELS: [&str; 3] = ["self-hosted", "Linux", "X64"];

/// Output kept per job (bytes); longer output is truncated.
const MAX_OUTPUT: usize = 1 << 20;

/// Maps the simulator's monotonic clock to wall time. Uses tokio time, so a paused test clock
/// moves the simulator's notion of "now" too.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
    start_wall: OffsetDateTime,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            start_wall: OffsetDateTime::now_utc(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::now()
    }

    pub(crate) fn wall(&self, at: Instant) -> OffsetDateTime {
        let offset = at.saturating_duration_since(self.start);
        self.start_wall + offset
    }

    pub(crate) fn epoch_secs(&self, at: Instant) -> i64 {
        self.wall(at).unix_timestamp()
    }
}

/// RFC 3339 in UTC with a `Z` suffix and whole seconds, as GitHub writes timestamps.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A random string over `alphabet`.
pub(crate) fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

pub(crate) const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A runner label as GitHub shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// Label id.
    pub id: u64,
    /// Label name.
    pub name: String,
    /// `read-only` (default labels) or `custom`.
    #[serde(rename = "type")]
    pub kind: LabelKind,
}

/// Kind of a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelKind {
    /// A default label (`self-hosted`, OS, architecture).
    ReadOnly,
    /// A label given at registration or through the labels endpoints.
    Custom,
}

/// A registered runner.
#[derive(Debug)]
pub(crate) struct Runner {
    pub id: u64,
    pub name: String,
    pub scope: Scope,
    pub group_id: u64,
    pub labels: Vec<Label>,
    pub ephemeral: bool,
    pub jit: bool,
    pub version: Option<String>,
    pub credential: Secret,
    pub last_seen: Option<Instant>,
    /// Set by `/_runner/offline`; cleared by the next poll.
    pub stopped: bool,
    pub active_polls: u32,
    pub job: Option<u64>,
    /// The runner's process is frozen (SIGSTOP, as a manager does before deregistering it): a
    /// job assigned to it is not acquired (handed over) until it is thawed; a deletion then
    /// gives the job back to the queue.
    pub frozen: bool,
    pub notify: Arc<Notify>,
    pub registered_at: Instant,
}

/// Job status as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for (or assigned to, but not yet picked up by) a runner.
    Queued,
    /// Picked up by a runner.
    InProgress,
    /// Finished.
    Completed,
}

/// A job to enqueue through the admin API or [`crate::SimHandle::enqueue_job`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// `runs-on` labels; a runner must have all of them (case-insensitive).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Shell script run with `sh`.
    #[serde(default)]
    pub script: String,
    /// Job timeout (default 360 s); `timeout` is accepted too.
    #[serde(default, alias = "timeout")]
    pub timeout_seconds: Option<u64>,
    /// `owner/repo`, `org` or `enterprises/slug`; default: any runner of any scope.
    #[serde(default)]
    pub scope: Option<String>,
    /// Restricts the job to a runner group by name (`runs-on: {group: ...}`).
    #[serde(default)]
    pub runner_group: Option<String>,
    /// Event name (default `push`).
    #[serde(default)]
    pub event_name: Option<String>,
    /// Event payload (default: a small push event).
    #[serde(default)]
    pub event: Option<Value>,
    /// Workflow name (default `CI`).
    #[serde(default)]
    pub workflow: Option<String>,
    /// Job name (default `build`).
    #[serde(default)]
    pub name: Option<String>,
}

impl JobSpec {
    /// A job with these labels and script.
    pub fn new(labels: &[&str], script: impl Into<String>) -> Self {
        Self {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            script: script.into(),
            ..Self::default()
        }
    }
}

#[derive(Debug)]
pub(crate) struct Job {
    pub id: u64,
    pub run_id: u64,
    pub name: String,
    pub workflow: String,
    pub labels: Vec<String>,
    pub script: String,
    pub timeout_seconds: u64,
    pub scope: Option<Scope>,
    pub runner_group: Option<String>,
    pub event_name: String,
    pub event: Value,
    pub head_sha: String,
    pub status: JobStatus,
    pub conclusion: Option<String>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub runner_group_id: Option<u64>,
    pub runner_group_name: Option<String>,
    pub exit_code: Option<i32>,
    pub output: String,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub completed_at: Option<OffsetDateTime>,
    pub delivered_at: Option<Instant>,
    /// Its runner was deregistered by a REST `DELETE` while it ran (the busy-lie fault).
    pub killed_by_deletion: bool,
}

/// A job as the admin API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// Job id.
    pub job_id: u64,
    /// Workflow run id.
    pub run_id: u64,
    /// Job name.
    pub name: String,
    /// `runs-on` labels.
    pub labels: Vec<String>,
    /// Status.
    pub status: JobStatus,
    /// `success`, `failure` or `cancelled` once completed.
    pub conclusion: Option<String>,
    /// Runner that got the job.
    pub runner_name: Option<String>,
    /// Its id.
    pub runner_id: Option<u64>,
    /// Exit code of the script.
    pub exit_code: Option<i32>,
    /// Output of the script (stdout and stderr).
    pub output: String,
    /// Creation time.
    pub created_at: String,
    /// Time the runner picked it up.
    pub started_at: Option<String>,
    /// Completion time.
    pub completed_at: Option<String>,
    /// The job was killed because its runner was deleted through the REST API while it ran
    /// (only possible under the busy-lie fault, `POST /_sim/faults/busy-lie`). It then ended
    /// `failure`, with a `##[error]` line saying so at the end of `output`.
    #[serde(default)]
    pub killed_by_deletion: bool,
}

/// A runner as the admin API shows it (every scope).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunnerView {
    /// Runner id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Scope path (`owner/repo`, `org`, `enterprises/slug`).
    pub scope: String,
    /// Runner group id.
    pub runner_group_id: u64,
    /// `online` or `offline`.
    pub status: String,
    /// Running (or assigned) a job.
    pub busy: bool,
    /// Single-use.
    pub ephemeral: bool,
    /// Registered through JIT.
    pub jit: bool,
    /// Labels.
    pub labels: Vec<Label>,
    /// Version, once the runner has connected.
    pub version: Option<String>,
    /// Last poll.
    pub last_seen: Option<String>,
    /// Id of the job it holds.
    pub job_id: Option<u64>,
    /// Frozen: takes no job until thawed (`POST /_sim/runners/freeze`).
    #[serde(default)]
    pub frozen: bool,
}

/// Per-endpoint request counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// Requests received.
    pub count: u64,
    /// Primary rate-limit points charged.
    pub rate_limit_cost: u64,
    /// `304 Not Modified` answers (free).
    pub not_modified: u64,
}

/// A fault to inject (admin API `POST /_sim/faults`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// `"METHOD /template"` (as in the request counters), the template alone (any method), or `*`.
    pub endpoint: String,
    /// Answer with this status and a GitHub error body.
    #[serde(default)]
    pub status: Option<u16>,
    /// Delay the answer.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Close the connection without an answer (done by unwinding the connection task, so it
    /// needs `panic = "unwind"`, the default).
    #[serde(default)]
    pub drop: bool,
    /// `retry-after` header (seconds) on the faulty answer.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Message of the error body (default: the status's reason phrase).
    #[serde(default)]
    pub message: Option<String>,
    /// Apply to the next K matching calls only (default: until cleared).
    #[serde(default)]
    pub count: Option<u32>,
    /// Apply to this fraction (0..=1) of matching calls (default: all).
    #[serde(default)]
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
struct Fault {
    id: u64,
    spec: FaultSpec,
}

/// The "busy flag lies" fault (admin API `POST /_sim/faults/busy-lie`): for a runner holding a
/// job, the REST list and get report `busy: false`, and `DELETE` deregisters it (204) instead of
/// answering 422. A job the runner had picked up is killed (see [`JobView::killed_by_deletion`]);
/// one it had not picked up yet goes back to the queue, as when an idle runner is deleted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusyLieSpec {
    /// The fraction (0..=1) of jobs the lie covers, decided once per job (so the list, the get
    /// and the `DELETE` agree about a runner). Default: every job.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Disarm after this many busy runners were deleted through the lie (default: until
    /// cleared).
    #[serde(default)]
    pub count: Option<u32>,
    /// Seed of the per-job draw (default: random), for repeatable runs.
    #[serde(default)]
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
struct BusyLie {
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

/// A webhook delivery attempt, as `GET /_sim/webhooks/deliveries` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// `X-GitHub-Delivery`.
    pub delivery_id: String,
    /// `queued`, `in_progress` or `completed`.
    pub action: String,
    /// Job id.
    pub job_id: u64,
    /// Receiver's status, if it answered.
    pub status: Option<u16>,
    /// Transport error, if any.
    pub error: Option<String>,
}

/// A webhook to send (built under the lock, sent by the delivery task).
#[derive(Debug)]
pub(crate) struct WebhookEvent {
    pub target: WebhookTarget,
    pub action: String,
    pub job_id: u64,
    pub payload: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Registration,
    Remove,
}

#[derive(Debug)]
struct IssuedToken {
    kind: TokenKind,
    scope: Scope,
    expires: Instant,
}

/// Every secret the sim has handed out, in issue order, expired or not: what a secret scan
/// searches for. Never pruned (a few dozen bytes per registration).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedSecrets {
    /// Registration tokens (`POST .../registration-token` and [`crate::SimHandle::registration_token`]).
    pub registration_tokens: Vec<String>,
    /// Remove tokens (`POST .../remove-token`).
    pub remove_tokens: Vec<String>,
    /// `encoded_jit_config` values from `generate-jitconfig`.
    pub jit_configs: Vec<String>,
    /// Runner credentials (`simcred_...`), from runner-side registration and JIT configs.
    pub runner_credentials: Vec<String>,
}

#[derive(Debug)]
struct InstallationToken {
    installation_id: u64,
    expires: Instant,
}

#[derive(Debug)]
struct Bucket {
    used: u32,
    window_start: Instant,
}

/// Rate-limit state of one identity, for the `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub used: u32,
    pub reset: i64,
}

/// Why a runner-side registration failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    #[error("Could not find any self-hosted runner group named \"{0}\".")]
    UnknownGroup(String),
    #[error("A runner exists with the same name {0}.")]
    NameExists(String),
}

/// A registration request (runner side or JIT).
#[derive(Debug)]
pub(crate) struct NewRunner {
    pub scope: Scope,
    pub name: String,
    pub group_id: u64,
    pub labels: Vec<Label>,
    pub ephemeral: bool,
    pub jit: bool,
}

/// The whole mutable state.
#[derive(Debug)]
pub(crate) struct State {
    pub config: SimConfig,
    pub clock: Clock,
    pub token: Secret,
    pub rate_limit: u32,
    pub secondary_limit: u32,
    pub webhook: Option<WebhookTarget>,
    /// `Some(None)`: next DELETE of any runner; `Some(Some(name))`: of that runner.
    pub assign_on_delete: Option<Option<String>>,
    next_runner_id: u64,
    next_job_id: u64,
    next_run_id: u64,
    next_label_id: u64,
    next_fault_id: u64,
    runners: BTreeMap<u64, Runner>,
    names: HashMap<(Scope, String), u64>,
    credentials: HashMap<String, u64>,
    label_ids: HashMap<String, u64>,
    tokens: HashMap<String, IssuedToken>,
    installation_tokens: HashMap<String, InstallationToken>,
    /// Every secret handed out so far, for secret scans (`GET /_sim/secrets`).
    issued: IssuedSecrets,
    jobs: BTreeMap<u64, Job>,
    queue: VecDeque<u64>,
    counters: BTreeMap<String, RequestCount>,
    faults: Vec<Fault>,
    busy_lie: Option<BusyLie>,
    busy_lie_counts: BusyLieStatus,
    buckets: HashMap<String, Bucket>,
    secondary: HashMap<String, VecDeque<Instant>>,
    deliveries: Vec<DeliveryRecord>,
    /// Cached list answers: request key → (time, body).
    list_cache: HashMap<String, (Instant, Value)>,
    webhook_tx: mpsc::UnboundedSender<WebhookEvent>,
}

impl State {
    pub(crate) fn new(
        config: SimConfig,
        clock: Clock,
        webhook_tx: mpsc::UnboundedSender<WebhookEvent>,
    ) -> Self {
        let mut state = Self {
            token: config.token.clone(),
            rate_limit: config.rate_limit,
            secondary_limit: config.secondary_limit_per_minute,
            webhook: config.webhook.clone(),
            config,
            clock,
            assign_on_delete: None,
            next_runner_id: 1,
            next_job_id: 1,
            next_run_id: 1,
            next_label_id: 1,
            next_fault_id: 1,
            runners: BTreeMap::new(),
            names: HashMap::new(),
            credentials: HashMap::new(),
            label_ids: HashMap::new(),
            tokens: HashMap::new(),
            installation_tokens: HashMap::new(),
            issued: IssuedSecrets::default(),
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            counters: BTreeMap::new(),
            faults: Vec::new(),
            busy_lie: None,
            busy_lie_counts: BusyLieStatus::default(),
            buckets: HashMap::new(),
            secondary: HashMap::new(),
            deliveries: Vec::new(),
            list_cache: HashMap::new(),
            webhook_tx,
        };
        for name in DEFAULT_LABELS {
            state.label_id(name);
        }
        state
    }

    // ---------------------------------------------------------------- scopes and groups

    fn owner_config(&self, scope: &Scope) -> Option<&OwnerConfig> {
        match scope {
            Scope::Repo { .. } => None,
            Scope::Org(org) => self.config.orgs.iter().find(|o| o.name == *org),
            Scope::Enterprise(e) => self
                .config
                .enterprises
                .iter()
                .find(|o| o.name == *e || o.id.to_string() == *e),
        }
    }

    /// The configured scope `scope` names (an enterprise may be given by id), if any.
    pub(crate) fn resolve_scope(&self, scope: &Scope) -> Option<Scope> {
        match scope {
            Scope::Repo { owner, repo } => {
                let full = format!("{owner}/{repo}");
                self.config.repos.contains(&full).then(|| scope.clone())
            }
            Scope::Org(_) | Scope::Enterprise(_) => self.owner_config(scope).map(|o| match scope {
                Scope::Org(_) => Scope::Org(o.name.clone()),
                _ => Scope::Enterprise(o.name.clone()),
            }),
        }
    }

    /// Runner groups of a scope; a repository has the implicit group 1 `Default`.
    pub(crate) fn groups(&self, scope: &Scope) -> Vec<GroupConfig> {
        match self.owner_config(scope) {
            Some(owner) => owner.groups.clone(),
            None => vec![GroupConfig::default_group()],
        }
    }

    pub(crate) fn group(&self, scope: &Scope, id: u64) -> Option<GroupConfig> {
        self.group_ref(scope, id).cloned()
    }

    /// Like [`State::group`] without cloning (job matching runs it for many runners).
    fn group_ref(&self, scope: &Scope, id: u64) -> Option<&GroupConfig> {
        static REPO_DEFAULT: std::sync::LazyLock<GroupConfig> =
            std::sync::LazyLock::new(GroupConfig::default_group);
        match self.owner_config(scope) {
            Some(owner) => owner.groups.iter().find(|g| g.id == id),
            None => (id == 1).then(|| &*REPO_DEFAULT),
        }
    }

    pub(crate) fn group_by_name(&self, scope: &Scope, name: Option<&str>) -> Option<GroupConfig> {
        let groups = self.groups(scope);
        match name {
            Some(name) if scope.has_groups() => groups
                .into_iter()
                .find(|g| g.name.eq_ignore_ascii_case(name)),
            _ => groups
                .iter()
                .find(|g| g.default)
                .or(groups.first())
                .cloned(),
        }
    }

    /// The App installation covering `account`, if an App is configured.
    pub(crate) fn installation_for(&self, account: &str) -> Option<u64> {
        let app = self.config.app.as_ref()?;
        app.installations
            .iter()
            .find(|i| i.account == account)
            .map(|i| i.id)
    }

    // ---------------------------------------------------------------- labels

    fn label_id(&mut self, name: &str) -> u64 {
        let key = name.to_ascii_lowercase();
        if let Some(id) = self.label_ids.get(&key) {
            return *id;
        }
        let id = self.next_label_id;
        self.next_label_id += 1;
        self.label_ids.insert(key, id);
        id
    }

    /// Builds a label list: the default labels (unless `no_defaults`) then the custom ones,
    /// without case-insensitive duplicates.
    pub(crate) fn make_labels(&mut self, custom: &[String], no_defaults: bool) -> Vec<Label> {
        let mut labels: Vec<Label> = Vec::new();
        if !no_defaults {
            for name in DEFAULT_LABELS {
                let id = self.label_id(name);
                labels.push(Label {
                    id,
                    name: name.to_owned(),
                    kind: LabelKind::ReadOnly,
                });
            }
        }
        for name in custom {
            let name = name.trim();
            if name.is_empty() || labels.iter().any(|l| l.name.eq_ignore_ascii_case(name)) {
                continue;
            }
            let kind = if DEFAULT_LABELS.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                LabelKind::ReadOnly
            } else {
                LabelKind::Custom
            };
            let id = self.label_id(name);
            labels.push(Label {
                id,
                name: name.to_owned(),
                kind,
            });
        }
        labels
    }

    // ---------------------------------------------------------------- tokens

    pub(crate) fn issue_token(
        &mut self,
        kind: TokenKind,
        scope: Scope,
    ) -> (String, OffsetDateTime) {
        let now = self.clock.now();
        self.tokens.retain(|_, t| t.expires > now);
        let token = random_string(UPPER32, 29);
        match kind {
            TokenKind::Registration => self.issued.registration_tokens.push(token.clone()),
            TokenKind::Remove => self.issued.remove_tokens.push(token.clone()),
        }
        let expires = now + self.config.token_lifetime;
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                kind,
                scope,
                expires,
            },
        );
        (token, self.clock.wall(expires))
    }

    /// The scope a valid, unexpired token of `kind` was issued for.
    pub(crate) fn check_token(&self, kind: TokenKind, token: &str) -> Option<Scope> {
        let now = self.clock.now();
        self.tokens
            .get(token)
            .filter(|t| t.kind == kind && t.expires > now)
            .map(|t| t.scope.clone())
    }

    /// Records an `encoded_jit_config` handed out.
    pub(crate) fn record_jit_config(&mut self, encoded: &str) {
        self.issued.jit_configs.push(encoded.to_owned());
    }

    /// Every secret handed out so far.
    pub(crate) fn issued_secrets(&self) -> IssuedSecrets {
        self.issued.clone()
    }

    pub(crate) fn issue_installation_token(
        &mut self,
        installation_id: u64,
        lifetime: Duration,
    ) -> (String, OffsetDateTime) {
        let now = self.clock.now();
        self.installation_tokens.retain(|_, t| t.expires > now);
        let token = format!("ghs_{}", random_string(ALNUM, 36));
        let expires = now + lifetime;
        self.installation_tokens.insert(
            token.clone(),
            InstallationToken {
                installation_id,
                expires,
            },
        );
        (token, self.clock.wall(expires))
    }

    /// The installation of a valid, unexpired `ghs_` token.
    pub(crate) fn check_installation_token(&self, token: &str) -> Option<u64> {
        let now = self.clock.now();
        self.installation_tokens
            .get(token)
            .filter(|t| t.expires > now)
            .map(|t| t.installation_id)
    }

    // ---------------------------------------------------------------- runners

    pub(crate) fn runner_online(&self, runner: &Runner, now: Instant) -> bool {
        if runner.stopped {
            return false;
        }
        if runner.active_polls > 0 {
            return true;
        }
        let silence = self.config.silence_timeout;
        if runner
            .last_seen
            .is_some_and(|seen| now.saturating_duration_since(seen) < silence)
        {
            return true;
        }
        // A runner executing a job does not poll; it stays online until the job's deadline.
        runner
            .job
            .and_then(|id| self.jobs.get(&id))
            .and_then(|job| job.delivered_at.map(|at| (at, job.timeout_seconds)))
            .is_some_and(|(at, timeout)| now < at + Duration::from_secs(timeout) + silence)
    }

    pub(crate) fn runner(&self, id: u64) -> Option<&Runner> {
        self.runners.get(&id)
    }

    pub(crate) fn runner_by_credential(&self, credential: &str) -> Option<&Runner> {
        self.credentials
            .get(credential)
            .and_then(|id| self.runners.get(id))
    }

    pub(crate) fn runner_id_by_name(&self, scope: &Scope, name: &str) -> Option<u64> {
        self.names.get(&(scope.clone(), name.to_owned())).copied()
    }

    /// Runners of one scope, by id.
    pub(crate) fn scope_runners(&self, scope: &Scope) -> impl Iterator<Item = &Runner> {
        let scope = scope.clone();
        self.runners.values().filter(move |r| r.scope == scope)
    }

    /// Registers a runner; `replace` removes a runner of the same name first.
    pub(crate) fn register(
        &mut self,
        new: NewRunner,
        replace: bool,
    ) -> Result<(u64, Secret), RegisterError> {
        if let Some(existing) = self.runner_id_by_name(&new.scope, &new.name) {
            if !replace {
                return Err(RegisterError::NameExists(new.name));
            }
            self.remove_runner(existing);
        }
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        let credential = Secret::new(format!("simcred_{}", random_string(ALNUM, 40)));
        self.issued
            .runner_credentials
            .push(credential.expose().to_owned());
        self.names.insert((new.scope.clone(), new.name.clone()), id);
        self.credentials.insert(credential.expose().to_owned(), id);
        self.runners.insert(
            id,
            Runner {
                id,
                name: new.name,
                scope: new.scope,
                group_id: new.group_id,
                labels: new.labels,
                ephemeral: new.ephemeral || new.jit,
                jit: new.jit,
                version: None,
                credential: credential.clone(),
                last_seen: None,
                stopped: false,
                active_polls: 0,
                job: None,
                frozen: false,
                notify: Arc::new(Notify::new()),
                registered_at: self.clock.now(),
            },
        );
        Ok((id, credential))
    }

    /// Deregisters a runner. A job it was assigned but had not picked up is queued again; a job it
    /// was running fails.
    pub(crate) fn remove_runner(&mut self, id: u64) -> Option<String> {
        self.remove_runner_because(id, "The runner has been removed.")
    }

    /// [`State::remove_runner`], with `reason` appended to the output of a job it was running.
    fn remove_runner_because(&mut self, id: u64, reason: &str) -> Option<String> {
        let runner = self.runners.remove(&id)?;
        self.names
            .remove(&(runner.scope.clone(), runner.name.clone()));
        self.credentials.remove(runner.credential.expose());
        runner.notify.notify_waiters();
        runner.notify.notify_one();
        if let Some(job_id) = runner.job {
            self.release_job(job_id, reason);
            self.try_assign();
        }
        Some(runner.name)
    }

    /// Takes a job back from its runner: requeue if not picked up, else fail it.
    fn release_job(&mut self, job_id: u64, reason: &str) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.status == JobStatus::Completed {
            return;
        }
        if job.delivered_at.is_none() {
            job.runner_id = None;
            job.runner_name = None;
            job.runner_group_id = None;
            job.runner_group_name = None;
            self.queue.push_front(job_id);
        } else {
            let now = self.clock.now();
            job.status = JobStatus::Completed;
            job.conclusion = Some("failure".to_owned());
            job.output.push_str(reason);
            job.completed_at = Some(self.clock.wall(now));
            self.emit(job_id, "completed");
        }
    }

    pub(crate) fn set_custom_labels(&mut self, id: u64, custom: Vec<String>) -> Option<Vec<Label>> {
        let mut read_only: Vec<String> = self
            .runners
            .get(&id)?
            .labels
            .iter()
            .filter(|l| l.kind == LabelKind::ReadOnly)
            .map(|l| l.name.clone())
            .collect();
        let no_defaults = true;
        read_only.extend(custom);
        let labels = self.make_labels(&read_only, no_defaults);
        let runner = self.runners.get_mut(&id)?;
        runner.labels = labels.clone();
        self.assign_to_runner(id);
        Some(labels)
    }

    /// A heartbeat from a polling runner.
    pub(crate) fn heartbeat(&mut self, id: u64) {
        let now = self.clock.now();
        let version = self.config.runner_version.clone();
        if let Some(runner) = self.runners.get_mut(&id) {
            runner.last_seen = Some(now);
            runner.stopped = false;
            runner.version.get_or_insert(version);
        }
    }

    pub(crate) fn poll_started(&mut self, id: u64) -> Option<Arc<Notify>> {
        let runner = self.runners.get_mut(&id)?;
        runner.active_polls += 1;
        Some(runner.notify.clone())
    }

    pub(crate) fn poll_ended(&mut self, id: u64) {
        let now = self.clock.now();
        if let Some(runner) = self.runners.get_mut(&id) {
            runner.active_polls = runner.active_polls.saturating_sub(1);
            runner.last_seen = Some(now);
        }
    }

    pub(crate) fn mark_offline(&mut self, id: u64) {
        if let Some(runner) = self.runners.get_mut(&id) {
            runner.stopped = true;
            runner.last_seen = None;
        }
    }

    pub(crate) fn runner_view(&self, runner: &Runner, now: Instant) -> RunnerView {
        RunnerView {
            id: runner.id,
            name: runner.name.clone(),
            scope: runner.scope.path(),
            runner_group_id: runner.group_id,
            status: if self.runner_online(runner, now) {
                "online"
            } else {
                "offline"
            }
            .to_owned(),
            busy: runner.job.is_some(),
            ephemeral: runner.ephemeral,
            jit: runner.jit,
            labels: runner.labels.clone(),
            version: runner.version.clone(),
            last_seen: runner.last_seen.map(|t| rfc3339(self.clock.wall(t))),
            job_id: runner.job,
            frozen: runner.frozen,
        }
    }

    pub(crate) fn runner_views(&self) -> Vec<RunnerView> {
        let now = self.clock.now();
        self.runners
            .values()
            .map(|r| self.runner_view(r, now))
            .collect()
    }

    /// The REST `runner` object.
    pub(crate) fn runner_json(&self, runner: &Runner, now: Instant) -> Value {
        json!({
            "id": runner.id,
            "runner_group_id": runner.group_id,
            "name": runner.name,
            "os": "linux",
            "status": if self.runner_online(runner, now) { "online" } else { "offline" },
            "busy": runner.job.is_some() && !self.busy_hidden(runner),
            "ephemeral": runner.ephemeral,
            "labels": runner.labels,
            "version": runner.version,
        })
    }

    // ---------------------------------------------------------------- jobs

    /// Queues a job and assigns it if a runner can take it now.
    pub(crate) fn enqueue(&mut self, spec: JobSpec) -> Result<(u64, u64), String> {
        let (id, run_id) = self.queue_job(spec)?;
        self.assign_job(id);
        Ok((id, run_id))
    }

    /// Queues a job (and sends its `queued` webhook) without assigning it.
    fn queue_job(&mut self, spec: JobSpec) -> Result<(u64, u64), String> {
        let scope = match spec.scope.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let parsed = Scope::parse(s).ok_or_else(|| format!("invalid scope {s:?}"))?;
                Some(
                    self.resolve_scope(&parsed)
                        .ok_or_else(|| format!("unknown scope {s:?}"))?,
                )
            }
        };
        let id = self.next_job_id;
        self.next_job_id += 1;
        let run_id = self.next_run_id;
        self.next_run_id += 1;
        let head_sha = random_string(b"0123456789abcdef", 40);
        let repo = self.job_repo(scope.as_ref());
        let event = spec.event.unwrap_or_else(|| {
            json!({"ref": "refs/heads/main", "after": head_sha, "repository": {"full_name": repo}})
        });
        let now = self.clock.now();
        self.jobs.insert(
            id,
            Job {
                id,
                run_id,
                name: spec.name.unwrap_or_else(|| "build".to_owned()),
                workflow: spec.workflow.unwrap_or_else(|| "CI".to_owned()),
                labels: spec.labels,
                script: spec.script,
                timeout_seconds: spec.timeout_seconds.unwrap_or(360),
                scope,
                runner_group: spec.runner_group,
                event_name: spec.event_name.unwrap_or_else(|| "push".to_owned()),
                event,
                head_sha,
                status: JobStatus::Queued,
                conclusion: None,
                runner_id: None,
                runner_name: None,
                runner_group_id: None,
                runner_group_name: None,
                exit_code: None,
                output: String::new(),
                created_at: self.clock.wall(now),
                started_at: None,
                completed_at: None,
                delivered_at: None,
                killed_by_deletion: false,
            },
        );
        self.queue.push_back(id);
        self.emit(id, "queued");
        Ok((id, run_id))
    }

    /// The repository a job runs for: its repo scope, a configured repo of its org, or the first repo.
    fn job_repo(&self, scope: Option<&Scope>) -> String {
        match scope {
            Some(Scope::Repo { owner, repo }) => format!("{owner}/{repo}"),
            Some(Scope::Org(org)) => self
                .config
                .repos
                .iter()
                .find(|r| r.split('/').next() == Some(org.as_str()))
                .cloned()
                .unwrap_or_else(|| format!("{org}/app")),
            _ => self
                .config
                .repos
                .first()
                .cloned()
                .unwrap_or_else(|| "octo/app".to_owned()),
        }
    }

    pub(crate) fn job_view(&self, id: u64) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        Some(JobView {
            job_id: job.id,
            run_id: job.run_id,
            name: job.name.clone(),
            labels: job.labels.clone(),
            status: job.status,
            conclusion: job.conclusion.clone(),
            runner_name: job.runner_name.clone(),
            runner_id: job.runner_id,
            exit_code: job.exit_code,
            output: job.output.clone(),
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            completed_at: job.completed_at.map(rfc3339),
            killed_by_deletion: job.killed_by_deletion,
        })
    }

    pub(crate) fn job_views(&self) -> Vec<JobView> {
        self.jobs
            .keys()
            .filter_map(|id| self.job_view(*id))
            .collect()
    }

    /// Whether `runner` may take `job`: labels superset (case-insensitive), scope and group.
    fn runner_matches(&self, runner: &Runner, job: &Job) -> bool {
        let has_labels = job.labels.iter().all(|want| {
            runner
                .labels
                .iter()
                .any(|l| l.name.eq_ignore_ascii_case(want))
        });
        if !has_labels {
            return false;
        }
        let group = self.group_ref(&runner.scope, runner.group_id);
        if let Some(wanted) = &job.runner_group {
            if !group
                .as_ref()
                .is_some_and(|g| g.name.eq_ignore_ascii_case(wanted))
            {
                return false;
            }
        }
        let Some(scope) = &job.scope else { return true };
        let scope_ok = match (scope, &runner.scope) {
            (_, Scope::Enterprise(_)) => true,
            (a, b) if a == b => true,
            (Scope::Repo { owner, .. }, Scope::Org(org)) => owner == org,
            _ => false,
        };
        let group_ok = match (scope, group.and_then(|g| g.selected_repositories.as_ref())) {
            (Scope::Repo { owner, repo }, Some(selected)) if runner.scope.has_groups() => {
                selected.contains(&format!("{owner}/{repo}"))
            }
            _ => true,
        };
        scope_ok && group_ok
    }

    /// Assigns every queued job (oldest first) that an online, idle, matching runner can take.
    pub(crate) fn try_assign(&mut self) {
        let queued: Vec<u64> = self.queue.iter().copied().collect();
        for job_id in queued {
            self.assign_job(job_id);
        }
    }

    /// Gives the queued job `job_id` to an online, idle, matching runner: one that is polling right
    /// now is preferred, then the lowest id. Returns whether it was assigned.
    fn assign_job(&mut self, job_id: u64) -> bool {
        let now = self.clock.now();
        let Some(job) = self.jobs.get(&job_id) else {
            return false;
        };
        let candidate = self
            .runners
            .values()
            .filter(|r| {
                r.job.is_none() && self.runner_matches(r, job) && self.runner_online(r, now)
            })
            .min_by_key(|r| (r.active_polls == 0, r.id))
            .map(|r| r.id);
        let Some(runner_id) = candidate else {
            return false;
        };
        self.queue.retain(|id| *id != job_id);
        self.assign(job_id, runner_id);
        true
    }

    /// Gives `runner_id`, if online and idle, the oldest queued job it can take.
    pub(crate) fn assign_to_runner(&mut self, runner_id: u64) {
        let now = self.clock.now();
        let Some(runner) = self.runners.get(&runner_id) else {
            return;
        };
        if runner.job.is_some() || !self.runner_online(runner, now) {
            return;
        }
        let position = self.queue.iter().position(|id| {
            self.jobs
                .get(id)
                .is_some_and(|job| self.runner_matches(runner, job))
        });
        if let Some(job_id) = position.and_then(|p| self.queue.remove(p)) {
            self.assign(job_id, runner_id);
        }
    }

    fn assign(&mut self, job_id: u64, runner_id: u64) {
        let Some(runner) = self.runners.get_mut(&runner_id) else {
            return;
        };
        runner.job = Some(job_id);
        runner.notify.notify_one();
        let (name, scope, group_id) = (runner.name.clone(), runner.scope.clone(), runner.group_id);
        let group_name = self.group(&scope, group_id).map(|g| g.name);
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.runner_id = Some(runner_id);
            job.runner_name = Some(name);
            job.runner_group_id = Some(group_id);
            job.runner_group_name = group_name;
        }
    }

    /// Assigns a queued job matching `runner_id` to it (enqueuing `true` with its custom labels if
    /// none matches). Used by the assign-on-delete hook.
    pub(crate) fn force_assign(&mut self, runner_id: u64) {
        let Some(runner) = self.runners.get(&runner_id) else {
            return;
        };
        if runner.job.is_some() {
            return;
        }
        let found = self.queue.iter().position(|id| {
            self.jobs
                .get(id)
                .is_some_and(|job| self.runner_matches(runner, job))
        });
        let job_id = match found {
            Some(pos) => self.queue.remove(pos),
            None => {
                let labels: Vec<String> = runner.labels.iter().map(|l| l.name.clone()).collect();
                let scope = Some(runner.scope.path());
                let spec = JobSpec {
                    labels,
                    script: "true".to_owned(),
                    scope,
                    ..JobSpec::default()
                };
                let queued = self.queue_job(spec).ok().map(|(id, _)| id);
                self.queue.retain(|q| Some(*q) != queued);
                queued
            }
        };
        if let Some(job_id) = job_id {
            self.assign(job_id, runner_id);
        }
    }

    /// Freezes or thaws the runner named `name` (see [`Runner::frozen`]); `false` if there is no
    /// such runner. A thawed runner's waiting poll takes its assigned job at once.
    pub(crate) fn set_frozen(&mut self, name: &str, frozen: bool) -> bool {
        let Some(runner) = self.runners.values_mut().find(|r| r.name == name) else {
            return false;
        };
        runner.frozen = frozen;
        if !frozen {
            runner.notify.notify_one();
        }
        true
    }

    /// Hands the job assigned to `runner_id` to it, once. Returns the runner-protocol `Job`.
    pub(crate) fn take_assigned_job(&mut self, runner_id: u64) -> Option<Value> {
        let runner = self.runners.get(&runner_id)?;
        if runner.frozen {
            return None;
        }
        let job_id = runner.job?;
        let now = self.clock.now();
        let wall = self.clock.wall(now);
        let repo = {
            let job = self.jobs.get(&job_id)?;
            if job.delivered_at.is_some() {
                return None;
            }
            self.job_repo(job.scope.as_ref())
        };
        let job = self.jobs.get_mut(&job_id)?;
        job.delivered_at = Some(now);
        job.status = JobStatus::InProgress;
        job.started_at = Some(wall);
        let payload = json!({
            "job_id": job.id,
            "run_id": job.run_id,
            "script": job.script,
            "timeout_seconds": job.timeout_seconds,
            "labels": job.labels,
            "env": {
                "GITHUB_REPOSITORY": repo,
                "GITHUB_EVENT_NAME": job.event_name,
                "GITHUB_WORKFLOW": job.workflow,
                "GITHUB_REF": "refs/heads/main",
                "GITHUB_SHA": job.head_sha,
                "GITHUB_RUN_ID": job.run_id.to_string(),
                "GITHUB_JOB": job.name,
            },
            "event_name": job.event_name,
            "event": job.event,
        });
        self.emit(job_id, "in_progress");
        Some(payload)
    }

    /// Records a job's result. Errors when the job is not the runner's current job.
    pub(crate) fn complete_job(
        &mut self,
        runner_id: u64,
        job_id: u64,
        exit_code: i32,
        output: String,
        conclusion: Option<String>,
    ) -> Result<(), ()> {
        let runner = self.runners.get_mut(&runner_id).ok_or(())?;
        if runner.job != Some(job_id) {
            return Err(());
        }
        runner.job = None;
        let ephemeral = runner.ephemeral;
        let now = self.clock.now();
        let wall = self.clock.wall(now);
        let job = self.jobs.get_mut(&job_id).ok_or(())?;
        job.status = JobStatus::Completed;
        job.exit_code = Some(exit_code);
        let conclusion = conclusion
            .filter(|c| matches!(c.as_str(), "success" | "failure" | "cancelled"))
            .unwrap_or_else(|| if exit_code == 0 { "success" } else { "failure" }.to_owned());
        job.conclusion = Some(conclusion);
        let mut output = output;
        if output.len() > MAX_OUTPUT {
            let mut cut = MAX_OUTPUT;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            output.truncate(cut);
        }
        job.output = output;
        job.completed_at = Some(wall);
        job.started_at.get_or_insert(wall);
        self.emit(job_id, "completed");
        if ephemeral {
            self.remove_runner(runner_id);
        } else {
            self.assign_to_runner(runner_id);
        }
        Ok(())
    }

    /// Periodic housekeeping: requeue jobs held by runners that went offline before picking them
    /// up, fail jobs whose runner went silent past the job deadline, then assign.
    pub(crate) fn reap(&mut self) {
        let now = self.clock.now();
        let mut requeued = false;
        let mut to_release = Vec::new();
        for runner in self.runners.values() {
            if let Some(job_id) = runner.job {
                if !self.runner_online(runner, now) {
                    to_release.push((runner.id, job_id));
                }
            }
        }
        for (runner_id, job_id) in to_release {
            if let Some(runner) = self.runners.get_mut(&runner_id) {
                runner.job = None;
            }
            let delivered = self
                .jobs
                .get(&job_id)
                .is_some_and(|j| j.delivered_at.is_some());
            let name = self
                .runners
                .get(&runner_id)
                .map(|r| r.name.clone())
                .unwrap_or_default();
            self.release_job(
                job_id,
                &format!("The self-hosted runner: {name} lost communication with the server."),
            );
            if delivered && self.runners.get(&runner_id).is_some_and(|r| r.ephemeral) {
                self.remove_runner(runner_id);
            }
            requeued |= !delivered;
        }
        if requeued {
            self.try_assign();
        }
        // GitHub forgets runners that stay offline too long (14 days; 1 day if ephemeral).
        let stale: Vec<u64> = self
            .runners
            .values()
            .filter(|r| r.job.is_none() && r.active_polls == 0 && !self.runner_online(r, now))
            .filter(|r| {
                let since = r.last_seen.unwrap_or(r.registered_at).max(r.registered_at);
                let limit = if r.ephemeral {
                    self.config.ephemeral_offline_removal
                } else {
                    self.config.offline_removal
                };
                now.saturating_duration_since(since) >= limit
            })
            .map(|r| r.id)
            .collect();
        for id in stale {
            self.remove_runner(id);
        }
    }

    /// A cached list answer for `key`, if caching is on and it is fresh.
    pub(crate) fn cached_list(&mut self, key: &str) -> Option<Value> {
        let ttl = self.config.list_cache;
        if ttl.is_zero() {
            return None;
        }
        let now = self.clock.now();
        self.list_cache
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        self.list_cache.get(key).map(|(_, body)| body.clone())
    }

    pub(crate) fn cache_list(&mut self, key: String, body: Value) {
        if !self.config.list_cache.is_zero() {
            let now = self.clock.now();
            self.list_cache.insert(key, (now, body));
        }
    }

    // ---------------------------------------------------------------- webhooks

    fn emit(&mut self, job_id: u64, action: &str) {
        let Some(target) = self.webhook.clone() else {
            return;
        };
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let repo = self.job_repo(job.scope.as_ref());
        let owner = repo.split('/').next().unwrap_or_default().to_owned();
        let repo_name = repo.split('/').nth(1).unwrap_or_default().to_owned();
        let status = match job.status {
            JobStatus::Queued => "queued",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
        };
        let queued = job.status == JobStatus::Queued;
        let mut payload = json!({
            "action": action,
            "workflow_job": {
                "id": job.id,
                "run_id": job.run_id,
                "run_attempt": 1,
                "run_url": format!("https://api.github.com/repos/{repo}/actions/runs/{}", job.run_id),
                "name": job.name,
                "workflow_name": job.workflow,
                "head_branch": "main",
                "head_sha": job.head_sha,
                "status": status,
                "conclusion": job.conclusion,
                "labels": job.labels,
                "created_at": rfc3339(job.created_at),
                "started_at": job.started_at.map(rfc3339).unwrap_or_else(|| rfc3339(job.created_at)),
                "completed_at": job.completed_at.map(rfc3339),
                "runner_id": if queued { None } else { job.runner_id },
                "runner_name": if queued { None } else { job.runner_name.clone() },
                "runner_group_id": if queued { None } else { job.runner_group_id },
                "runner_group_name": if queued { None } else { job.runner_group_name.clone() },
                "steps": [],
            },
            "repository": {
                "id": 1,
                "name": repo_name,
                "full_name": repo,
                "private": true,
                "owner": {"login": owner, "type": if self.config.orgs.iter().any(|o| o.name == owner) { "Organization" } else { "User" }},
            },
            "sender": {"login": owner, "type": "User"},
        });
        if self.config.orgs.iter().any(|o| o.name == owner) {
            payload["organization"] = json!({"login": owner});
        }
        if let Some(id) = self.installation_for(&owner) {
            payload["installation"] = json!({"id": id});
        }
        let event = WebhookEvent {
            target,
            action: action.to_owned(),
            job_id,
            payload,
        };
        // The receiver task only stops at shutdown; a lost event then does not matter.
        let _ = self.webhook_tx.send(event);
    }

    pub(crate) fn record_delivery(&mut self, record: DeliveryRecord) {
        self.deliveries.push(record);
    }

    pub(crate) fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.deliveries.clone()
    }

    // ---------------------------------------------------------------- counters and faults

    pub(crate) fn count_request(&mut self, key: &str) {
        self.counters.entry(key.to_owned()).or_default().count += 1;
    }

    pub(crate) fn count_result(&mut self, key: &str, cost: u64, not_modified: bool) {
        let entry = self.counters.entry(key.to_owned()).or_default();
        entry.rate_limit_cost += cost;
        if not_modified {
            entry.not_modified += 1;
        }
    }

    pub(crate) fn counters(&self) -> BTreeMap<String, RequestCount> {
        self.counters.clone()
    }

    pub(crate) fn reset_counters(&mut self) {
        self.counters.clear();
    }

    pub(crate) fn add_fault(&mut self, spec: FaultSpec) -> u64 {
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.faults.push(Fault { id, spec });
        id
    }

    /// Clears every fault, the busy-lie fault included.
    pub(crate) fn clear_faults(&mut self) {
        self.faults.clear();
        self.busy_lie = None;
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

    // ---------------------------------------------------------------- rate limits

    fn bucket(&mut self, identity: &str) -> &mut Bucket {
        let now = self.clock.now();
        let window = self.config.rate_limit_window;
        let bucket = self.buckets.entry(identity.to_owned()).or_insert(Bucket {
            used: 0,
            window_start: now,
        });
        if now >= bucket.window_start + window {
            bucket.used = 0;
            bucket.window_start = now;
        }
        bucket
    }

    pub(crate) fn rate_info(&mut self, identity: &str) -> RateInfo {
        let limit = self.rate_limit;
        let window = self.config.rate_limit_window;
        let clock = self.clock;
        let bucket = self.bucket(identity);
        RateInfo {
            limit,
            remaining: limit.saturating_sub(bucket.used),
            used: bucket.used,
            reset: clock.epoch_secs(bucket.window_start + window),
        }
    }

    /// Charges one point; `Err` (nothing charged) when the budget is exhausted.
    pub(crate) fn rate_charge(&mut self, identity: &str) -> Result<RateInfo, RateInfo> {
        let limit = self.rate_limit;
        let bucket = self.bucket(identity);
        if bucket.used >= limit {
            return Err(self.rate_info(identity));
        }
        bucket.used += 1;
        Ok(self.rate_info(identity))
    }

    pub(crate) fn rate_refund(&mut self, identity: &str) {
        let bucket = self.bucket(identity);
        bucket.used = bucket.used.saturating_sub(1);
    }

    /// Sets the primary budget; `used` overrides the current window's usage.
    pub(crate) fn set_rate_limit(
        &mut self,
        limit: Option<u32>,
        used: Option<u32>,
        secondary: Option<u32>,
    ) {
        if let Some(limit) = limit {
            self.rate_limit = limit;
        }
        if let Some(secondary) = secondary {
            self.secondary_limit = secondary;
        }
        if let Some(used) = used {
            let identities: Vec<String> = self.buckets.keys().cloned().collect();
            for identity in identities {
                self.bucket(&identity).used = used;
            }
            self.bucket("pat").used = used;
        }
    }

    /// Records a content-creating request; `Err(retry_after_secs)` past the per-minute limit.
    pub(crate) fn secondary_charge(&mut self, identity: &str) -> Result<(), u64> {
        let now = self.clock.now();
        let limit = self.secondary_limit as usize;
        let window = Duration::from_secs(60);
        let times = self.secondary.entry(identity.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= limit {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = (oldest + window).saturating_duration_since(now);
            return Err(wait.as_secs().max(1));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupConfig;

    fn state() -> State {
        let config = SimConfig::default()
            .with_repo("octo-org/web")
            .with_org(OwnerConfig {
                name: "octo-org".into(),
                id: 100,
                groups: vec![
                    GroupConfig::default_group(),
                    GroupConfig::new(2, "restricted").selected(&["octo-org/other"]),
                ],
            });
        let (tx, _rx) = mpsc::unbounded_channel();
        State::new(config, Clock::new(), tx)
    }

    /// Registers an online runner; returns its id.
    fn runner(
        state: &mut State,
        scope: &str,
        group: u64,
        labels: &[&str],
        no_defaults: bool,
    ) -> u64 {
        let custom: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        let labels = state.make_labels(&custom, no_defaults);
        let name = format!("r{}", state.next_runner_id);
        let scope = Scope::parse(scope).expect("scope");
        let new = NewRunner {
            scope,
            name,
            group_id: group,
            labels,
            ephemeral: false,
            jit: false,
        };
        let (id, _) = state.register(new, false).expect("register");
        state.heartbeat(id);
        id
    }

    /// (runner scope, group, labels, no_default_labels, job scope, job labels, job group, matches)
    type Case = (
        &'static str,
        u64,
        &'static [&'static str],
        bool,
        Option<&'static str>,
        &'static [&'static str],
        Option<&'static str>,
        bool,
    );

    #[test]
    fn job_matching_table() {
        // (runner scope, group, labels, no_default_labels, job scope, job labels, job group, matches)
        let cases: &[Case] = &[
            (
                "octo/app",
                1,
                &[],
                false,
                None,
                &["self-hosted", "linux", "x64"],
                None,
                true,
            ),
            (
                "octo/app",
                1,
                &["jammy"],
                false,
                None,
                &["JAMMY"],
                None,
                true,
            ),
            (
                "octo/app",
                1,
                &["jammy"],
                false,
                None,
                &["jammy", "gpu"],
                None,
                false,
            ),
            (
                "octo/app",
                1,
                &["jammy"],
                true,
                None,
                &["self-hosted"],
                None,
                false,
            ),
            ("octo/app", 1, &[], false, Some("octo/app"), &[], None, true),
            (
                "octo/app",
                1,
                &[],
                false,
                Some("octo-org/web"),
                &[],
                None,
                false,
            ),
            (
                "octo-org",
                1,
                &[],
                false,
                Some("octo-org/web"),
                &[],
                None,
                true,
            ),
            (
                "octo-org",
                2,
                &[],
                false,
                Some("octo-org/web"),
                &[],
                None,
                false,
            ),
            ("octo-org", 2, &[], false, Some("octo-org"), &[], None, true),
            (
                "octo-org",
                1,
                &[],
                false,
                Some("octo/app"),
                &[],
                None,
                false,
            ),
            (
                "enterprises/acme",
                1,
                &[],
                false,
                Some("octo/app"),
                &[],
                None,
                true,
            ),
            (
                "octo-org",
                1,
                &[],
                false,
                Some("enterprises/acme"),
                &[],
                None,
                false,
            ),
            (
                "octo-org",
                2,
                &[],
                false,
                None,
                &[],
                Some("restricted"),
                true,
            ),
            (
                "octo-org",
                1,
                &[],
                false,
                None,
                &[],
                Some("restricted"),
                false,
            ),
        ];
        for (i, (rscope, group, labels, no_defaults, jscope, jlabels, jgroup, expected)) in
            cases.iter().enumerate()
        {
            let mut state = state();
            let id = runner(&mut state, rscope, *group, labels, *no_defaults);
            let spec = JobSpec {
                labels: jlabels.iter().map(|l| (*l).to_owned()).collect(),
                scope: jscope.map(str::to_owned),
                runner_group: jgroup.map(str::to_owned),
                ..JobSpec::default()
            };
            let (job, _) = state.enqueue(spec).expect("enqueue");
            let assigned = state.job_view(job).and_then(|j| j.runner_id);
            assert_eq!(assigned == Some(id), *expected, "case {i}");
            assert_eq!(
                state.runner(id).is_some_and(|r| r.job.is_some()),
                *expected,
                "case {i}"
            );
        }
    }

    #[test]
    fn oldest_job_first_and_one_job_per_runner() {
        let mut state = state();
        let (first, _) = state.enqueue(JobSpec::new(&[], "1")).expect("enqueue");
        let (second, _) = state.enqueue(JobSpec::new(&[], "2")).expect("enqueue");
        let id = runner(&mut state, "octo/app", 1, &[], false);
        state.assign_to_runner(id);
        assert_eq!(state.runner(id).and_then(|r| r.job), Some(first));
        state.assign_to_runner(id);
        assert_eq!(state.job_view(second).and_then(|j| j.runner_id), None);
        let payload = state.take_assigned_job(id).expect("job");
        assert_eq!(payload["script"], "1");
        assert!(state.take_assigned_job(id).is_none(), "handed over once");
        state
            .complete_job(id, first, 0, String::new(), None)
            .expect("complete");
        assert_eq!(state.runner(id).and_then(|r| r.job), Some(second));
        assert!(state
            .complete_job(id, first, 0, String::new(), None)
            .is_err());
    }

    #[test]
    fn removing_a_runner_requeues_or_fails_its_job() {
        let mut state = state();
        let a = runner(&mut state, "octo/app", 1, &[], false);
        let (job, _) = state.enqueue(JobSpec::new(&[], "x")).expect("enqueue");
        assert_eq!(state.runner(a).and_then(|r| r.job), Some(job));
        state.remove_runner(a);
        assert_eq!(
            state.job_view(job).map(|j| j.status),
            Some(JobStatus::Queued)
        );
        let b = runner(&mut state, "octo/app", 1, &[], false);
        state.assign_to_runner(b);
        state.take_assigned_job(b).expect("job");
        state.remove_runner(b);
        let view = state.job_view(job).expect("job");
        assert_eq!(view.status, JobStatus::Completed);
        assert_eq!(view.conclusion.as_deref(), Some("failure"));
    }

    #[test]
    fn budgets() {
        let mut state = state();
        state.set_rate_limit(Some(2), None, Some(1));
        assert!(state.rate_charge("pat").is_ok());
        assert_eq!(state.rate_charge("pat").map(|i| i.remaining).ok(), Some(0));
        assert!(state.rate_charge("pat").is_err());
        state.rate_refund("pat");
        assert_eq!(state.rate_info("pat").remaining, 1);
        assert_eq!(
            state.rate_info("installation:42").remaining,
            2,
            "separate buckets"
        );
        assert!(state.secondary_charge("pat").is_ok());
        let retry = state.secondary_charge("pat").expect_err("limited");
        assert!((1..=60).contains(&retry));
    }

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
}
