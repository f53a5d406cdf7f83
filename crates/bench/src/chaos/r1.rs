//! R1 and R1-lie: jobs assigned between observe and act must never be killed.

use super::*;

/// R1: randomized races between observe and act, `token` iterations in token mode and `jit` in
/// JIT mode (JIT is slower: the manager paces JIT registrations to 70 a minute).
/// With `booting_race` (R1b), each iteration also has an owned instance with no registration yet
/// (an interrupted or concurrent creation) that registers and takes a job during the pass.
pub async fn r1(
    outside: &Arc<Outside>,
    token: u64,
    jit: u64,
    seed: u64,
    booting_race: bool,
) -> anyhow::Result<Tally> {
    let mut total = Tally::new(if booting_race {
        "R1b busy runners, booting instance registers mid-pass"
    } else {
        "R1 busy runners"
    });
    control(
        &mut total,
        "detector control: kills seen when an instance is deleted under a job (expect 1)",
        "the kill detector",
        detector_control(outside, booting_race).await?,
    );
    let apps = if booting_race {
        ["r1btok", "r1bjit"]
    } else {
        ["r1tok", "r1jit"]
    };
    for (mode, app, n, salt) in [
        (RegistrationMode::Token, apps[0], token, 0x1111),
        (RegistrationMode::Jit, apps[1], jit, 0x2222),
    ] {
        total.merge(r1_mode(outside, mode, app, n, seed ^ salt, booting_race, None).await?);
    }
    Ok(total)
}

/// R1-lie: R1 (`token` iterations in token mode, `jit` in JIT mode) with the sim's busy-lie fault
/// armed for `rate` (0..=1) of the jobs: GitHub's list says `busy: false` for a runner that runs
/// a job, and its `DELETE` answers 204 and kills the job. The manager's GitHub-side checks cannot
/// see the job; only a look inside the instance can. Every job killed is a failure; the detail
/// "jobs killed by deletion (sim counter)" is read from `GET /_sim/faults/busy-lie`.
pub async fn r1_busy_lie(
    outside: &Arc<Outside>,
    token: u64,
    jit: u64,
    seed: u64,
    rate: f64,
) -> anyhow::Result<Tally> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&rate),
        "busy-lie rate {rate} is not within 0..=1"
    );
    let mut total = Tally::new(&format!(
        "R1-lie busy runners, GitHub's busy flag lies for {:.0}% of jobs",
        rate * 100.0
    ));
    control(
        &mut total,
        "detector control: kills counted when a busy runner is deleted through the lie (expect 1)",
        "the busy-lie kill counter",
        busy_lie_control(outside).await?,
    );
    for (mode, app, n, salt) in [
        (RegistrationMode::Token, "r1ltok", token, 0x3333),
        (RegistrationMode::Jit, "r1ljit", jit, 0x4444),
    ] {
        total.merge(r1_mode(outside, mode, app, n, seed ^ salt, false, Some(rate)).await?);
    }
    Ok(total)
}

/// Counts the kills a control saw (`detected`) under `what`; anything but exactly one is a failure
/// of the `detector`.
fn control(total: &mut Tally, what: &str, detector: &str, detected: u64) {
    total.add(what, detected);
    if detected != 1 {
        total.fail(format!(
            "{detector} saw {detected} kills in its control, not 1"
        ));
    }
}

