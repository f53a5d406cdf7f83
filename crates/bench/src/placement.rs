//! The plan's cost on a cluster: N = 10,000 runners over 50 members (SIMULATION).
//!
//! The fleet lives in the labelled simulation provider (`manager::sim_provider`, with simulated
//! members: name, status, capacity, each instance's member). Each measured pass does the CPU
//! work of a pass on a cluster without its IO waits: the provider's instance and member lists
//! turned into the observation (ownership, names, each instance's member and its state), then
//! `demand::plan_fleet` (classification and every pool's plan) and `placement::place_fleet`
//! (a member for every creation). GitHub's side is synthetic (one idle, online registration per
//! runner), as the HTTP cost of listing 10,000 registrations is the GitHub client's, measured
//! by `scale-overhead` and `api-cost`.
//!
//! Scenarios: `steady` (nothing to do), `member-down` (one member offline: its runners are lost
//! and replaced on the others), `grow-spread` and `grow-pack` (1,000 more runners placed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use manager::demand::{plan_fleet, FleetPlan};
use manager::placement::{place_fleet, Overcommit, PoolPlacement};
use manager::plan::{
    Desired, Location, MemberState, Observed, ObservedInstance, ObservedRegistration, Probe,
};
use manager::pool::{Placement, PoolName, PoolSpec, Strategy};
use manager::provider::{offline_members, Capacity, InstanceProvider, InstanceStatus, Member};
use manager::sim_provider::{SimLatency, SimProvider};
use manager::{InstanceType, Owner, RegistrationMode, Resources};

/// What the issue asks of a pass at this scale.
pub const CPU_TARGET: Duration = Duration::from_millis(100);

/// One scenario's cost.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub runners: usize,
    pub members: usize,
    /// CPU time of one pass (this process), averaged over the passes.
    pub cpu: Duration,
    pub wall: Duration,
    pub lost: usize,
    pub placed: usize,
    pub shortfall: usize,
    /// Placed runners per member: the most and the fewest over the online members.
    pub spread: (usize, usize),
}

fn member(i: usize) -> Member {
    Member {
        name: format!("m{i:02}"),
        online: true,
        message: String::new(),
        groups: vec!["default".to_owned()],
        capacity: Some(Capacity {
            cpus: 64,
            memory_bytes: 512 << 30,
            memory_used_bytes: 8 << 30,
        }),
    }
}

fn pool(quantity: usize, strategy: Strategy) -> anyhow::Result<PoolSpec> {
    Ok(PoolSpec::single(
        "busybox",
        InstanceType::Container,
        Resources::new(1, "1GiB", "2GiB")?,
        Vec::new(),
        RegistrationMode::Token,
        quantity,
    )
    .with_placement(Placement {
        strategy,
        target: None,
    }))
}

/// The fleet: `runners` owned instances spread evenly over `members` simulated members.
pub fn fleet(owner: &Owner, runners: usize, members: usize) -> SimProvider {
    let provider = SimProvider::new(SimLatency::default(), None)
        .with_members((0..members).map(member).collect());
    for i in 0..runners {
        let name = owner.new_runner_name();
        provider.add_instance(
            name.as_str(),
            owner.config_keys(),
            Duration::from_secs(3600),
        );
        provider.set_location(name.as_str(), &format!("m{:02}", i % members));
    }
    provider
}

/// The observation a pass builds from the provider's lists (what `observe` does, minus probes:
/// every runner is online on GitHub, so none is probed).
async fn observe(provider: &SimProvider, owner: &Owner) -> anyhow::Result<Observed> {
    let instances = provider.list_instances(owner).await?;
    let members = provider.cluster_members().await?;
    let offline = offline_members(members.as_deref());
    let mut observed = Observed::default();
    for (id, i) in instances.iter().enumerate() {
        if !owner.owns_instance(&i.name, &i.config) {
            continue;
        }
        let Some(name) = owner.parse_name(&i.name) else {
            continue;
        };
        let location = i.location.as_deref().map(|m| Location {
            member: m.to_owned(),
            state: if offline.contains(m) {
                MemberState::Offline
            } else {
                MemberState::Online
            },
        });
        observed.registrations.push(ObservedRegistration {
            id: id as u64,
            name: name.clone(),
            pool: PoolName::default_pool(),
            online: true,
            busy: false,
            offline_for: Duration::ZERO,
        });
        observed.instances.push(ObservedInstance {
            name,
            pool: PoolName::of_instance(&i.config),
            status: InstanceStatus::Running,
            age: Duration::from_secs(3600),
            probe: Probe::Alive,
            image: None,
            outdated: false,
            location,
        });
    }
    observed.members = members;
    Ok(observed)
}

