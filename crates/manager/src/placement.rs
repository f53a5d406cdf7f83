//! Placement on an LXD/Incus cluster: which member each new runner goes to. Pure: no IO here.
//!
//! The pass observes the members once (status, groups and capacity from the resources API) and
//! each owned instance's member; [`place_fleet`] then gives each pool's creations a member
//! before anything is created, so the creations of one pass are spread too.
//!
//! - Candidates: the online members the pool's target allows (every member, one member, or the
//!   members of a cluster group). An offline member is never a candidate.
//! - Room: a member takes a runner only if, after it, the CPU threads reserved by this
//!   manager's runners stay within `threads × overcommit.cpu` (rounded down) and the memory
//!   reserved by them within `memory × overcommit.memory − the host's used memory`. A runner
//!   reserves its pool's `cpu` and `memory` (an instance of a pool no longer configured
//!   reserves nothing: it is going away). The host's used memory counts in full, although it
//!   includes what this manager's instances really use: limits are ceilings, use is real, and
//!   the double count errs on the side of room. An online member whose resources could not be
//!   read has no room. Runners being removed in the same pass still count (their room frees
//!   in the next pass).
//! - Spread (the default): the candidate with room that carries the fewest of this pool's
//!   runners, ties by name. Pack: the first candidate with room, by name.
//! - What finds no member with room is the pool's shortfall: not created, reported, retried
//!   by a later pass; never forced onto a full member.
//! - On a standalone server there is nothing to choose: every creation is placed, without a
//!   target (a standalone server refuses one; a configured target is ignored there, as it
//!   always was, and the pass says so in its log).

use std::collections::HashMap;

use crate::demand::FleetPlan;
use crate::plan::Observed;
use crate::pool::{Placement, PlacementTarget, PoolName, PoolSpec, Strategy};
use crate::provider::Member;

/// How far a member's capacity may be promised to runners. OpenStack Nova's initial ratios:
/// CPU threads 4.0 (a runner rarely keeps its CPUs busy), memory 1.0 (memory cannot be
/// shared without the OOM killer stepping in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overcommit {
    pub cpu: f64,
    pub memory: f64,
}

impl Default for Overcommit {
    fn default() -> Self {
        Self {
            cpu: 4.0,
            memory: 1.0,
        }
    }
}

/// What one runner of a pool reserves on its member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    pub cpu: u32,
    pub memory_bytes: u64,
}

impl Demand {
    pub fn of(pool: &PoolSpec) -> Self {
        Self {
            cpu: pool.resources.cpu,
            memory_bytes: pool.resources.memory.bytes(),
        }
    }
}

/// Why some of a pool's creations found no member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// The target names no member of the cluster (or a group without members).
    NoMember,
    /// Every member the target allows is offline.
    Offline,
    /// No member the target allows has room for one more runner.
    Full,
}

impl Shortfall {
    /// A bounded label for metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoMember => "no_member",
            Self::Offline => "offline",
            Self::Full => "full",
        }
    }
}

/// Where one pool's creations go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolPlacement {
    /// One per creation placed: the `target` to create it with (`None`: the server chooses,
    /// on a standalone server without a target).
    pub targets: Vec<Option<String>>,
    /// Creations that found no member with room.
    pub shortfall: usize,
    /// Why, when `shortfall > 0`.
    pub reason: Option<Shortfall>,
}

impl PoolPlacement {
    /// Runners placed per member (cluster only), by name.
    pub fn per_member(&self) -> std::collections::BTreeMap<&str, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for target in self.targets.iter().flatten() {
            *counts.entry(target.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

/// One pool's creations to place.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub pool: &'a PoolName,
    pub demand: Demand,
    pub placement: &'a Placement,
    pub count: usize,
}

/// A member as placement sees it, with what this pass has promised so far.
struct Slot<'a> {
    member: &'a Member,
    /// CPU threads and memory bytes the runners may reserve in all; `None`: unknown (no room).
    limit: Option<(u64, u64)>,
    cpu: u64,
    memory: u64,
}

impl Slot<'_> {
    fn fits(&self, demand: Demand) -> bool {
        self.limit.is_some_and(|(cpu, memory)| {
            self.cpu + u64::from(demand.cpu) <= cpu
                && self.memory.saturating_add(demand.memory_bytes) <= memory
        })
    }
}

fn limit(member: &Member, overcommit: Overcommit) -> Option<(u64, u64)> {
    let capacity = member.capacity?;
    // Float to integer casts saturate (and NaN gives 0): a bad ratio never overflows.
    let cpu = (f64::from(capacity.cpus) * overcommit.cpu).floor() as u64;
    let memory = ((capacity.memory_bytes as f64) * overcommit.memory).floor() as u64;
    Some((cpu, memory.saturating_sub(capacity.memory_used_bytes)))
}

