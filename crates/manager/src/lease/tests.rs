//! The pure lease logic: decisions step by step, and a property over simulated managers that
//! share a store whose conditional write is *not* atomic (as LXD's: the ETag is compared, then
//! the row written), with random request delays, timeouts, late-applied writes and frozen
//! managers (SIGSTOP): two managers never act at the same time, and a standby takes over within
//! two lease periods of the holder's death.

use std::time::{Duration, Instant};

use std::sync::Arc;

use async_trait::async_trait;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn timing() -> LeaseTiming {
    LeaseTiming::new(Duration::from_secs(3), Duration::from_secs(1)).expect("valid timing")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn stored(record: &LeaseRecord, version: &str) -> Result<Option<Stored>, ()> {
    Ok(Some(Stored {
        record: Some(record.clone()),
        version: Version(version.to_owned()),
    }))
}

/// `holder`'s record with a 3 s lease.
fn held_by(holder: &str, generation: u64, seq: u64) -> LeaseRecord {
    LeaseRecord {
        holder: holder.into(),
        generation,
        seq,
        duration: Duration::from_secs(3),
    }
}

fn other(generation: u64, seq: u64) -> LeaseRecord {
    held_by("other", generation, seq)
}

#[test]
fn timing_is_derived_and_checked() {
    let t = timing();
    assert_eq!(t.margin, ms(750));
    assert_eq!(t.request_timeout, ms(500));
    assert_eq!(t.poll, ms(500));
    assert!(
        t.request_timeout < t.margin,
        "a counted write lands within the margin"
    );
    assert!(t.settle >= t.request_timeout);
    assert_eq!(t.settle, ms(1000));
    assert!(LeaseTiming::new(ms(500), ms(100)).is_err());
    assert!(LeaseTiming::new(Duration::from_secs(3), ms(1600)).is_err());
    assert!(LeaseTiming::new(Duration::from_secs(3), Duration::ZERO).is_err());
}

#[test]
fn the_record_round_trips_through_keys_and_garbage_is_no_record() {
    let r = other(7, 42);
    assert_eq!(LeaseRecord::from_keys(&r.to_keys()), Some(r.clone()));
    let mut keys = r.to_keys();
    keys.insert(KEY_GENERATION.into(), "x".into());
    assert_eq!(LeaseRecord::from_keys(&keys), None);
    keys.remove(KEY_GENERATION);
    assert_eq!(LeaseRecord::from_keys(&keys), None);
}

/// A fresh store: watch "no record" for a lease, create, settle, read back, act.
#[test]
fn first_manager_creates_after_a_lease_then_acts_after_the_settle_read() {
    let t0 = Instant::now();
    let mut l = LeaseLogic::new("me", timing(), t0);
    assert_eq!(l.next(t0), Next::Read);
    assert_eq!(l.on_read(t0, t0 + ms(5), Ok(None)), None);
    // Not yet: reads until a read sent a lease after the first answer.
    let mut now = t0 + ms(5);
    let next = watch(&mut l, &mut now, ms(5), None, || Ok(None));
    let Some(Next::Create(claim)) = next else {
        panic!("unexpected {next:?}")
    };
    assert!(now >= t0 + ms(5) + Duration::from_secs(3), "waited a lease");
    assert_eq!(claim.holder, "me");
    assert_eq!(claim.generation, 1);
    assert_eq!(l.role(now), Role::Standby);
    assert!(l.on_write(now, now + ms(10), WriteResult::Done).is_none());
    let claimed = now;
    now += ms(10);
    // Settles before reading back.
    let Next::SleepUntil(read_at) = l.next(now) else {
        panic!("expected the settle pause")
    };
    assert!(read_at >= now + timing().settle);
    now = read_at;
    assert_eq!(l.next(now), Next::Read);
    let t = l
        .on_read(now, now + ms(5), stored(&claim, "v1"))
        .expect("a transition");
    assert_eq!(t.role, Role::Active);
    assert_eq!(t.reason, "acquired");
    let term = l.term(now + ms(5)).expect("acting");
    assert_eq!(term.generation, 1);
    assert_eq!(
        term.valid_until,
        claimed + Duration::from_secs(3) - ms(750),
        "the tenure counts from the claim's send"
    );
}

/// A standby's steps from `now`: each read takes `read_takes` and gets `answer()` (and changes
/// no role), each pause is slept, until `l` asks for anything else (returned) or `until` comes
/// (`None`).
fn watch(
    l: &mut LeaseLogic,
    now: &mut Instant,
    read_takes: Duration,
    until: Option<Instant>,
    mut answer: impl FnMut() -> Result<Option<Stored>, ()>,
) -> Option<Next> {
    while until.is_none_or(|until| *now < until) {
        match l.next(*now) {
            Next::Read => {
                let transition = l.on_read(*now, *now + read_takes, answer());
                assert!(transition.is_none(), "{transition:?}");
                *now += read_takes;
            }
            Next::SleepUntil(at) => *now = at.max(*now + ms(1)),
            next => return Some(next),
        }
    }
    None
}

/// A holder that renews keeps a follower away; once it stops, the follower claims with the
/// next generation at the version it watched.
#[test]
fn a_follower_waits_while_the_record_changes_and_claims_once_it_stops() {
    let t0 = Instant::now();
    let mut l = LeaseLogic::new("me", timing(), t0);
    let mut now = t0;
    let mut seq = 0;
    // 10 s of renewals every second: never a claim.
    let renewing = || {
        seq += 1;
        stored(&other(3, seq), &format!("v{seq}"))
    };
    let ten_s = Some(t0 + Duration::from_secs(10));
    let next = watch(&mut l, &mut now, ms(5), ten_s, renewing);
    assert_eq!(next, None, "a follower of a live holder claimed");
    // The holder stops: the version last read (first seen when that read answered) stays.
    let last = format!("v{seq}");
    let stopped = now - ms(5).min(now - t0);
    let stopped = stopped.min(now);
    let next = watch(&mut l, &mut now, ms(5), None, || {
        stored(&other(3, seq), &last)
    });
    let Some(Next::Write(claim, version)) = next else {
        panic!("unexpected {next:?}")
    };
    assert_eq!(
        version,
        Version(last.clone()),
        "the claim is at the watched version"
    );
    assert_eq!(claim.generation, 4);
    assert!(
        now + Duration::from_secs(1) >= stopped + Duration::from_secs(3),
        "{:?}",
        now - stopped
    );
    assert!(
        now <= stopped + Duration::from_secs(5),
        "no later than needed: {:?}",
        now - stopped
    );
}

/// A holder announcing a longer lease is waited for that long.
#[test]
fn the_longer_of_the_two_leases_is_waited_for() {
    let t0 = Instant::now();
    let mut l = LeaseLogic::new("me", timing(), t0);
    let long = LeaseRecord {
        duration: Duration::from_secs(20),
        ..other(1, 1)
    };
    l.on_read(t0, t0, stored(&long, "v"));
    let mut now = t0;
    let nineteen_s = Some(t0 + Duration::from_secs(19));
    let next = watch(&mut l, &mut now, Duration::ZERO, nineteen_s, || {
        stored(&long, "v")
    });
    assert_eq!(next, None, "claimed before the holder's own lease");
}

/// Two claims at one version may both be written (the server compares, then writes): the one
/// whose claim is read back acts, the other does not.
#[test]
fn of_two_claims_only_the_one_read_back_acts() {
    let t0 = Instant::now();
    let mk = |me: &str| {
        let mut l = LeaseLogic::new(me, timing(), t0);
        l.on_read(t0, t0, stored(&other(1, 1), "v1"));
        let at = t0 + Duration::from_secs(3);
        l.on_read(at, at, stored(&other(1, 1), "v1"));
        l
    };
    let mut a = mk("a");
    let mut b = mk("b");
    let at = t0 + Duration::from_secs(3);
    let Next::Write(claim_a, _) = a.next(at) else {
        panic!("a claims")
    };
    let Next::Write(claim_b, _) = b.next(at) else {
        panic!("b claims")
    };
    a.on_write(at, at + ms(5), WriteResult::Done);
    b.on_write(at, at + ms(6), WriteResult::Done);
    // b's write landed last.
    let read = at + ms(700);
    assert!(a.on_read(read, read, stored(&claim_b, "v3")).is_none());
    let t = b
        .on_read(read, read, stored(&claim_b, "v3"))
        .expect("b acquires");
    assert_eq!(t.role, Role::Active);
    assert_eq!(a.role(read), Role::Standby);
    assert_ne!(claim_a, claim_b);
}

/// The holder renews from the send time; a failed renewal keeps the old term, which then runs
/// out; a renewal answered after the request timeout does not count.
#[test]
fn a_holder_stops_acting_when_renewals_fail() {
    let t0 = Instant::now();
    let mut l = LeaseLogic::new("me", timing(), t0);
    let claim = held_by("me", 1, 0);
    l.state = State::ReadyToClaim {
        claim: claim.clone(),
        seen: Seen {
            version: None,
            record: None,
            since: t0,
        },
    };
    l.on_write(t0, t0 + ms(5), WriteResult::Done);
    let read = t0 + ms(700);
    assert!(l.on_read(read, read, stored(&claim, "v1")).is_some());
    // First renewal at +1 s: done.
    let at = t0 + Duration::from_secs(1);
    assert!(matches!(l.next(at), Next::Write(..)));
    l.on_write(at, at + ms(10), WriteResult::Done);
    assert_eq!(l.term(at).map(|t| t.valid_until), Some(at + ms(2250)));
    let renewed = at;
    // Read back the new version, then every renewal fails or is late.
    let mut renewed_rec = claim.clone();
    renewed_rec.seq = 1;
    l.on_read(at + ms(10), at + ms(20), stored(&renewed_rec, "v2"));
    let mut now = at + ms(20);
    let mut transition = None;
    while transition.is_none() {
        match l.next(now) {
            Next::SleepUntil(until) => now = until,
            Next::Write(..) => {
                // Late: answered 700 ms after it was sent (> 500 ms).
                transition = l.on_write(now, now + ms(700), WriteResult::Done);
                now += ms(700);
            }
            Next::Read => {
                transition = l.on_read(now, now, Err(()));
            }
            other => panic!("unexpected {other:?}"),
        }
        if l.role(now) == Role::Active {
            assert!(now < renewed + ms(2250));
        }
    }
    let t = transition.expect("a transition");
    assert_eq!((t.role, t.reason), (Role::Standby, "expired"));
    assert!(now >= renewed + ms(2250));
    assert_eq!(l.role(now), Role::Standby);
}

/// A holder that reads someone else's record steps down at once.
#[test]
fn a_holder_that_sees_another_holder_steps_down() {
    let t0 = Instant::now();
    let mut l = LeaseLogic::new("me", timing(), t0);
    let mine = held_by("me", 2, 5);
    l.state = State::Holding {
        record: mine,
        version: Some(Version("v".into())),
        renewed: t0,
        next_write: t0 + Duration::from_secs(1),
        read_at: t0,
    };
    let at = t0 + Duration::from_secs(1);
    l.on_write(at, at + ms(5), WriteResult::Changed);
    assert_eq!(l.next(at + ms(5)), Next::Read);
    let t = l
        .on_read(at + ms(5), at + ms(10), stored(&other(3, 0), "w"))
        .expect("steps down");
    assert_eq!((t.role, t.reason), (Role::Standby, "taken_over"));
    assert_eq!(l.term(at + ms(10)), None);
    assert_eq!(l.holder().map(|r| r.holder.as_str()), Some("other"));
}

// ------------------------------------------------------------------------ the simulated world

/// The store as LXD behaves: a write's ETag check and its write happen at two instants.
#[derive(Debug, Default)]
struct Server {
    record: Option<(LeaseRecord, u64)>,
    versions: u64,
}

#[derive(Debug, Clone)]
enum Req {
    Read,
    Create(LeaseRecord),
    Write(LeaseRecord, Version),
}

#[derive(Debug, Clone)]
struct Flight {
    req: Req,
    sent: u64,
    /// The server checks here…
    arrive: u64,
    /// …and writes here (non-atomic).
    apply: u64,
    /// The answer reaches the manager here (if it has not given up).
    answer: u64,
    checked: Option<bool>,
    /// The manager gives up then (its timeout for this call).
    timeout: u64,
    result: Option<Result<Option<Stored>, ()>>,
    wresult: Option<WriteResult>,
}

struct Node {
    logic: LeaseLogic,
    flight: Option<Flight>,
    wake: u64,
    paused_until: u64,
    dead: bool,
}

const TIMEOUT_MS: u64 = 500;

/// Runs `managers` for `duration_ms` of simulated time with a random schedule; returns the
/// worst takeover (death of the holder → another acts) in ms, and asserts mutual exclusion at
/// every millisecond.
fn simulate(seed: u64, managers: usize, duration_ms: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = Instant::now();
    let at = |t: u64| base + Duration::from_millis(t);
    let mut server = Server::default();
    let mut nodes: Vec<Node> = (0..managers)
        .map(|i| Node {
            logic: LeaseLogic::new(format!("m{i}"), timing(), base),
            flight: None,
            wake: rng.random_range(0..500),
            paused_until: 0,
            dead: false,
        })
        .collect();
    let mut takeovers = Vec::new();
    let mut died_at: Option<u64> = None;
    for t in 0..duration_ms {
        // The server side of requests in flight (also of paused managers).
        for node in &mut nodes {
            let Some(f) = &mut node.flight else { continue };
            if f.checked.is_none() && t >= f.arrive {
                let current = server.record.as_ref().map(|(_, v)| *v);
                match &f.req {
                    Req::Read => {
                        f.checked = Some(true);
                        f.result = Some(Ok(server.record.as_ref().map(|(r, v)| Stored {
                            record: Some(r.clone()),
                            version: Version(v.to_string()),
                        })));
                    }
                    Req::Create(_) => f.checked = Some(current.is_none()),
                    Req::Write(_, expected) => {
                        f.checked = Some(current.map(|v| v.to_string()) == Some(expected.0.clone()))
                    }
                }
            }
            if f.checked == Some(true) && f.wresult.is_none() && t >= f.apply {
                match &f.req {
                    Req::Read => {}
                    Req::Create(r) | Req::Write(r, _) => {
                        // Creation is atomic: a second one at the same instant fails.
                        if matches!(f.req, Req::Create(_)) && server.record.is_some() {
                            f.wresult = Some(WriteResult::Changed);
                            continue;
                        }
                        server.versions += 1;
                        server.record = Some((r.clone(), server.versions));
                    }
                }
                f.wresult = Some(WriteResult::Done);
            } else if f.checked == Some(false) && f.wresult.is_none() {
                f.wresult = Some(WriteResult::Changed);
            }
        }
        // The managers.
        for node in nodes.iter_mut() {
            if node.dead || t < node.paused_until {
                continue;
            }
            if let Some(f) = node.flight.clone() {
                let gave_up = t >= f.sent + f.timeout && t < f.answer;
                if t >= f.answer || gave_up {
                    node.flight = None;
                    let answered = at(t);
                    match f.req {
                        Req::Read => {
                            let result = if gave_up {
                                Err(())
                            } else {
                                f.result.unwrap_or(Err(()))
                            };
                            node.logic.on_read(at(f.sent), answered, result);
                        }
                        _ => {
                            let result = if gave_up {
                                WriteResult::Failed
                            } else {
                                f.wresult.unwrap_or(WriteResult::Failed)
                            };
                            node.logic.on_write(at(f.sent), answered, result);
                        }
                    }
                    node.wake = t;
                }
                continue;
            }
            if t < node.wake {
                continue;
            }
            node.logic.expire(at(t));
            let next = node.logic.next(at(t));
            let timeout = match next {
                Next::Read => TIMEOUT_MS,
                _ => u64::try_from(node.logic.write_timeout().as_millis()).unwrap_or(u64::MAX),
            };
            let req = match next {
                Next::SleepUntil(until) => {
                    node.wake = u64::try_from(until.saturating_duration_since(base).as_millis())
                        .unwrap_or(u64::MAX)
                        .max(t + 1);
                    continue;
                }
                Next::Read => Req::Read,
                Next::Create(r) => Req::Create(r),
                Next::Write(r, v) => Req::Write(r, v),
            };
            // Mostly quick, sometimes slow, now and then beyond the timeout.
            let slow = rng.random_range(0..100);
            let (to, back) = match slow {
                0..=79 => (rng.random_range(1..20), rng.random_range(1..20)),
                80..=94 => (rng.random_range(20..300), rng.random_range(20..300)),
                _ => (rng.random_range(300..1500), rng.random_range(1..900)),
            };
            let arrive = t + to;
            node.flight = Some(Flight {
                req,
                sent: t,
                arrive,
                apply: arrive + rng.random_range(0..15),
                answer: arrive + back + 15,
                checked: None,
                timeout,
                result: None,
                wresult: None,
            });
        }
        // Chaos: freeze or kill the holder now and then; bring dead ones back as new managers.
        if t % 50 == 0 {
            for (i, node) in nodes.iter_mut().enumerate() {
                let acting = node.logic.term(at(t)).is_some();
                let roll = rng.random_range(0..1000);
                if acting && roll < 25 && !node.dead && t >= node.paused_until {
                    // Most freezes end around when a standby could take over.
                    node.paused_until = t + if rng.random_bool(0.7) {
                        rng.random_range(1_500..3_500)
                    } else {
                        rng.random_range(100..8_000)
                    };
                } else if acting && roll < 30 && !node.dead && t >= node.paused_until {
                    node.dead = true;
                    died_at = Some(t);
                } else if node.dead && roll < 30 {
                    *node = Node {
                        logic: LeaseLogic::new(format!("m{i}-{t}"), timing(), at(t)),
                        flight: None,
                        wake: t,
                        paused_until: 0,
                        dead: false,
                    };
                }
            }
        }
        // Mutual exclusion: of the managers able to act now, at most one holds a term.
        let acting: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.dead && t >= n.paused_until && n.logic.term(at(t)).is_some())
            .map(|(i, _)| i)
            .collect();
        assert!(
            acting.len() <= 1,
            "seed {seed}: managers {acting:?} act together at {t} ms"
        );
        if let (Some(died), Some(_)) = (died_at, acting.first()) {
            takeovers.push(t - died);
            died_at = None;
        }
    }
    takeovers
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn never_two_acting_managers(seed in any::<u64>(), managers in 2usize..4) {
        let takeovers = simulate(seed, managers, 120_000);
        // A live standby takes over within two lease periods unless a standby was itself
        // frozen or its requests failed: most takeovers are that quick.
        if takeovers.len() >= 4 {
            let quick = takeovers.iter().filter(|t| **t <= 6_000).count();
            prop_assert!(quick * 2 >= takeovers.len(), "seed {}: {:?}", seed, takeovers);
        }
    }
}

