//! The pure heart: classify what was observed and decide what to do. No IO here.
//!
//! Decisions worth knowing:
//! - A runner GitHub reports busy is never planned for removal, whatever its instance looks like
//!   (even a dead process): the job finishes or GitHub takes the runner offline and clears `busy`,
//!   and a later pass removes it. Busy runners count toward the quantity.
//! - A live runner GitHub shows offline is kept (upstream #281) until the manager has seen it
//!   offline for `offline_grace`.
//! - A registration with no instance is dangling and deleted, unless GitHub says it is busy.
//! - A failed probe (exec error) of a runner GitHub shows online counts as alive: a transient
//!   exec failure never removes a working runner.
//! - Scale-down picks booting, then offline, then online idle runners; never busy ones.
//! - On a cluster, an instance whose member is offline is *lost*: not healthy, not counted
//!   toward the quantity (so it is replaced on the other members), and never called (no probe,
//!   no delete) while its member is offline. Its registration, if GitHub says it is idle, is
//!   deleted (registration only): the runner, still polling GitHub from an instance the manager
//!   cannot reach, takes no new job there. A busy one keeps its registration: its job is
//!   reported, never cut. When the member is back, an instance seen lost is *stale* and removed
//!   (instance and registration) unless GitHub says it is busy; it is never counted healthy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::model::RunnerName;
use crate::pool::PoolName;
use crate::provider::InstanceStatus;

/// Whether the runner process inside an instance is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Alive,
    /// `run.sh` exited 0: an ephemeral runner that did its job.
    Finished,
    Dead,
    /// The probe could not run (instance not ready, exec failed).
    Unknown,
}

/// The state of an instance's cluster member, as the pass sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Online,
    /// The cluster says the member is offline: the instance is lost and never called.
    Offline,
    /// The member is online again, and this instance was seen lost before: stale.
    Returned,
}

/// Where an instance lives on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub member: String,
    pub state: MemberState,
}

impl Location {
    pub fn online(member: &str) -> Self {
        Self {
            member: member.to_owned(),
            state: MemberState::Online,
        }
    }
}

/// An owned instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInstance {
    pub name: RunnerName,
    /// From the instance's config keys ([`crate::pool::POOL_KEY`]).
    pub pool: PoolName,
    pub status: InstanceStatus,
    pub age: Duration,
    pub probe: Probe,
    /// The baked image it was made from ([`crate::images::IMAGE_KEY`]); `None`: a plain launch.
    pub image: Option<String>,
    /// Made from an image its pool no longer launches (a baked image that was replaced).
    pub outdated: bool,
    /// Its cluster member; `None` on a standalone server.
    pub location: Option<Location>,
}

impl ObservedInstance {
    /// On an offline member.
    pub fn is_lost(&self) -> bool {
        self.location
            .as_ref()
            .is_some_and(|l| l.state == MemberState::Offline)
    }
}

/// An owned registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRegistration {
    pub id: u64,
    pub name: RunnerName,
    /// From the registration's labels ([`crate::pool::POOL_LABEL_PREFIX`]).
    pub pool: PoolName,
    pub online: bool,
    pub busy: bool,
    /// How long the manager has seen it offline (zero when online or first seen offline now).
    pub offline_for: Duration,
}

/// What one pass saw: this owner's instances and registrations only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub instances: Vec<ObservedInstance>,
    pub registrations: Vec<ObservedRegistration>,
    /// The cluster's members (status, groups, capacity); `None` on a standalone server.
    pub members: Option<Vec<crate::provider::Member>>,
}

#[cfg(test)]
impl Observed {
    /// The observation without these runners (after their removal).
    pub(crate) fn without(&self, removed: &BTreeSet<&RunnerName>) -> Self {
        Self {
            instances: self
                .instances
                .iter()
                .filter(|i| !removed.contains(&i.name))
                .cloned()
                .collect(),
            registrations: self
                .registrations
                .iter()
                .filter(|r| !removed.contains(&r.name))
                .cloned()
                .collect(),
            members: self.members.clone(),
        }
    }
}

