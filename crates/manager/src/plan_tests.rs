//! Tests of the plan: readable table cases (one runner a line) and properties over generated observations.
use super::*;
use crate::model::Owner;
use proptest::prelude::*;

const GRACE: Duration = Duration::from_secs(300);
/// `young`: inside the boot grace period.
const YOUNG: Duration = Duration::from_secs(5);
/// `old`: past every grace period.
const OLD: Duration = Duration::from_secs(3600);

fn desired(quantity: usize) -> Desired {
    Desired::with_grace(quantity, GRACE)
}

fn name(n: u32) -> RunnerName {
    Owner::new("app", 0)
        .expect("valid")
        .parse_name(&format!("app-0-{n:08}"))
        .expect("valid name")
}

/// One runner of a fixture: its instance and its registration, either of which may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Runner {
    index: u32,
    instance: Option<Instance>,
    registration: Option<Registration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instance {
    status: InstanceStatus,
    probe: Probe,
    age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Registration {
    online: bool,
    busy: bool,
    offline_for: Duration,
}

/// Parses a fixture, one runner a line:
///
/// ```text
/// r0 running alive old   registered online idle
/// r1 stopping unknown young  unregistered
/// r2 no-instance         registered offline=1h busy
/// ```
///
/// - `r<n>` names the runner `app-0-<n>`; its registration id is `100 + n`;
/// - the instance is `no-instance`, or its status (`running`, `stopped`, `stopping`, `other`),
///   its probe (`alive`, `finished`, `dead`, `unknown`) and its age (`young`: 5 s, inside the
///   boot grace; `old`: an hour; or seconds, `300s`);
/// - the registration is `unregistered`, or `registered`, `online` or `offline` (for 0 s;
///   `offline=10s`, `offline=1h`: seen offline that long), and `idle` or `busy`.
fn parse(fixture: &str) -> Vec<Runner> {
    fixture
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(parse_runner)
        .collect()
}

fn parse_runner(line: &str) -> Runner {
    let words: Vec<&str> = line.split_whitespace().collect();
    let index = words[0]
        .strip_prefix('r')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}: a runner is named r<n>"));
    let (instance, rest) = match &words[1..] {
        ["no-instance", rest @ ..] => (None, rest),
        [status, probe, age, rest @ ..] => {
            let instance = Instance {
                status: match *status {
                    "running" => InstanceStatus::Running,
                    "stopped" => InstanceStatus::Stopped,
                    "stopping" => InstanceStatus::Stopping,
                    "other" => InstanceStatus::Other,
                    _ => panic!("{line:?}: unknown instance status {status:?}"),
                },
                probe: match *probe {
                    "alive" => Probe::Alive,
                    "finished" => Probe::Finished,
                    "dead" => Probe::Dead,
                    "unknown" => Probe::Unknown,
                    _ => panic!("{line:?}: unknown probe {probe:?}"),
                },
                age: parse_duration(line, age),
            };
            (Some(instance), rest)
        }
        _ => panic!("{line:?}: an instance is `no-instance` or `<status> <probe> <age>`"),
    };
    let registration = match rest {
        ["unregistered"] => None,
        ["registered", presence, activity] => {
            let (online, offline_for) = match presence.split_once('=') {
                _ if *presence == "online" => (true, Duration::ZERO),
                _ if *presence == "offline" => (false, Duration::ZERO),
                Some(("offline", d)) => (false, parse_duration(line, d)),
                _ => panic!("{line:?}: `online`, `offline` or `offline=<duration>`"),
            };
            let busy = match *activity {
                "idle" => false,
                "busy" => true,
                _ => panic!("{line:?}: a registration is `idle` or `busy`"),
            };
            Some(Registration {
                online,
                busy,
                offline_for,
            })
        }
        _ => panic!(
            "{line:?}: a registration is `unregistered` or `registered <online|offline> <idle|busy>`"
        ),
    };
    assert!(
        instance.is_some() || registration.is_some(),
        "{line:?}: a runner with neither an instance nor a registration"
    );
    Runner {
        index,
        instance,
        registration,
    }
}

/// `young`, `old`, `<n>s`, `<n>h`.
fn parse_duration(line: &str, word: &str) -> Duration {
    match word {
        "young" => YOUNG,
        "old" => OLD,
        _ => {
            let secs = |n: &str| n.parse::<u64>().ok();
            word.strip_suffix('s')
                .and_then(secs)
                .map(Duration::from_secs)
                .or_else(|| {
                    word.strip_suffix('h')
                        .and_then(secs)
                        .map(|h| Duration::from_secs(h * 3600))
                })
                .unwrap_or_else(|| panic!("{line:?}: unknown duration {word:?}"))
        }
    }
}

