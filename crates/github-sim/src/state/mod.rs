//! The simulator's state: runners, jobs, tokens, counters, faults and rate-limit buckets.
//!
//! Everything lives in one [`State`] behind a `parking_lot::Mutex`; no method awaits, so the lock
//! is never held across an await point.
//!
//! This file keeps [`State`] itself, the clock, scopes, groups and labels; each purpose adds its
//! own `impl State` block in a submodule: `tokens`, `runners`, `jobs`, `webhooks`, `counters`,
//! `faults` (request faults and the busy-lie fault) and `rate_limit`.

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

mod counters;
mod faults;
mod jobs;
mod rate_limit;
mod runners;
// The scale-set protocol's state shares the job queue and the runner table, so it is a
// submodule of `state`; its file lives with the rest of the scale-set code.
#[path = "../scaleset/state/mod.rs"]
mod scaleset;
mod tokens;
mod webhooks;

pub use counters::RequestCount;
use faults::{BusyLie, Fault};
pub use faults::{BusyLieSpec, BusyLieStatus, FaultSpec, WebhookFaultSpec};
pub(crate) use jobs::Job;
pub use jobs::{JobSpec, JobStatus, JobView};
use rate_limit::Bucket;
pub(crate) use rate_limit::RateInfo;
pub use runners::RunnerView;
pub(crate) use runners::{NewRunner, RegisterError, Runner};
pub use scaleset::ScaleSetFaults;
pub(crate) use scaleset::{DeleteSetError, QueueAuthError, SessionError};
pub use tokens::IssuedSecrets;
pub(crate) use tokens::TokenKind;
use tokens::TokenTable;
pub(crate) use webhooks::{AttemptOutcome, HookDelivery, HookInfo, WebhookEvent};
pub use webhooks::{DeliveryRecord, ORG_HOOK_ID_BASE};

/// Labels every runner gets unless registered with `--no-default-labels`.
pub const DEFAULT_LABELS: [&str; 3] = ["self-hosted", "Linux", "X64"];

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

    /// When the simulator started (wall time).
    pub(crate) fn started(&self) -> OffsetDateTime {
        self.start_wall
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
    tokens: TokenTable<(TokenKind, Scope)>,
    installation_tokens: TokenTable<u64>,
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
    /// Every webhook delivery attempt, oldest first (ids increase with the position).
    deliveries: Vec<webhooks::HookDelivery>,
    next_delivery_id: u64,
    webhook_fault: Option<WebhookFaultSpec>,
    /// Cached list answers: request key → (time, body).
    list_cache: HashMap<String, (Instant, Value)>,
    webhook_tx: mpsc::UnboundedSender<WebhookEvent>,
    /// Runner scale sets (`scaleset/state/`).
    scalesets: scaleset::ScaleSets,
}

impl State {
    pub(crate) fn new(
        config: SimConfig,
        clock: Clock,
        webhook_tx: mpsc::UnboundedSender<WebhookEvent>,
    ) -> Self {
        let mut state = Self {
            scalesets: scaleset::ScaleSets::new(config.scaleset.clone()),
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
            tokens: TokenTable::default(),
            installation_tokens: TokenTable::default(),
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
            next_delivery_id: 1,
            webhook_fault: None,
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
}

#[cfg(test)]
mod test_util {
    use super::*;
    use crate::config::GroupConfig;

    pub(super) fn state() -> State {
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
    pub(super) fn runner(
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
}