fn allows(target: Option<&PlacementTarget>, member: &Member) -> bool {
    match target {
        None => true,
        Some(PlacementTarget::Member(name)) => &member.name == name,
        Some(PlacementTarget::Group(group)) => member.groups.iter().any(|g| g == group),
    }
}

/// Places each request's creations on `members`, given the runners already there (`existing`:
/// each one's member, pool and reservation). The result is aligned with `requests`; requests
/// are served in order, so an earlier pool has the first pick of scarce room.
pub fn place<'a>(
    members: &[Member],
    existing: impl IntoIterator<Item = (&'a str, &'a PoolName, Demand)>,
    requests: &[Request<'_>],
    overcommit: Overcommit,
) -> Vec<PoolPlacement> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let index: HashMap<&str, usize> = sorted
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    let mut slots: Vec<Slot<'_>> = sorted
        .iter()
        .map(|member| Slot {
            member,
            limit: limit(member, overcommit),
            cpu: 0,
            memory: 0,
        })
        .collect();
    // This pass's pools' runners per member: what spread balances.
    let mut per_pool: HashMap<&PoolName, Vec<usize>> = requests
        .iter()
        .map(|r| (r.pool, vec![0; slots.len()]))
        .collect();
    for (member, pool, demand) in existing {
        let Some(&i) = index.get(member) else {
            continue;
        };
        slots[i].cpu += u64::from(demand.cpu);
        slots[i].memory = slots[i].memory.saturating_add(demand.memory_bytes);
        if let Some(counts) = per_pool.get_mut(pool) {
            counts[i] += 1;
        }
    }

    requests
        .iter()
        .map(|request| {
            let target = request.placement.target.as_ref();
            let candidates: Vec<usize> = (0..slots.len())
                .filter(|&i| allows(target, slots[i].member))
                .collect();
            let online: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| slots[i].member.online)
                .collect();
            let mut placed = PoolPlacement::default();
            let Some(counts) = per_pool.get_mut(request.pool) else {
                return placed;
            };
            for _ in 0..request.count {
                let fitting = online
                    .iter()
                    .copied()
                    .filter(|&i| slots[i].fits(request.demand));
                let chosen = match request.placement.strategy {
                    Strategy::Pack => fitting.min(),
                    Strategy::Spread => fitting.min_by_key(|&i| (counts[i], i)),
                };
                let Some(i) = chosen else {
                    break;
                };
                slots[i].cpu += u64::from(request.demand.cpu);
                slots[i].memory = slots[i].memory.saturating_add(request.demand.memory_bytes);
                counts[i] += 1;
                placed.targets.push(Some(slots[i].member.name.clone()));
            }
            placed.shortfall = request.count - placed.targets.len();
            if placed.shortfall > 0 {
                placed.reason = Some(if candidates.is_empty() {
                    Shortfall::NoMember
                } else if online.is_empty() {
                    Shortfall::Offline
                } else {
                    Shortfall::Full
                });
            }
            placed
        })
        .collect()
}

/// Places every pool's creations of `fleet` (aligned with `fleet.pools`). `pools`: the
/// configured pools (a draining pool creates nothing). On a standalone server
/// (`observed.members` is `None`) no creation gets a target.
pub fn place_fleet(
    fleet: &FleetPlan,
    observed: &Observed,
    pools: &[PoolSpec],
    overcommit: Overcommit,
) -> Vec<PoolPlacement> {
    let spec = |name: &PoolName| pools.iter().find(|p| &p.name == name);
    let default_placement = Placement::default();
    let Some(members) = &observed.members else {
        return fleet
            .pools
            .iter()
            .map(|p| PoolPlacement {
                targets: vec![None; p.plan.create],
                shortfall: 0,
                reason: None,
            })
            .collect();
    };
    let demands: HashMap<&PoolName, Demand> =
        pools.iter().map(|p| (&p.name, Demand::of(p))).collect();
    let existing = observed.instances.iter().filter_map(|i| {
        let member = i.location.as_ref()?.member.as_str();
        let demand = demands.get(&i.pool).copied().unwrap_or_default();
        Some((member, &i.pool, demand))
    });
    let requests: Vec<Request<'_>> = fleet
        .pools
        .iter()
        .map(|p| {
            let pool_spec = spec(&p.pool);
            Request {
                pool: &p.pool,
                demand: pool_spec.map(Demand::of).unwrap_or_default(),
                placement: pool_spec.map_or(&default_placement, |s| &s.placement),
                count: if pool_spec.is_some() {
                    p.plan.create
                } else {
                    0
                },
            }
        })
        .collect();
    place(members, existing, &requests, overcommit)
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
