//! R2: SIGKILL of `runner-manager reconcile` and `flush` at a random moment.

use super::*;

/// What an uninterrupted run must leave.
#[derive(Clone, Copy)]
enum AfterRun {
    /// A converged fleet of this many runners.
    Fleet(usize),
    /// No instance and no registration.
    Empty,
}

/// Where a kill landed, from the snapshot taken right after it.
struct KillView {
    exited_before_kill: bool,
    at_kill: Snapshot,
}

impl World {
    /// Spawns `args`, SIGKILLs it after `after` (unless it already exited) and snapshots.
    async fn kill_after(&self, args: &[&str], after: Duration) -> anyhow::Result<KillView> {
        let mut child = self
            .command(args)
            .spawn()
            .context("spawning runner-manager")?;
        let exited = tokio::time::timeout(after, child.wait()).await;
        let exited_before_kill = match exited {
            Ok(status) => {
                status.context("waiting for runner-manager")?;
                true
            }
            Err(_) => {
                child.start_kill().context("SIGKILL")?;
                let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .context("the killed process did not exit")??;
                anyhow::ensure!(
                    status.code().is_none(),
                    "exited {status} instead of dying by the signal"
                );
                false
            }
        };
        let at_kill = self.snapshot().await?;
        Ok(KillView {
            exited_before_kill,
            at_kill,
        })
    }

    /// Measures an uninterrupted run of `args` from the current state (must exit 0).
    async fn measure(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let out = self.run(args).await?;
        anyhow::ensure!(
            out.code == Some(0),
            "uninterrupted {args:?} exited {:?}: {}",
            out.code,
            out.tail()
        );
        Ok(out.took)
    }

    /// `runs` uninterrupted runs of `args`, each from `from` runners and checked by `after`, and
    /// their median.
    async fn measure_window(
        &self,
        tally: &mut Tally,
        from: u32,
        args: &[&str],
        runs: u32,
        after: AfterRun,
    ) -> anyhow::Result<(Vec<Duration>, Duration)> {
        let mut durations = Vec::new();
        for _ in 0..runs {
            self.ensure(from, tally).await?;
            durations.push(self.measure(args).await?);
            match after {
                AfterRun::Fleet(quantity) => self
                    .check_fleet(quantity, &BTreeSet::new())
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::msg)?,
                AfterRun::Empty => {
                    let left = self.snapshot().await?;
                    anyhow::ensure!(
                        left.owned.is_empty() && left.registrations.is_empty(),
                        "an uninterrupted flush left {}",
                        left.summary()
                    );
                }
            }
        }
        let median = crate::real::median(&durations);
        Ok((durations, median))
    }

    /// The clean pass after a kill and the fleet check; `Err` is the failure reason.
    pub(super) async fn clean_pass(
        &self,
        tally: &mut Tally,
        registered_before: &BTreeSet<String>,
    ) -> Result<(), String> {
        let (_, doc) = self
            .reconcile(None)
            .await
            .map_err(|e| format!("clean reconcile: {e:#}"))?;
        tally.add(
            "clean pass removed",
            doc["removed"].as_u64().unwrap_or_default(),
        );
        tally.add(
            "clean pass created",
            doc["created"].as_u64().unwrap_or_default(),
        );
        let waited = self
            .check_fleet(self.quantity as usize, registered_before)
            .await?;
        if let Some(first) = waited {
            // Not a failure: it converged without another pass. Counted, with the first state.
            self.log(&format!(
                "converged after a wait; right after the pass: {first}"
            ));
            let what = if first.contains("orphans") {
                "clean passes followed by an instance registering on its own"
            } else if first.contains("offline") {
                "clean passes followed by runners coming online"
            } else {
                "clean passes followed by a delete of the killed pass landing"
            };
            tally.add(what, 1);
        }
        Ok(())
    }

    /// [`World::clean_pass`] after the kill `view` at `at` of `window`; a failure is tallied
    /// and reported as `what (context at …)`, and the world recovered for the next iteration.
    async fn clean_pass_or_recover(
        &self,
        tally: &mut Tally,
        registered_before: &BTreeSet<String>,
        (what, context): (String, String),
        (at, window): (Duration, Duration),
        view: &KillView,
    ) -> anyhow::Result<()> {
        if let Err(reason) = self.clean_pass(tally, registered_before).await {
            tally.add(failure_kind(&reason), 1);
            tally.fail_and_print(format!(
                "{what} ({context}at {:.2} s of {:.2} s; at kill: {}): {reason}",
                at.as_secs_f64(),
                window.as_secs_f64(),
                view.at_kill.summary()
            ));
            // The next iteration starts from a known state.
            self.recover(tally).await?;
        }
        Ok(())
    }
}