fn observe(runners: &[Runner]) -> Observed {
    let mut observed = Observed::default();
    for r in runners {
        if let Some(i) = r.instance {
            observed.instances.push(ObservedInstance {
                name: name(r.index),
                pool: PoolName::default_pool(),
                status: i.status,
                age: i.age,
                probe: i.probe,
                image: None,
                outdated: false,
                location: None,
            });
        }
        if let Some(reg) = r.registration {
            observed.registrations.push(ObservedRegistration {
                id: 100 + u64::from(r.index),
                name: name(r.index),
                pool: PoolName::default_pool(),
                online: reg.online,
                busy: reg.busy,
                offline_for: reg.offline_for,
            });
        }
    }
    observed
}

/// The plan as text: a `remove r<n> <reason>` line a removal, in name order, then
/// `create <n>, delta <n>`.
fn render(plan: &Plan) -> String {
    let mut lines: Vec<String> = plan
        .removals
        .iter()
        .map(|r| {
            let n: u32 = r.name.as_str()["app-0-".len()..]
                .parse()
                .expect("a fixture name");
            format!("remove r{n} {}", r.reason)
        })
        .collect();
    lines.push(format!("create {}, delta {}", plan.create, plan.delta));
    lines.join("\n")
}

/// Plans `fixture` (see [`parse`]) for `quantity` runners and compares the plan with
/// `expected` (see [`render`]; indentation and blank lines are ignored).
#[track_caller]
fn check(fixture: &str, quantity: usize, expected: &str) {
    let plan = plan(&observe(&parse(fixture)), &desired(quantity));
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        render(&plan),
        expected.join("\n"),
        "quantity {quantity}, fixture:\n{fixture}"
    );
}

#[test]
fn idle_runners_past_max_idle_age_are_recycled_busy_ones_never() {
    let fixture = "
        r0 running alive 7200s registered online idle
        r1 running alive 7200s registered online busy
        r2 running alive 60s   registered online idle
        r3 running alive 7200s registered offline idle
        ";
    let desired = Desired {
        max_idle_age: Some(Duration::from_secs(3600)),
        ..desired(4)
    };
    let plan = plan(&observe(&parse(fixture)), &desired);
    // r3 is offline: GitHub's word on it is not "idle", so it waits for the offline grace.
    assert_eq!(
        render(&plan),
        "remove r0 recycled\ncreate 1, delta 1",
        "{fixture}"
    );
    // Without the setting, nothing is recycled.
    check(fixture, 4, "create 0, delta 0");
}

#[test]
fn from_empty() {
    check("", 0, "create 0, delta 0");
    check("", 2, "create 2, delta 2");
}

#[test]
fn steady_state_plans_nothing() {
    check(
        "
        r0 running alive old  registered online idle
        r1 running alive old  registered online idle
        ",
        2,
        "create 0, delta 0",
    );
    check(
        "
        r0 running alive old  registered online idle
        r1 running alive old  registered online busy
        ",
        2,
        "create 0, delta 0",
    );
}

#[test]
fn scale_down_spares_busy() {
    check(
        "
        r0 running alive old  registered online busy
        r1 running alive old  registered online idle
        ",
        1,
        "
        remove r1 scale_down
        create 0, delta -1
        ",
    );
    check(
        "
        r0 running alive old  registered online busy
        r1 running alive old  registered online busy
        r2 running alive old  registered online idle
        ",
        1,
        "
        remove r2 scale_down
        create 0, delta -2
        ",
    );
    check(
        "
        r0 running alive old  registered online idle
        r1 running alive old  registered online idle
        r2 running alive old  registered online idle
        ",
        2,
        "
        remove r0 scale_down
        create 0, delta -1
        ",
    );
    check(
        "
        r0 running alive old  registered online busy
        r1 running alive old  registered online busy
        ",
        0,
        "create 0, delta -2",
    );
}

#[test]
fn scale_down_prefers_offline_idle() {
    check(
        "
        r0 running alive old  registered online idle
        r1 running alive old  registered offline=10s idle
        ",
        1,
        "
        remove r1 scale_down
        create 0, delta -1
        ",
    );
}

#[test]
fn finished_runners_are_removed_not_crashed() {
    check(
        "
        r0 running finished old  unregistered
        r1 running alive old     registered online idle
        ",
        2,
        "
        remove r0 finished
        create 1, delta 1
        ",
    );
    assert!(!Finished.is_crash() && ProcessDead.is_crash());
}

