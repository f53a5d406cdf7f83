//! Active/standby on the real 3-member Incus cluster (`scripts/incus-cluster.sh up`): two
//! `runner-manager run` daemons of one app and unit, one on member m1's socket and one on m2's,
//! with `[ha]` (a 3 s lease renewed every second, kept in the cluster's profile
//! `rm-lease-<app>-0`), against the GitHub simulator, while the test keeps them busy (it deletes
//! runners' instances and asks for passes). At random moments the active daemon is SIGKILLed
//! (then started again) or SIGSTOPped (then continued once the other took over), at least 50
//! times. From both daemons' JSON logs (every mutating action is a line with the manager id, the
//! lease generation and unix milliseconds; every role change too) the test proves that no two
//! tenures' acting windows overlap, that each takeover came within two lease periods of the
//! signal, and prints the takeover times (min / median / max).
//!
//! `#[ignore]`d: run by `scripts/test.sh` (`--run-ignored all`), one cluster test at a time (the
//! binary's name has `cluster`). Set `HA_ROUNDS` to change the number of rounds (default 50),
//! `HA_LOG_DIR` to keep the daemons' logs there.

mod e2e_env;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use e2e_env::{free_port, get_json, now_ms, Env, ServerSection, API_TOKEN, BIN};
use rand::Rng;
use serde_json::Value;
use test_support::config::binary_command;

const LEASE_MS: i64 = 3_000;
const MEMBERS: [&str; 2] = ["m1", "m2"];

#[test]
fn incus_tests_are_ignored_by_default() {
    test_support::incus_ignored::assert_only_these_run_here(&[
        "incus_tests_are_ignored_by_default",
        "acting_windows_are_read_from_the_logs",
    ]);
}

/// One daemon slot: its config (member socket, port) and every process started in it.
struct Slot {
    name: &'static str,
    config: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    stopped: bool,
    logs: Vec<PathBuf>,
}

impl Slot {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let log = self
            .dir
            .join(format!("{}-{}.log", self.name, self.logs.len()));
        let child = e2e_env::spawn_daemon(&self.config, &["--log-format", "json", "run"], &log);
        self.logs.push(log);
        self.child = Some(child);
        self.stopped = false;
    }

    fn signal(&mut self, signal: &str) {
        e2e_env::signal(self.child.as_ref().expect("running").id(), signal);
        match signal {
            "STOP" => self.stopped = true,
            "CONT" => self.stopped = false,
            _ => {}
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.stopped {
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped = false;
    }
}

/// Kills every daemon (pass or fail) and deletes the app's lease profile; then its `Env`
/// deletes the app's instances.
struct World {
    slots: Vec<Slot>,
    env: Env,
}

impl Drop for World {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            slot.kill();
        }
        let lxd = self.env.lxd.clone();
        let profile = format!("rm-lease-{}-0", self.env.app);
        test_support::incus::block_on_own_thread(async move {
            let _ = lxd.delete_profile(&profile).await;
        });
    }
}

async fn role(client: &reqwest::Client, base: &str) -> Option<String> {
    let response = client
        .get(format!("{base}/health"))
        .timeout(Duration::from_millis(800))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body["daemon"]["ha"]["role"].as_str().map(str::to_owned)
}