/// An atomic store's answer to a write whose condition is `ok`: the record at a new version.
fn write_if(
    ok: bool,
    store: &mut Option<(LeaseRecord, u64)>,
    version: &mut u64,
    record: LeaseRecord,
) -> WriteResult {
    if !ok {
        return WriteResult::Changed;
    }
    *version += 1;
    *store = Some((record, *version));
    WriteResult::Done
}

/// With two managers and no frozen standby, a takeover after the holder's death takes at most
/// two lease periods.
#[test]
fn a_standby_takes_over_within_two_leases_of_a_death() {
    let t0 = Instant::now();
    let mut a = LeaseLogic::new("a", timing(), t0);
    let mut b = LeaseLogic::new("b", timing(), t0);
    let mut store: Option<(LeaseRecord, u64)> = None;
    let mut version = 0u64;
    let mut died: Option<u64> = None;
    let mut a_dead = false;
    for t in 0..60_000u64 {
        let now = t0 + ms(t);
        for (i, l) in [&mut a, &mut b].into_iter().enumerate() {
            if i == 0 && a_dead {
                continue;
            }
            l.expire(now);
            match l.next(now) {
                Next::SleepUntil(_) => {}
                Next::Read => {
                    let found = store.as_ref().map(|(r, v)| Stored {
                        record: Some(r.clone()),
                        version: Version(v.to_string()),
                    });
                    l.on_read(now, now + ms(1), Ok(found));
                }
                Next::Create(r) => {
                    let ok = store.is_none();
                    let result = write_if(ok, &mut store, &mut version, r);
                    l.on_write(now, now + ms(1), result);
                }
                Next::Write(r, v) => {
                    let ok = store.as_ref().map(|(_, v)| v.to_string()) == Some(v.0.clone());
                    let result = write_if(ok, &mut store, &mut version, r);
                    l.on_write(now, now + ms(1), result);
                }
            }
        }
        if t == 20_000 {
            assert_eq!(a.role(now), Role::Active, "a, first, holds the lease");
            a_dead = true;
            died = Some(t);
        }
        if let Some(d) = died {
            if b.role(now) == Role::Active {
                let took = t - d;
                assert!(took <= 6_000, "took {took} ms");
                // Counted from the last renewal b saw land, which came up to a renewal period
                // before the death.
                assert!(took >= 1_900, "not before a lease: {took} ms");
                return;
            }
        }
    }
    panic!("b never took over");
}