fn plan(observed: &Observed, pools: &[PoolSpec]) -> (FleetPlan, Vec<PoolPlacement>) {
    let tolerances = Desired {
        quantity: 0,
        boot_grace: Duration::from_secs(300),
        offline_grace: Duration::from_secs(300),
        max_idle_age: None,
    };
    let demands: Vec<_> = pools.iter().map(|p| p.demand("bench")).collect();
    let fleet = plan_fleet(
        observed,
        &demands,
        &[],
        &tolerances,
        Duration::from_secs(600),
        time::OffsetDateTime::now_utc(),
    );
    let placed = place_fleet(&fleet, observed, pools, Overcommit::default());
    (fleet, placed)
}

/// Runs every scenario `passes` times over `runners` runners on `members` members.
pub async fn run(runners: usize, members: usize, passes: u32) -> anyhow::Result<Vec<Row>> {
    let owner = Owner::new("bench", 0)?;
    let provider = fleet(&owner, runners, members);
    let scenarios: [(&'static str, usize, Strategy, bool); 4] = [
        ("steady", runners, Strategy::Spread, false),
        ("member-down", runners, Strategy::Spread, true),
        (
            "grow-spread",
            runners + runners / 10,
            Strategy::Spread,
            false,
        ),
        ("grow-pack", runners + runners / 10, Strategy::Pack, false),
    ];
    let mut rows = Vec::new();
    for (scenario, quantity, strategy, down) in scenarios {
        let last = format!("m{:02}", members - 1);
        provider.set_member_online(&last, !down);
        let pools = [pool(quantity, strategy)?];
        // One pass to warm up, then the measured ones.
        let (mut fleet, mut placed) = plan(&observe(&provider, &owner).await?, &pools);
        let cpu_before = crate::measure::process_cpu();
        let started = Instant::now();
        for _ in 0..passes {
            let observed = observe(&provider, &owner).await?;
            (fleet, placed) = plan(&observed, &pools);
        }
        let cpu = (crate::measure::process_cpu() - cpu_before) / passes;
        let wall = started.elapsed() / passes;
        let lost = fleet
            .pools
            .iter()
            .flat_map(|p| p.plan.states.values())
            .filter(|s| matches!(s, manager::plan::RunnerState::Lost { .. }))
            .count();
        let mut per_member: BTreeMap<String, usize> = (0..members)
            .map(|i| format!("m{i:02}"))
            .filter(|m| !(down && *m == last))
            .map(|m| (m, 0))
            .collect();
        for p in &placed {
            for (m, n) in p.per_member() {
                *per_member.entry(m.to_owned()).or_default() += n;
            }
        }
        rows.push(Row {
            scenario,
            runners,
            members,
            cpu,
            wall,
            lost,
            placed: placed.iter().map(|p| p.targets.len()).sum(),
            shortfall: placed.iter().map(|p| p.shortfall).sum(),
            spread: (
                per_member.values().copied().max().unwrap_or(0),
                per_member.values().copied().min().unwrap_or(0),
            ),
        });
    }
    provider.set_member_online(&format!("m{:02}", members - 1), true);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_small_fleet_places_as_the_scenarios_say() {
        let rows = super::run(300, 3, 1).await.expect("runs");
        let row = |s: &str| rows.iter().find(|r| r.scenario == s).expect("row").clone();
        assert_eq!((row("steady").placed, row("steady").lost), (0, 0));
        let down = row("member-down");
        assert_eq!((down.lost, down.placed, down.shortfall), (100, 100, 0));
        assert_eq!(down.spread, (50, 50));
        let grow = row("grow-spread");
        assert_eq!((grow.placed, grow.spread), (30, (10, 10)));
        let pack = row("grow-pack");
        assert_eq!((pack.placed, pack.spread), (30, (30, 0)));
    }
}