/// Waits until exactly one slot reports `active`; its index.
async fn wait_one_active(client: &reqwest::Client, world: &World, within: Duration) -> usize {
    let started = Instant::now();
    loop {
        let mut active = Vec::new();
        for (i, slot) in world.slots.iter().enumerate() {
            if !slot.stopped && role(client, &slot.base()).await.as_deref() == Some("active") {
                active.push(i);
            }
        }
        assert!(active.len() <= 1, "two daemons say active: {active:?}");
        if let [one] = active[..] {
            return one;
        }
        assert!(
            started.elapsed() < within,
            "no daemon became active within {within:?}; logs:\n{}",
            tail_logs(world)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every daemon's lease lines and warnings, and the last lines of each log.
fn tail_logs(world: &World) -> String {
    let mut out = String::new();
    for slot in &world.slots {
        for log in &slot.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", log.display()));
            for line in lines
                .iter()
                .filter(|l| l.contains("ease") || l.contains("\"WARN\"") || l.contains("\"ERROR\""))
            {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str("--- last lines\n");
            for line in &lines[lines.len().saturating_sub(10)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// One line of a daemon's log that matters here.
#[derive(Debug, Clone)]
enum Line {
    Acting {
        manager: String,
        generation: u64,
        ms: i64,
        action: String,
    },
    Late,
    Role {
        manager: String,
        active: bool,
        generation: u64,
        ms: i64,
        reason: String,
    },
}

fn parse_lines(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let manager = v["manager_id"].as_str()?.to_owned();
            let generation = v["generation"].as_u64()?;
            let ms = v["unix_ms"].as_i64()?;
            match v["message"].as_str()? {
                "Acting." => Some(Line::Acting {
                    manager,
                    generation,
                    ms,
                    action: v["action"].as_str().unwrap_or_default().to_owned(),
                }),
                "Action finished after the lease term." => Some(Line::Late),
                "Lease role changed." => Some(Line::Role {
                    manager,
                    active: v["role"].as_str() == Some("active"),
                    generation,
                    ms,
                    reason: v["reason"].as_str().unwrap_or_default().to_owned(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// A tenure: from the acquisition to its last action.
#[derive(Debug, Clone)]
struct Tenure {
    manager: String,
    generation: u64,
    start: i64,
    end: i64,
    actions: usize,
}

/// The tenures found in `lines`; panics on an action outside any tenure of its manager.
fn tenures(lines: &[Line]) -> Vec<Tenure> {
    let mut by_key: BTreeMap<(String, u64), Tenure> = BTreeMap::new();
    for line in lines {
        if let Line::Role {
            manager,
            active: true,
            generation,
            ms,
            ..
        } = line
        {
            by_key.insert(
                (manager.clone(), *generation),
                Tenure {
                    manager: manager.clone(),
                    generation: *generation,
                    start: *ms,
                    end: *ms,
                    actions: 0,
                },
            );
        }
    }
    for line in lines {
        if let Line::Acting {
            manager,
            generation,
            ms,
            action,
        } = line
        {
            let tenure = by_key
                .get_mut(&(manager.clone(), *generation))
                .unwrap_or_else(|| {
                    panic!(
                        "{manager} acted ({action}) in generation {generation} it never acquired"
                    )
                });
            assert!(
                *ms >= tenure.start,
                "{manager} acted ({action}) at {ms} before its tenure {generation} began at {}",
                tenure.start
            );
            tenure.end = tenure.end.max(*ms);
            tenure.actions += 1;
        }
    }
    let mut all: Vec<Tenure> = by_key.into_values().collect();
    all.sort_by_key(|t| t.start);
    all
}

/// No two tenures' windows overlap, and generations grow with time.
fn assert_disjoint(tenures: &[Tenure]) {
    for pair in tenures.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.end < b.start,
            "acting windows overlap: {} generation {} [{}, {}] and {} generation {} [{}, {}]",
            a.manager,
            a.generation,
            a.start,
            a.end,
            b.manager,
            b.generation,
            b.start,
            b.end
        );
        assert!(
            a.generation < b.generation,
            "generations go back: {a:?} then {b:?}"
        );
    }
}

/// The analysis on made-up lines: a clean handover passes, an overlap is caught.
#[test]
fn acting_windows_are_read_from_the_logs() {
    let log = |manager: &str, message: &str, generation: u64, ms: i64, extra: &str| {
        format!(
            r#"{{"message":"{message}","manager_id":"{manager}","generation":{generation},"unix_ms":{ms}{extra}}}"#
        )
    };
    let acquired = |manager: &str, generation: u64, ms: i64| {
        let extra = r#","role":"active","reason":"acquired""#;
        log(manager, "Lease role changed.", generation, ms, extra)
    };
    let acting = |manager: &str, generation: u64, ms: i64, action: &str| {
        let extra = format!(r#","action":"{action}""#);
        log(manager, "Acting.", generation, ms, &extra)
    };
    let clean = [
        acquired("a", 1, 100),
        acting("a", 1, 150, "create"),
        acting("a", 1, 900, "delete"),
        acquired("b", 2, 4000),
        acting("b", 2, 4100, "create"),
        "not json".to_owned(),
    ]
    .join("\n");
    let found = tenures(&parse_lines(&clean));
    assert_eq!(found.len(), 2);
    assert_eq!(
        (found[0].start, found[0].end, found[0].actions),
        (100, 900, 2)
    );
    assert_disjoint(&found);

    let overlap = [
        acquired("a", 1, 100),
        acquired("b", 2, 4000),
        acting("a", 1, 4001, "create"),
    ]
    .join("\n");
    let found = tenures(&parse_lines(&overlap));
    let caught = std::panic::catch_unwind(|| assert_disjoint(&found));
    assert!(
        caught.is_err(),
        "an action of a after b took over is an overlap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_ha_two_daemons_never_act_together_under_kill_and_stop() {
    let _serial = test_support::cluster::serial().await;
    let rounds: usize = std::env::var("HA_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut env = Env::new(test_support::incus::BUSYBOX).await;
    env.lxd = test_support::cluster::connect().await;
    let (lxd, app) = (env.lxd.clone(), env.app.clone());
    // `HA_LOG_DIR`: where the daemons' logs go (kept after the test), else the temp dir.
    let logs = std::env::var_os("HA_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env.dir.path().to_owned());
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut slots = Vec::new();
    for (name, member) in ["a", "b"].into_iter().zip(MEMBERS) {
        let port = free_port();
        let mut text = e2e_env::with_lxd_keys(
            &env.config_text(&env.dir.path().join(format!("state-{name}")), Some(2)),
            &test_support::cluster::member_socket(member),
            "",
        );
        text.push_str(&env.server_text(&ServerSection {
            port,
            interval_seconds: 10,
        }));
        text.push_str(&format!(
            "\n[ha]\nenabled = true\nlease_seconds = {}\nrenew_seconds = 1\n",
            LEASE_MS / 1000
        ));
        let config = env.dir.path().join(format!("config-{name}.toml"));
        std::fs::write(&config, text).expect("config");
        slots.push(Slot {
            name,
            config,
            port,
            dir: logs.clone(),
            child: None,
            stopped: false,
            logs: Vec::new(),
        });
    }
    let mut world = World { slots, env };
    for slot in &mut world.slots {
        slot.start();
    }
    world.env.clock.mark("two daemons started");
    let client = e2e_env::http();

    // Work: every ~0.7 s an instance of ours may be deleted and both daemons are asked for a
    // pass (the standby answers 503), so the active one creates and removes all the time.
    let work = {
        let (lxd, prefix) = (lxd.clone(), format!("{app}-"));
        let bases: Vec<String> = world.slots.iter().map(Slot::base).collect();
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(700)).await;
                let delete = rand::rng().random_bool(0.5);
                if delete {
                    if let Ok(all) = lxd.list_instances().await {
                        let ours: Vec<_> = all
                            .into_iter()
                            .filter(|i| i.name.starts_with(&prefix))
                            .collect();
                        if !ours.is_empty() {
                            let victim = &ours[rand::rng().random_range(0..ours.len())];
                            let _ = lxd.force_delete_instance(&victim.name).await;
                        }
                    }
                }
                for base in &bases {
                    let _ = client
                        .post(format!("{base}/reconcile"))
                        .bearer_auth(API_TOKEN)
                        .timeout(Duration::from_millis(300))
                        .send()
                        .await;
                }
            }
        })
    };

    let mut first = wait_one_active(&client, &world, Duration::from_secs(60)).await;
    world
        .env
        .clock
        .mark(&format!("{} is active", world.slots[first].name));
    let mut signals: Vec<(usize, &str, i64, Duration)> = Vec::new();
    let mut moved = 0;
    for round in 0..rounds {
        let active = first;
        let other = 1 - active;
        // Let it work for a random while.
        let dwell = rand::rng().random_range(300..2_500);
        tokio::time::sleep(Duration::from_millis(dwell)).await;
        let kill = rand::rng().random_bool(0.5);
        let kind = if kill { "KILL" } else { "STOP" };
        let signalled = now_ms();
        let t0 = Instant::now();
        if kill {
            world.slots[active].kill();
        } else {
            world.slots[active].signal("STOP");
        }
        // The other one takes over.
        loop {
            if role(&client, &world.slots[other].base()).await.as_deref() == Some("active") {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "round {round}: no takeover 30 s after SIG{kind}; logs:\n{}",
                tail_logs(&world)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let polled = t0.elapsed();
        signals.push((other, kind, signalled, polled));
        world.env.clock.mark(&format!(
            "round {round}: SIG{kind} {} after {dwell} ms -> {} active after {:.2}s",
            world.slots[active].name,
            world.slots[other].name,
            polled.as_secs_f64()
        ));
        // The victim comes back as a standby.
        if kill {
            world.slots[active].start();
        } else {
            let more = rand::rng().random_range(0..2_000);
            tokio::time::sleep(Duration::from_millis(more)).await;
            world.slots[active].signal("CONT");
        }
        let back = Instant::now();
        loop {
            match role(&client, &world.slots[active].base()).await.as_deref() {
                Some("standby") => break,
                Some("active") => panic!(
                    "round {round}: {} came back active while {} holds the lease",
                    world.slots[active].name, world.slots[other].name
                ),
                _ => {}
            }
            assert!(
                back.elapsed() < Duration::from_secs(60),
                "round {round}: {} did not come back as a standby; logs:\n{}",
                world.slots[active].name,
                tail_logs(&world)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first = wait_one_active(&client, &world, Duration::from_secs(30)).await;
        if first != other {
            // Safe, but a failover nobody asked for (renewals failed on a loaded host): counted.
            moved += 1;
            world.env.clock.mark(&format!(
                "round {round}: the lease moved on its own to {}",
                world.slots[first].name
            ));
        }
    }
    work.abort();

    // The role everywhere: /health of both, the active one's metrics, and a one-shot
    // `status` (never active itself) naming the holder.
    let active = wait_one_active(&client, &world, Duration::from_secs(30)).await;
    let standby = 1 - active;
    let health = |i: usize| format!("{}/health", world.slots[i].base());
    let active_ha = get_json(&client, &health(active)).await["daemon"]["ha"].clone();
    let holder = active_ha["manager_id"]
        .as_str()
        .expect("manager id")
        .to_owned();
    // A daemon continued after SIGSTOP reads `standby` at once (its term has expired) but names
    // the new holder only once its keeper has read the lease again: within a lease.
    let within = Duration::from_millis(u64::try_from(2 * LEASE_MS).expect("positive"));
    let what = "the standby names the holder";
    let every = Duration::from_millis(100);
    let standby_ha = e2e_env::eventually(what, within, every, &|| tail_logs(&world), || async {
        let ha = get_json(&client, &health(standby)).await["daemon"]["ha"].clone();
        if ha["holder"].as_str() == Some(holder.as_str()) {
            Ok(ha)
        } else {
            Err(format!("{ha}"))
        }
    })
    .await;
    assert_eq!(active_ha["role"], "active", "{active_ha}");
    assert_eq!(active_ha["holder"].as_str(), Some(holder.as_str()));
    assert_eq!(standby_ha["role"], "standby", "{standby_ha}");
    assert_eq!(
        standby_ha["holder"].as_str(),
        Some(holder.as_str()),
        "{standby_ha}"
    );
    let samples = e2e_env::get_metrics(&client, &world.slots[active].base()).await;
    assert_eq!(
        e2e_env::metric(&samples, "runner_manager_ha_role", &[("role", "active")]),
        1.0
    );
    assert!(
        e2e_env::metric(
            &samples,
            "runner_manager_ha_lease_transitions_total",
            &[("to", "active"), ("reason", "acquired")]
        ) >= 1.0
    );
    let samples = e2e_env::get_metrics(&client, &world.slots[standby].base()).await;
    assert_eq!(
        e2e_env::metric(&samples, "runner_manager_ha_role", &[("role", "standby")]),
        1.0
    );
    let status = tokio::process::Command::from(binary_command(
        Path::new(BIN),
        &world.slots[standby].config,
        &["status", "--json"],
    ))
    .output()
    .await
    .expect("runner-manager status");
    assert!(status.status.success(), "{status:?}");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_eq!(status["ha"]["role"], "standby", "{status}");
    assert_eq!(
        status["ha"]["holder"].as_str(),
        Some(holder.as_str()),
        "{status}"
    );
    let refused = tokio::process::Command::from(binary_command(
        Path::new(BIN),
        &world.slots[standby].config,
        &["reconcile"],
    ))
    .output()
    .await
    .expect("runner-manager reconcile");
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a one-shot reconcile never acts"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not hold the lease"),
        "{refused:?}"
    );
    world.env.clock.mark(&format!(
        "status, /health and metrics name the holder {holder}"
    ));
    for slot in &mut world.slots {
        if slot.child.is_some() {
            slot.signal("TERM");
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for slot in &mut world.slots {
        slot.kill();
    }

    // The proof, from every daemon's log.
    let mut lines = Vec::new();
    for slot in &world.slots {
        for log in &slot.logs {
            lines.extend(parse_lines(&std::fs::read_to_string(log).expect("log")));
        }
    }
    let all = tenures(&lines);
    assert_disjoint(&all);
    let actions: usize = all.iter().map(|t| t.actions).sum();
    let acting_tenures = all.iter().filter(|t| t.actions > 0).count();
    let late = lines.iter().filter(|l| matches!(l, Line::Late)).count();
    let mut by_action: BTreeMap<&str, usize> = BTreeMap::new();
    for line in &lines {
        if let Line::Acting { action, .. } = line {
            *by_action.entry(action.as_str()).or_default() += 1;
        }
    }
    // Takeover: from the signal to the next acquisition in the logs.
    let mut takeovers = Vec::new();
    for (_, kind, signalled, polled) in &signals {
        let acquired = all
            .iter()
            .map(|t| t.start)
            .filter(|s| s > signalled)
            .min()
            .expect("an acquisition after each signal");
        let took = acquired - signalled;
        assert!(
            took <= 2 * LEASE_MS,
            "a takeover after SIG{kind} took {took} ms (polled {polled:?}), over two leases"
        );
        takeovers.push(took);
    }
    takeovers.sort_unstable();
    let median = takeovers[takeovers.len() / 2];
    let kills = signals.iter().filter(|s| s.1 == "KILL").count();
    eprintln!(
        "HA: {} rounds ({kills} SIGKILL, {} SIGSTOP), {} tenures ({acting_tenures} with actions), \
         {actions} actions {by_action:?}, 0 overlapping windows, {late} actions finished after \
         their term; takeover after the signal min {} ms / median {median} ms / max {} ms \
         (lease {LEASE_MS} ms)",
        signals.len(),
        signals.len() - kills,
        all.len(),
        takeovers[0],
        takeovers[takeovers.len() - 1],
    );
    let reasons: BTreeMap<String, usize> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Role {
                active: false,
                reason,
                ..
            } => Some(reason.clone()),
            _ => None,
        })
        .fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r).or_default() += 1;
            m
        });
    eprintln!(
        "HA: standby transitions by reason {reasons:?}; {moved} failover(s) without a signal"
    );
    assert!(signals.len() >= rounds);
    assert!(
        acting_tenures * 2 >= rounds,
        "the daemons acted in only {acting_tenures} tenures"
    );
    assert!(
        actions >= rounds,
        "only {actions} actions in {rounds} rounds"
    );
    world.env.clock.mark("done");
}