// ------------------------------------------------------------ the keeper and the fence, live

/// A store in memory, atomic; enough to drive two [`Keeper`]s on the real clock.
#[derive(Default)]
struct MemStore {
    record: parking_lot::Mutex<Option<(LeaseRecord, u64)>>,
}

#[async_trait]
impl LeaseStore for MemStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn read(&self) -> Result<Option<Stored>, LeaseStoreError> {
        Ok(self.record.lock().as_ref().map(|(r, v)| Stored {
            record: Some(r.clone()),
            version: Version(v.to_string()),
        }))
    }

    async fn create(&self, record: &LeaseRecord) -> Result<(), LeaseStoreError> {
        let mut current = self.record.lock();
        if current.is_some() {
            return Err(LeaseStoreError::Changed("exists".into()));
        }
        *current = Some((record.clone(), 1));
        Ok(())
    }

    async fn write(&self, record: &LeaseRecord, expected: &Version) -> Result<(), LeaseStoreError> {
        let mut current = self.record.lock();
        match current.as_ref() {
            Some((_, v)) if v.to_string() == expected.0 => {
                let next = v + 1;
                *current = Some((record.clone(), next));
                Ok(())
            }
            _ => Err(LeaseStoreError::Changed("stale".into())),
        }
    }
}

async fn wait_for(what: &str, within: Duration, f: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "{what} not within {within:?}");
        tokio::time::sleep(ms(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepers_hand_over_and_the_fence_follows() {
    let timing = LeaseTiming::new(Duration::from_secs(1), ms(250)).expect("timing");
    let store: Arc<dyn LeaseStore> = Arc::new(MemStore::default());
    let fence_a = Fence::new("a", None);
    let fence_b = Fence::new("b", None);
    assert!(
        fence_a.check("create", "x").is_err(),
        "nobody acts before the lease"
    );
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let keeper_a = tokio::spawn(
        Keeper::new(Arc::clone(&store), timing, Arc::clone(&fence_a), None).run(async {
            let _ = stopped_a.await;
        }),
    );
    wait_for("a active", Duration::from_secs(5), || fence_a.is_active()).await;
    let term = fence_a.check("create", "x").expect("a acts");
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let keeper_b = tokio::spawn(
        Keeper::new(Arc::clone(&store), timing, Arc::clone(&fence_b), None).run(async {
            let _ = stopped_b.await;
        }),
    );
    // While a renews, b stays standby and knows the holder.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(fence_a.is_active() && !fence_b.is_active());
    let view = fence_b.view();
    assert_eq!(
        (view.role, view.holder.as_deref()),
        (Role::Standby, Some("a"))
    );
    assert!(fence_b.check("delete", "y").is_err());

    // a stops: its term ends at once (an action waiting on it is released), b takes over
    // within two leases, with the next generation.
    let ended = {
        let fence_a = Arc::clone(&fence_a);
        tokio::spawn(async move { fence_a.ended(term.generation).await })
    };
    let _ = stop_a.send(());
    keeper_a.await.expect("keeper a");
    tokio::time::timeout(ms(200), ended)
        .await
        .expect("the term ended at once")
        .expect("task");
    assert!(fence_a.check("create", "x").is_err());
    let took = wait_for("b active", Duration::from_secs(2), || fence_b.is_active()).await;
    assert!(took >= ms(600), "b waited about a lease: {took:?}");
    let term_b = fence_b.check("create", "z").expect("b acts");
    assert_eq!(term_b.generation, term.generation + 1);
    let _ = stop_b.send(());
    keeper_b.await.expect("keeper b");
}

/// Through [`FencedProvider`]: on a standby, reads pass and every mutating call is refused
/// before it reaches the provider; once active, mutating calls go through, each with its action
/// line (counted per action).
#[tokio::test]
async fn the_fenced_provider_passes_reads_and_fences_each_mutating_call() {
    use crate::provider::{render_chain, FilePush, InstanceProvider, InstanceSpec};
    use crate::sim_provider::{SimLatency, SimProvider};

    let sim = Arc::new(SimProvider::new(SimLatency::default(), None));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = HaMetrics::register(&mut registry);
    let fence = Fence::new("me", Some(Arc::clone(&metrics)));
    let fenced = FencedProvider::new(sim.clone(), Arc::clone(&fence));
    let owner = crate::model::Owner::new("app", 0).expect("owner");
    let spec = InstanceSpec {
        name: "app-0-fenced01".into(),
        image: "busybox".into(),
        instance_type: crate::model::InstanceType::Container,
        profiles: Vec::new(),
        config: BTreeMap::new(),
        ephemeral: true,
        target: None,
    };
    let file = FilePush {
        path: "/x".into(),
        content: Vec::new(),
        mode: 0o600,
        uid: 0,
        gid: 0,
    };

    // Standby: reads pass, writes are refused with the lease's error and never sent.
    assert!(fenced.list_instances(&owner).await.is_ok());
    assert!(fenced.check_image("busybox").await.is_ok());
    let refused = fenced.create_and_start(&spec).await.expect_err("standby");
    assert!(
        render_chain(&refused).contains("does not hold the lease"),
        "{}",
        render_chain(&refused)
    );
    assert!(fenced.delete("app-0-fenced01").await.is_err());
    assert!(fenced.push_file("app-0-fenced01", &file).await.is_err());
    assert!(sim.calls().is_empty(), "{:?}", sim.calls());
    let create = vec![("action", "create".to_owned())];
    let refusals = metrics.actions_refused_total.get_or_create(&create).get();
    assert_eq!(refusals, 1);

    // Active: the same calls reach the provider, each counted under its action.
    let valid_until = Instant::now() + Duration::from_secs(60);
    fence.set(
        Some(Term {
            generation: 1,
            valid_until,
        }),
        None,
    );
    fenced.create_and_start(&spec).await.expect("created");
    fenced.delete("app-0-fenced01").await.expect("deleted");
    assert_eq!(sim.calls_starting("create "), 1);
    assert_eq!(sim.calls_starting("delete "), 1);
    for action in ["create", "delete"] {
        let labels = vec![("action", action.to_owned())];
        assert_eq!(
            metrics.actions_total.get_or_create(&labels).get(),
            1,
            "{action}"
        );
    }
}