/// The target and the tolerances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desired {
    pub quantity: usize,
    /// How long a new instance may go without a live process or a registration.
    pub boot_grace: Duration,
    /// How long a live runner may show offline on GitHub before it is replaced.
    pub offline_grace: Duration,
    /// Idle runners whose instance is older than this are replaced; `None`: never.
    pub max_idle_age: Option<Duration>,
}

#[cfg(test)]
impl Desired {
    /// The tests' tolerances: `quantity` runners, `grace` for booting and for offline, no
    /// recycling.
    pub(crate) fn with_grace(quantity: usize, grace: Duration) -> Self {
        Self {
            quantity,
            boot_grace: grace,
            offline_grace: grace,
            max_idle_age: None,
        }
    }
}

/// Why a runner is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RemovalReason {
    /// The runner exited normally after its job (ephemeral).
    Finished,
    /// The runner process is not running.
    ProcessDead,
    /// The instance is stopped or in an error state.
    InstanceNotRunning,
    /// The process could not be probed after the boot grace period.
    Unresponsive,
    /// GitHub has shown it offline past the offline grace period.
    Offline,
    /// An instance without a registration after the boot grace period.
    Orphan,
    /// A registration without an instance.
    Dangling,
    /// More runners than the quantity.
    ScaleDown,
    /// Idle past `max_idle_age`: replaced by a fresh one.
    Recycled,
    /// Idle, made from an image its pool replaced: replaced by one from the new image.
    Outdated,
    /// `flush`.
    Flush,
    /// Idle on an offline member: its registration is deleted, its instance left alone until
    /// the member is back.
    Lost,
    /// Seen lost, and its member is back: instance and registration go.
    Stale,
}

impl RemovalReason {
    /// A bounded label for metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::ProcessDead => "process_dead",
            Self::InstanceNotRunning => "instance_not_running",
            Self::Unresponsive => "unresponsive",
            Self::Offline => "offline",
            Self::Orphan => "orphan",
            Self::Dangling => "dangling",
            Self::ScaleDown => "scale_down",
            Self::Recycled => "recycled",
            Self::Outdated => "outdated",
            Self::Flush => "flush",
            Self::Lost => "lost",
            Self::Stale => "stale",
        }
    }

    /// Whether the runner crashed (as opposed to being removed by decision).
    pub fn is_crash(self) -> bool {
        matches!(
            self,
            Self::ProcessDead
                | Self::InstanceNotRunning
                | Self::Unresponsive
                | Self::Offline
                | Self::Lost
        )
    }
}

impl std::fmt::Display for RemovalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of one runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerState {
    Busy,
    Idle {
        online: bool,
    },
    Booting,
    /// To be removed for the given reason.
    Remove(RemovalReason),
    /// A registration with no instance that GitHub says is busy: left alone, not counted.
    BusyDangling,
    /// Its instance is on an offline cluster member: not healthy, not counted, not called.
    /// `busy`: GitHub says it runs a job (reported, never cut).
    Lost {
        busy: bool,
    },
}

/// One removal: the registration first (if any), then the instance (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub name: RunnerName,
    pub registration: Option<u64>,
    pub has_instance: bool,
    pub reason: RemovalReason,
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every owned runner and its class, sorted by name.
    pub states: BTreeMap<RunnerName, RunnerState>,
    /// Unhealthy, orphan, dangling and scale-down removals, sorted by name.
    pub removals: Vec<Removal>,
    pub create: usize,
    /// The seed's return value: quantity minus the healthy (busy, idle or booting) runners.
    pub delta: i64,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.removals.is_empty() && self.create == 0
    }

    /// Runners counted as healthy before acting.
    pub fn healthy(&self) -> usize {
        self.states
            .values()
            .filter(|s| {
                matches!(
                    s,
                    RunnerState::Busy | RunnerState::Idle { .. } | RunnerState::Booting
                )
            })
            .count()
    }
}