#[test]
fn dead_process_is_replaced_unless_busy() {
    check(
        "
        r0 running dead young  registered online idle
        r1 running alive old   registered online idle
        ",
        2,
        "
        remove r0 process_dead
        create 1, delta 1
        ",
    );
    check(
        "r0 running dead young  registered offline busy",
        1,
        "create 0, delta 0",
    );
}

#[test]
fn stopped_and_unresponsive_instances() {
    check(
        "r0 stopped unknown young  registered online idle",
        1,
        "
        remove r0 instance_not_running
        create 1, delta 1
        ",
    );
    // Young and not answering the probe: booting.
    check(
        "r0 running unknown young  unregistered",
        1,
        "create 0, delta 0",
    );
    // The probe failed, but GitHub hears from the runner: alive.
    check(
        "r0 running unknown old  registered online idle",
        1,
        "create 0, delta 0",
    );
    check(
        "r0 running unknown old  registered offline idle",
        1,
        "
        remove r0 unresponsive
        create 1, delta 1
        ",
    );
}

#[test]
fn live_unregistered_runners_are_orphans_at_any_age() {
    // run.sh starts only once registered: alive without a registration means deregistered
    // (an interrupted removal), young or not.
    for age in ["young", "old"] {
        check(
            &format!("r0 running alive {age}  unregistered"),
            1,
            "
            remove r0 orphan
            create 1, delta 1
            ",
        );
    }
    // Not started yet and not answering the probe: booting while young.
    check(
        "r0 running unknown young  unregistered",
        1,
        "create 0, delta 0",
    );
}

#[test]
fn instances_being_stopped_are_replaced_at_any_age() {
    // A stop or delete still running on the server (a killed pass's): going away.
    for age in ["young", "old"] {
        for probe in ["alive", "unknown"] {
            check(
                &format!("r0 stopping {probe} {age}  unregistered"),
                1,
                "
                remove r0 instance_not_running
                create 1, delta 1
                ",
            );
        }
    }
}

#[test]
fn dangling_registrations_are_deleted_unless_busy() {
    check(
        "r0 no-instance  registered offline idle",
        1,
        "
        remove r0 dangling
        create 1, delta 1
        ",
    );
    check(
        "r0 no-instance  registered online busy",
        1,
        "create 1, delta 1",
    );
}

#[test]
fn offline_live_runners_are_kept_until_offline_grace() {
    // upstream #281: healthy locally, offline on GitHub: keep.
    check(
        "r0 running alive old  registered offline=10s idle",
        1,
        "create 0, delta 0",
    );
    check(
        "r0 running alive old  registered offline=1h idle",
        1,
        "
        remove r0 offline
        create 1, delta 1
        ",
    );
}

#[test]
fn flush_spares_busy_unless_asked() {
    let observed = observe(&parse(
        "
        r0 running alive old  registered online idle
        r1 running alive old  registered online busy
        r2 no-instance        registered offline idle
        ",
    ));
    let idle: Vec<_> = plan_flush(&observed, false, GRACE)
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(idle, vec![name(0), name(2)]);
    let all = plan_flush(&observed, true, GRACE);
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].registration, Some(101));
    assert!(!all[2].has_instance);
}

#[test]
fn fixtures_parse_into_observations() {
    let runners = parse(
        "
        r3 stopping finished 300s  registered offline=2h busy
        r4 other dead young        unregistered
        r5 no-instance             registered online idle
        ",
    );
    assert_eq!(
        runners,
        [
            Runner {
                index: 3,
                instance: Some(Instance {
                    status: InstanceStatus::Stopping,
                    probe: Probe::Finished,
                    age: GRACE,
                }),
                registration: Some(Registration {
                    online: false,
                    busy: true,
                    offline_for: Duration::from_secs(7200),
                }),
            },
            Runner {
                index: 4,
                instance: Some(Instance {
                    status: InstanceStatus::Other,
                    probe: Probe::Dead,
                    age: YOUNG,
                }),
                registration: None,
            },
            Runner {
                index: 5,
                instance: None,
                registration: Some(Registration {
                    online: true,
                    busy: false,
                    offline_for: Duration::ZERO,
                }),
            },
        ]
    );
}

use RemovalReason::*;