/// R2a: SIGKILL during creation. Starts cycle through `0..quantity` runners; the kill moment is
/// uniform within the measured duration of the uninterrupted reconcile from that start.
pub async fn r2_create(world: &World, options: &Options) -> anyhow::Result<Tally> {
    let mut tally = Tally::new("R2 kill -9 during create");
    let started = Instant::now();
    let mut rng = Rng::new(options.seed ^ 0xc4ea7e);
    let q = options.quantity;
    let mut measured: BTreeMap<u32, Duration> = BTreeMap::new();
    for i in 0..options.create_kills {
        if options.out_of_time(&mut tally) {
            break;
        }
        let start = u32::try_from(i % u64::from(q)).unwrap_or(0);
        world.ensure(start, &mut tally).await?;
        let window = match measured.get(&start) {
            Some(d) => *d,
            None => {
                let (runs, d) = world
                    .measure_window(
                        &mut tally,
                        start,
                        &["reconcile", "--json"],
                        options.measure_runs,
                        AfterRun::Fleet(q as usize),
                    )
                    .await?;
                world.log(&format!(
                    "uninterrupted reconcile {start} -> {q}: {runs:.2?}, median {:.2} s",
                    d.as_secs_f64()
                ));
                tally.add(&format!("window {start}->{q} (ms)"), d.as_millis() as u64);
                measured.insert(start, d);
                world.ensure(start, &mut tally).await?;
                d
            }
        };
        let pre = world.snapshot().await?;
        let before: BTreeSet<String> = pre.owned.keys().cloned().collect();
        let registered_before: BTreeSet<String> = pre.registrations.keys().cloned().collect();
        let at = moment(&mut rng, window);
        let view = world.kill_after(&["reconcile", "--json"], at).await?;
        tally.iterations += 1;
        classify_create_kill(&mut tally, &before, &view);
        world.log(&format!(
            "create kill {}/{} from {start} at {:.2}/{:.2} s: {}",
            i + 1,
            options.create_kills,
            at.as_secs_f64(),
            window.as_secs_f64(),
            view.at_kill.summary()
        ));
        let what = (format!("create kill {}", i + 1), format!("from {start}, "));
        world
            .clean_pass_or_recover(&mut tally, &registered_before, what, (at, window), &view)
            .await?;
    }
    tally.elapsed = started.elapsed();
    Ok(tally)
}

fn classify_create_kill(tally: &mut Tally, before: &BTreeSet<String>, view: &KillView) {
    if view.exited_before_kill {
        tally.add("kills after the pass had ended", 1);
        return;
    }
    let snap = &view.at_kill;
    let new: Vec<&String> = snap.owned.keys().filter(|n| !before.contains(*n)).collect();
    let unregistered = new
        .iter()
        .filter(|n| !snap.registrations.contains_key(**n))
        .count();
    let registered_offline = new
        .iter()
        .filter(|n| {
            snap.registrations
                .get(**n)
                .is_some_and(|r| r.status != "online")
        })
        .count();
    if new.is_empty() {
        tally.add("kills before any instance existed", 1);
    }
    if unregistered > 0 {
        tally.add("kills with an instance created, not registered", 1);
    }
    if registered_offline > 0 {
        tally.add("kills with a registration not yet online", 1);
    }
    if !snap.dangling().is_empty() {
        tally.add("kills leaving a dangling registration", 1);
    }
    tally.add(
        "instances created, not registered, at kill",
        unregistered as u64,
    );
}

/// R2b: SIGKILL during `flush` (every third with `--idle-only`) of a full fleet. The kill moment
/// is uniform within the measured duration of the uninterrupted flush of that mode.
pub async fn r2_flush(world: &World, options: &Options) -> anyhow::Result<Tally> {
    let mut tally = Tally::new("R2 kill -9 during flush");
    let started = Instant::now();
    let mut rng = Rng::new(options.seed ^ 0xf105);
    let q = options.quantity;
    let mut measured: BTreeMap<bool, Duration> = BTreeMap::new();
    for i in 0..options.flush_kills {
        if options.out_of_time(&mut tally) {
            break;
        }
        let idle_only = i % 3 == 1;
        let args: &[&str] = if idle_only {
            &["flush", "--idle-only", "--json"]
        } else {
            &["flush", "--json"]
        };
        world.ensure(q, &mut tally).await?;
        let window = match measured.get(&idle_only) {
            Some(d) => *d,
            None => {
                let (runs, d) = world
                    .measure_window(&mut tally, q, args, options.measure_runs, AfterRun::Empty)
                    .await?;
                world.log(&format!(
                    "uninterrupted {args:?} of {q}: {runs:.2?}, median {:.2} s",
                    d.as_secs_f64()
                ));
                let key = if idle_only { "idle-only" } else { "all" };
                tally.add(&format!("window flush {key} (ms)"), d.as_millis() as u64);
                measured.insert(idle_only, d);
                world.ensure(q, &mut tally).await?;
                d
            }
        };
        let registered_before: BTreeSet<String> =
            world.snapshot().await?.registrations.into_keys().collect();
        let at = moment(&mut rng, window);
        let view = world.kill_after(args, at).await?;
        tally.iterations += 1;
        if idle_only {
            tally.add("flush --idle-only kills", 1);
        }
        classify_flush_kill(&mut tally, q as usize, &view);
        world.log(&format!(
            "flush kill {}/{}{} at {:.2}/{:.2} s: {}",
            i + 1,
            options.flush_kills,
            if idle_only { " (idle-only)" } else { "" },
            at.as_secs_f64(),
            window.as_secs_f64(),
            view.at_kill.summary()
        ));
        let what = (
            format!(
                "flush kill {}{}",
                i + 1,
                if idle_only { " idle-only" } else { "" }
            ),
            String::new(),
        );
        world
            .clean_pass_or_recover(&mut tally, &registered_before, what, (at, window), &view)
            .await?;
    }
    tally.elapsed = started.elapsed();
    Ok(tally)
}

fn classify_flush_kill(tally: &mut Tally, quantity: usize, view: &KillView) {
    if view.exited_before_kill {
        tally.add("kills after the flush had ended", 1);
        return;
    }
    let snap = &view.at_kill;
    let removed = quantity.saturating_sub(snap.owned.len());
    if removed == 0 && snap.registrations.len() == quantity {
        tally.add("kills before any removal", 1);
    } else if snap.owned.is_empty() && snap.registrations.is_empty() {
        tally.add("kills after every removal", 1);
    } else {
        tally.add("kills mid-flush", 1);
    }
    if !snap.orphans().is_empty() {
        tally.add(
            "kills with a deregistered instance left (orphan at kill)",
            1,
        );
    }
    tally.add("runners removed before the kill", removed as u64);
}