/// Classifies every owned runner.
pub fn classify(observed: &Observed, desired: &Desired) -> BTreeMap<RunnerName, RunnerState> {
    let registrations: BTreeMap<&RunnerName, &ObservedRegistration> = observed
        .registrations
        .iter()
        .map(|r| (&r.name, r))
        .collect();
    let mut states = BTreeMap::new();
    for instance in &observed.instances {
        let registration = registrations.get(&instance.name).copied();
        let busy = registration.is_some_and(|r| r.busy);
        match instance.location.as_ref().map(|l| l.state) {
            Some(MemberState::Offline) => {
                states.insert(instance.name.clone(), RunnerState::Lost { busy });
                continue;
            }
            Some(MemberState::Returned) if !busy => {
                states.insert(
                    instance.name.clone(),
                    RunnerState::Remove(RemovalReason::Stale),
                );
                continue;
            }
            _ => {}
        }
        let booting = instance.age < desired.boot_grace;
        let state = match (registration, instance.status, instance.probe) {
            (Some(r), _, _) if r.busy => RunnerState::Busy,
            (_, InstanceStatus::Stopped | InstanceStatus::Stopping, _) => {
                RunnerState::Remove(RemovalReason::InstanceNotRunning)
            }
            (_, InstanceStatus::Other, _) if booting => RunnerState::Booting,
            (_, InstanceStatus::Other, _) => RunnerState::Remove(RemovalReason::InstanceNotRunning),
            (_, InstanceStatus::Running, Probe::Finished) => {
                RunnerState::Remove(RemovalReason::Finished)
            }
            (_, InstanceStatus::Running, Probe::Dead) => {
                RunnerState::Remove(RemovalReason::ProcessDead)
            }
            (_, InstanceStatus::Running, Probe::Unknown) if booting => RunnerState::Booting,
            // The probe failed (exec hiccup) but GitHub hears from the runner: it is alive.
            (Some(r), InstanceStatus::Running, Probe::Unknown) if r.online => {
                RunnerState::Idle { online: true }
            }
            (_, InstanceStatus::Running, Probe::Unknown) => {
                RunnerState::Remove(RemovalReason::Unresponsive)
            }
            // run.sh only starts once registered (config.sh first; a JIT registration exists
            // before its instance), so a live runner without a registration was deregistered:
            // e.g. a removal interrupted between the registration and the instance. It can never
            // take a job again, whatever its age.
            (None, InstanceStatus::Running, Probe::Alive) => {
                RunnerState::Remove(RemovalReason::Orphan)
            }
            (Some(r), InstanceStatus::Running, Probe::Alive) => {
                if !r.online && !booting && r.offline_for >= desired.offline_grace {
                    RunnerState::Remove(RemovalReason::Offline)
                } else {
                    RunnerState::Idle { online: r.online }
                }
            }
        };
        // An idle runner past its age is replaced (a fresh image and binary). Only an online
        // one that GitHub says is idle: the removal asks GitHub first, which refuses a busy one.
        let state = match (state, desired.max_idle_age) {
            (RunnerState::Idle { online: true }, _) if instance.outdated => {
                RunnerState::Remove(RemovalReason::Outdated)
            }
            (RunnerState::Idle { online: true }, Some(max_age)) if instance.age >= max_age => {
                RunnerState::Remove(RemovalReason::Recycled)
            }
            (state, _) => state,
        };
        states.insert(instance.name.clone(), state);
    }
    for registration in &observed.registrations {
        states
            .entry(registration.name.clone())
            .or_insert(if registration.busy {
                RunnerState::BusyDangling
            } else {
                RunnerState::Remove(RemovalReason::Dangling)
            });
    }
    states
}