/// Control of the busy-lie counter: one `DELETE` of a runner running a job, straight through the
/// GitHub client while the lie is armed, must be counted as exactly one job killed by deletion,
/// by the sim and by [`killed_jobs`].
async fn busy_lie_control(outside: &Arc<Outside>) -> anyhow::Result<u64> {
    let admin = Admin::new(outside)?;
    let fleet = ChaosFleet::new(outside, "r1lcontrol", RegistrationMode::Token).await?;
    fleet.settle(&admin, 2).await?;
    let before = admin.busy_lie_status().await?.jobs_killed_by_deletion;
    let job = admin.enqueue(&fleet.label).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let runner_id = loop {
        let view = admin.jobs().await?.into_iter().find(|j| j.job_id == job);
        if let Some(j) = view.filter(|j| j.status == JobStatus::InProgress) {
            break j.runner_id.context("a running job without a runner")?;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the control job was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    admin.busy_lie(&BusyLieSpec::all()).await?;
    let listed = fleet.client.get_runner(github::RunnerId(runner_id)).await?;
    anyhow::ensure!(!listed.busy, "the armed lie still reports the runner busy");
    fleet
        .client
        .delete_runner(github::RunnerId(runner_id))
        .await?;
    admin.clear_faults().await?;
    let counted = admin.busy_lie_status().await?.jobs_killed_by_deletion - before;
    let mut seen = BTreeSet::new();
    let detected = killed_jobs(&fleet, &admin, &mut seen).await?.len() as u64;
    fleet.drain_leaks(&admin).await?;
    anyhow::ensure!(
        counted == detected,
        "the sim counted {counted} kills by deletion, the job views show {detected}"
    );
    Ok(counted)
}

/// Negative control: deleting the instance of a runner that holds a job (what a buggy manager
/// would do) must be counted as exactly one killed job.
async fn detector_control(outside: &Arc<Outside>, second: bool) -> anyhow::Result<u64> {
    use manager::provider::InstanceProvider;
    let admin = Admin::new(outside)?;
    let app = if second { "r1bcontrol" } else { "r1control" };
    let fleet = ChaosFleet::new(outside, app, RegistrationMode::Token).await?;
    fleet.settle(&admin, 2).await?;
    let job = admin.enqueue(&fleet.label).await?;
    let runner = admin
        .jobs()
        .await?
        .into_iter()
        .find(|j| j.job_id == job)
        .and_then(|j| j.runner_name)
        .context("the control job was not assigned")?;
    fleet.provider.delete(&runner).await?;
    let mut counted = BTreeSet::new();
    let killed = killed_jobs(&fleet, &admin, &mut counted).await?.len() as u64;
    fleet.drain_leaks(&admin).await?;
    Ok(killed)
}

async fn r1_mode(
    outside: &Arc<Outside>,
    mode: RegistrationMode,
    app: &str,
    iterations: u64,
    seed: u64,
    booting_race: bool,
    busy_lie: Option<f64>,
) -> anyhow::Result<Tally> {
    let started = Instant::now();
    let mut counts = Tally::new("R1");
    let (admin, fleet) = ChaosFleet::start(outside, app, mode).await?;
    let lie_before = match busy_lie {
        Some(rate) => {
            let before = admin.busy_lie_status().await?;
            admin
                .busy_lie(&BusyLieSpec {
                    rate: Some(rate),
                    count: None,
                    seed: Some(seed),
                })
                .await?;
            Some(before)
        }
        None => None,
    };
    let mut rng = Rng::new(seed);
    let mut counted = BTreeSet::new();
    let mut pass_us: u64 = 5_000;
    for i in 0..iterations {
        let quantity = 2 + rng.below(4) as usize;
        fleet
            .settle(&admin, quantity)
            .await
            .with_context(|| format!("R1 iteration {i}: settling"))?;
        let idle: Vec<String> = fleet
            .registrations(&admin)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();

        // The races.
        if rng.chance(0.6) {
            let target = if rng.chance(0.7) {
                rng.pick(&idle).cloned()
            } else {
                None
            };
            admin.assign_on_delete(target.as_deref(), true).await?;
            counts.add("assign-on-delete hooks armed", 1);
        }
        if rng.chance(0.3) {
            for _ in 0..=rng.below(2) {
                admin.enqueue(&fleet.label).await?;
                counts.add("jobs queued just before the pass", 1);
            }
        }
        // An owned instance that has no registration yet (booting) registers and takes a job at a
        // random moment during the pass.
        let late = booting_race.then(|| {
            let name = fleet.manager.owner().new_runner_name().to_string();
            fleet
                .provider
                .add_booting_instance(&name, fleet.manager.owner().config_keys());
            name
        });
        let late_task = match late {
            Some(name) => {
                counts.add("booting instances registering during the pass", 1);
                let token = fleet.client.create_registration_token().await?.token;
                let delay = Duration::from_micros(rng.below(pass_us.max(1)));
                let (agents, admin) = (fleet.agents.clone(), admin.clone());
                let labels = format!("{},late{i}", fleet.label);
                Some(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let job_label = labels.rsplit(',').next().unwrap_or_default().to_owned();
                    agents
                        .register_late(&admin, &name, &labels, &job_label, token.expose())
                        .await
                }))
            }
            None => None,
        };
        let during = rng.chance(0.6).then(|| {
            let delay = Duration::from_micros(rng.below(pass_us.max(1)));
            let admin = admin.clone();
            let label = fleet.label.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                admin.enqueue(&label).await
            })
        });
        let scale_down = rng.chance(0.65);
        let target = rng.below(quantity as u64) as usize;
        let before = Instant::now();
        let skipped = if scale_down {
            counts.add("reconcile scale-downs", 1);
            let report = fleet.manager.reconcile(target, &fleet.resources).await?;
            report.skipped_busy.len()
        } else {
            counts.add("flush(IdleOnly)", 1);
            let report = fleet.manager.flush(FlushMode::IdleOnly).await?;
            report.skipped_busy.len()
        };
        let took = u64::try_from(before.elapsed().as_micros()).unwrap_or(u64::MAX);
        pass_us = (pass_us * 7 + took) / 8;
        counts.add("removals skipped because GitHub said busy", skipped as u64);
        if let Some(task) = during {
            task.await??;
            counts.add("jobs queued at a random moment during the pass", 1);
        }
        if let Some(task) = late_task {
            if task.await?? {
                counts.add("late registrations that got a job", 1);
            }
        }
        admin.assign_on_delete(None, false).await?;
        let when = format!("iteration {i}");
        fail_killed(&fleet, &admin, &mut counted, &mut counts, &when).await?;
        let busy = fleet
            .registrations(&admin)
            .await?
            .iter()
            .filter(|r| r.busy)
            .count();
        counts.add("runners busy right after the pass (race hit)", busy as u64);
        if busy_lie.is_some() {
            // The measurement is void if anything disarmed the lie (`DELETE /_sim/faults` does).
            let status = admin.busy_lie_status().await?;
            anyhow::ensure!(
                status.fault.is_some(),
                "iteration {i}: the busy-lie fault was disarmed"
            );
        }
        counts.iterations += 1;
        if counts.iterations.is_multiple_of(100) {
            eprintln!("  {app}: {} iterations", counts.iterations);
        }
    }
    if let Some(before) = lie_before {
        // Read before the drain, which disarms the lie (the drain must not kill anything).
        let after = admin.busy_lie_status().await?;
        let counters: [Counter<BusyLieStatus>; 3] = [
            ("jobs killed by deletion (sim counter)", |s| {
                s.jobs_killed_by_deletion
            }),
            ("busy runners deleted through the lie (sim counter)", |s| {
                s.busy_runners_deleted
            }),
            (
                "assigned jobs requeued by such a deletion (not killed)",
                |s| s.jobs_requeued_by_deletion,
            ),
        ];
        for (key, count) in counters {
            counts.add_growth(key, count(&before), count(&after));
        }
    }
    counts.leaks += fleet.drain_leaks(&admin).await?;
    fail_killed(&fleet, &admin, &mut counted, &mut counts, "after drain").await?;
    counts.add("busy jobs killed", 0);
    counts.elapsed = started.elapsed();
    Ok(counts)
}