/// Every instance status and probe, ages and offline times on both sides of each grace
/// period (and exactly at it).
fn arb_runner() -> impl Strategy<Value = (Option<Instance>, Option<Registration>)> {
    let status = prop_oneof![
        Just(InstanceStatus::Running),
        Just(InstanceStatus::Stopped),
        Just(InstanceStatus::Stopping),
        Just(InstanceStatus::Other)
    ];
    let probe = prop_oneof![
        Just(Probe::Alive),
        Just(Probe::Finished),
        Just(Probe::Dead),
        Just(Probe::Unknown)
    ];
    let around_grace = || prop_oneof![Just(YOUNG), Just(GRACE), Just(OLD)];
    let instance = proptest::option::of(
        (status, probe, around_grace()).prop_map(|(status, probe, age)| Instance {
            status,
            probe,
            age,
        }),
    );
    let registration = proptest::option::of(
        (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(Duration::ZERO), around_grace()],
        )
            .prop_map(|(online, busy, offline_for)| Registration {
                online,
                busy,
                offline_for,
            }),
    );
    (instance, registration).prop_filter("a runner exists somewhere", |(i, r)| {
        i.is_some() || r.is_some()
    })
}

fn arb_runners() -> impl Strategy<Value = Vec<Runner>> {
    proptest::collection::vec(arb_runner(), 0..12).prop_map(|runners| {
        runners
            .into_iter()
            .zip(0..)
            .map(|((instance, registration), index)| Runner {
                index,
                instance,
                registration,
            })
            .collect()
    })
}

/// What the world looks like after a plan is carried out exactly.
fn apply(observed: &Observed, plan: &Plan) -> Observed {
    let removed: BTreeSet<&RunnerName> = plan.removals.iter().map(|r| &r.name).collect();
    let mut next = observed.without(&removed);
    for k in 0..plan.create {
        let n = name(10_000 + k as u32);
        next.instances.push(ObservedInstance {
            name: n.clone(),
            pool: PoolName::default_pool(),
            status: InstanceStatus::Running,
            age: Duration::from_secs(1),
            probe: Probe::Alive,
            image: None,
            outdated: false,
            location: None,
        });
        next.registrations.push(ObservedRegistration {
            id: 10_000 + k as u64,
            name: n,
            pool: PoolName::default_pool(),
            online: true,
            busy: false,
            offline_for: Duration::ZERO,
        });
    }
    next
}

proptest! {
    #[test]
    fn never_removes_busy(runners in arb_runners(), quantity in 0usize..8) {
        let observed = observe(&runners);
        let busy: BTreeSet<&RunnerName> =
            observed.registrations.iter().filter(|r| r.busy).map(|r| &r.name).collect();
        let plan = plan(&observed, &desired(quantity));
        for removal in &plan.removals {
            prop_assert!(!busy.contains(&removal.name), "plans removal of busy {}", removal.name);
        }
    }

    #[test]
    fn never_exceeds_quantity_except_busy(runners in arb_runners(), quantity in 0usize..8) {
        let observed = observe(&runners);
        let plan = plan(&observed, &desired(quantity));
        // Busy runners, and booting instances GitHub does not know yet, are never scaled down.
        let registered: BTreeSet<&RunnerName> =
            observed.registrations.iter().map(|r| &r.name).collect();
        let protected = plan
            .states
            .iter()
            .filter(|(name, s)| {
                **s == RunnerState::Busy
                    || (**s == RunnerState::Booting && !registered.contains(name))
            })
            .count();
        let kept = plan.healthy() - plan.removals.iter().filter(|r| r.reason == ScaleDown).count();
        prop_assert_eq!(kept + plan.create, quantity.max(protected));
    }

    #[test]
    fn planning_is_idempotent(runners in arb_runners(), quantity in 0usize..8) {
        let observed = observe(&runners);
        let d = desired(quantity);
        let first = plan(&observed, &d);
        let second = plan(&apply(&observed, &first), &d);
        prop_assert!(second.is_empty(), "second plan {:?}", second);
    }

    #[test]
    fn only_touches_observed_runners(runners in arb_runners(), quantity in 0usize..8) {
        let observed = observe(&runners);
        let known: BTreeSet<&RunnerName> = observed.instances.iter().map(|i| &i.name)
            .chain(observed.registrations.iter().map(|r| &r.name)).collect();
        for removal in plan(&observed, &desired(quantity)).removals {
            prop_assert!(known.contains(&removal.name));
        }
    }

    #[test]
    fn every_stopping_instance_is_replaced_unless_busy(runners in arb_runners(), quantity in 0usize..8) {
        let observed = observe(&runners);
        let plan = plan(&observed, &desired(quantity));
        for runner in &runners {
            let stopping = runner.instance.is_some_and(|i| i.status == InstanceStatus::Stopping);
            let busy = runner.registration.is_some_and(|r| r.busy);
            if stopping && !busy {
                prop_assert_eq!(
                    plan.states.get(&name(runner.index)),
                    Some(&RunnerState::Remove(InstanceNotRunning))
                );
            }
        }
    }
}