/// Turns an observation and a target into actions.
pub fn plan(observed: &Observed, desired: &Desired) -> Plan {
    let states = classify(observed, desired);
    let registration_ids: BTreeMap<&RunnerName, u64> = observed
        .registrations
        .iter()
        .map(|r| (&r.name, r.id))
        .collect();
    let instances: BTreeSet<&RunnerName> = observed.instances.iter().map(|i| &i.name).collect();
    let removal = |name: &RunnerName, reason| Removal {
        name: name.clone(),
        registration: registration_ids.get(name).copied(),
        has_instance: instances.contains(name),
        reason,
    };

    let mut removals: Vec<Removal> = states
        .iter()
        .filter_map(|(name, state)| match state {
            RunnerState::Remove(reason) => Some(removal(name, *reason)),
            // The registration only: its instance is on an offline member, never called.
            RunnerState::Lost { busy: false } => registration_ids.get(name).map(|&id| Removal {
                name: name.clone(),
                registration: Some(id),
                has_instance: false,
                reason: RemovalReason::Lost,
            }),
            _ => None,
        })
        .collect();

    let healthy = states
        .values()
        .filter(|s| {
            matches!(
                s,
                RunnerState::Busy | RunnerState::Idle { .. } | RunnerState::Booting
            )
        })
        .count();
    let delta = desired.quantity as i64 - healthy as i64;
    let create = usize::try_from(delta).unwrap_or(0);

    if healthy > desired.quantity {
        // A booting instance that GitHub does not know yet is never scaled down: it may be
        // registering and taking a job right now, and without a registration there is no
        // "busy" answer to protect it. The registered ones go first.
        let rank = |name: &RunnerName, state: &RunnerState| match state {
            RunnerState::Booting if registration_ids.contains_key(name) => Some(0),
            RunnerState::Idle { online: false } => Some(1),
            RunnerState::Idle { online: true } => Some(2),
            _ => None,
        };
        let mut candidates: Vec<(u8, &RunnerName)> = states
            .iter()
            .filter_map(|(name, state)| rank(name, state).map(|r| (r, name)))
            .collect();
        candidates.sort();
        removals.extend(
            candidates
                .into_iter()
                .take(healthy - desired.quantity)
                .map(|(_, name)| removal(name, RemovalReason::ScaleDown)),
        );
    }
    removals.sort_by(|a, b| a.name.cmp(&b.name));

    Plan {
        states,
        removals,
        create,
        delta,
    }
}

/// What `flush` removes: every owned runner, sparing busy ones unless `flush_busy`. Sparing busy
/// runners also spares instances younger than `boot_grace` that have no registration yet: they
/// may register and take a job while the flush runs, and nothing would say they are busy.
pub fn plan_flush(observed: &Observed, flush_busy: bool, boot_grace: Duration) -> Vec<Removal> {
    let booting_unregistered: BTreeSet<&RunnerName> = observed
        .instances
        .iter()
        .filter(|i| i.age < boot_grace)
        .filter(|i| !observed.registrations.iter().any(|r| r.name == i.name))
        .map(|i| &i.name)
        .collect();
    let busy: BTreeSet<&RunnerName> = observed
        .registrations
        .iter()
        .filter(|r| r.busy)
        .map(|r| &r.name)
        .collect();
    let ids: BTreeMap<&RunnerName, u64> = observed
        .registrations
        .iter()
        .map(|r| (&r.name, r.id))
        .collect();
    // An instance on an offline member is never called: only its registration may go.
    let lost: BTreeSet<&RunnerName> = observed
        .instances
        .iter()
        .filter(|i| i.is_lost())
        .map(|i| &i.name)
        .collect();
    let instances: BTreeSet<&RunnerName> = observed
        .instances
        .iter()
        .filter(|i| !i.is_lost())
        .map(|i| &i.name)
        .collect();
    let names: BTreeSet<&RunnerName> = instances
        .iter()
        .copied()
        .chain(ids.keys().copied())
        .collect();
    names
        .into_iter()
        .filter(|name| flush_busy || !(busy.contains(name) || booting_unregistered.contains(name)))
        // A lost runner's registration goes only when GitHub says it is idle: the manager
        // cannot stop a job on an offline member.
        .filter(|name| !(lost.contains(name) && busy.contains(name)))
        .map(|name| Removal {
            name: name.clone(),
            registration: ids.get(name).copied(),
            has_instance: instances.contains(name),
            reason: RemovalReason::Flush,
        })
        .collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
