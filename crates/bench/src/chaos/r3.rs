//! R3: GitHub fault storms during reconcile passes.

use super::*;

/// The fault storms of R3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storm {
    ServerError,
    Forbidden403RetryAfter,
    TooMany429RetryAfter,
    Timeout,
    Drop,
    Flaky,
}

impl Storm {
    const ALL: [Storm; 6] = [
        Storm::ServerError,
        Storm::Forbidden403RetryAfter,
        Storm::TooMany429RetryAfter,
        Storm::Timeout,
        Storm::Drop,
        Storm::Flaky,
    ];

    fn name(self) -> &'static str {
        match self {
            Storm::ServerError => "5xx bursts",
            Storm::Forbidden403RetryAfter => "403 + retry-after",
            Storm::TooMany429RetryAfter => "429 + retry-after",
            Storm::Timeout => "timeouts",
            Storm::Drop => "dropped connections",
            Storm::Flaky => "50% 502 for 6 calls",
        }
    }

    fn spec(self, endpoint: &str, rng: &mut Rng) -> FaultSpec {
        let count = |rng: &mut Rng, max: u64| Some(1 + rng.below(max) as u32);
        let base = FaultSpec {
            endpoint: endpoint.to_owned(),
            ..FaultSpec::default()
        };
        match self {
            Storm::ServerError => FaultSpec {
                status: rng.pick(&[500u16, 502, 503, 504]).copied(),
                count: count(rng, 8),
                ..base
            },
            Storm::Forbidden403RetryAfter => FaultSpec {
                status: Some(403),
                retry_after: Some(1),
                message: Some("You have exceeded a secondary rate limit.".to_owned()),
                count: count(rng, 2),
                ..base
            },
            Storm::TooMany429RetryAfter => FaultSpec {
                status: Some(429),
                retry_after: Some(1),
                count: count(rng, 2),
                ..base
            },
            Storm::Timeout => FaultSpec {
                latency_ms: Some(TIMEOUT_FAULT_MS),
                count: count(rng, 2),
                ..base
            },
            Storm::Drop => FaultSpec {
                drop: true,
                count: count(rng, 5),
                ..base
            },
            Storm::Flaky => FaultSpec {
                status: Some(502),
                rate: Some(0.5),
                count: Some(6),
                ..base
            },
        }
    }
}

/// R3: `passes` storm passes (half token mode, half JIT) plus the deterministic backoff probes.
pub async fn r3(outside: &Arc<Outside>, passes: u64, seed: u64) -> anyhow::Result<Tally> {
    let mut total = Tally::new("R3 GitHub faults");
    let half = passes / 2;
    for (mode, app, n) in [
        (RegistrationMode::Token, "r3tok", half),
        (RegistrationMode::Jit, "r3jit", passes - half),
    ] {
        total.merge(r3_mode(outside, mode, app, n, seed ^ (n << 1)).await?);
    }
    Ok(total)
}

async fn list_requests(outside: &Outside) -> anyhow::Result<u64> {
    Ok(outside
        .request_counts()
        .await?
        .get(LIST)
        .map_or(0, |c| c.count))
}

/// GitHub's rules on a steady fleet, one fault at a time: `retry-after` is waited out, 5xx are
/// retried a bounded number of times, a plain 403 is not retried.
async fn backoff_probes(
    outside: &Outside,
    admin: &Admin,
    fleet: &ChaosFleet,
    quantity: usize,
    counts: &mut Tally,
) -> anyhow::Result<()> {
    struct Probe {
        what: &'static str,
        spec: FaultSpec,
        ok: bool,
        requests: std::ops::RangeInclusive<u64>,
        min_elapsed: Duration,
    }
    let probes = [
        Probe {
            what: "429 retry-after 2 on list: waits >= 2 s, 1 retry, pass ok",
            spec: FaultSpec {
                retry_after: Some(2),
                ..FaultSpec::status(LIST, 429).times(1)
            },
            ok: true,
            requests: 2..=2,
            min_elapsed: Duration::from_secs(2),
        },
        Probe {
            what: "403 secondary limit, retry-after 1: waits >= 1 s, pass ok",
            spec: FaultSpec {
                retry_after: Some(1),
                message: Some("You have exceeded a secondary rate limit.".to_owned()),
                ..FaultSpec::status(LIST, 403).times(1)
            },
            ok: true,
            requests: 2..=2,
            min_elapsed: Duration::from_secs(1),
        },
        Probe {
            what: "two 503 on list: retried with backoff, pass ok",
            spec: FaultSpec::status(LIST, 503).times(2),
            ok: true,
            requests: 3..=3,
            min_elapsed: Duration::from_millis(100),
        },
        Probe {
            what: "503 storm on list: gives up after 1 + 3 retries, pass fails, touches nothing",
            spec: FaultSpec::status(LIST, 503).times(50),
            ok: false,
            requests: 1..=(1 + MAX_RETRIES as u64),
            min_elapsed: Duration::ZERO,
        },
        Probe {
            what: "plain 403 (no retry-after): not retried, pass fails",
            spec: FaultSpec {
                message: Some("Resource not accessible by integration".to_owned()),
                ..FaultSpec::status(LIST, 403).times(50)
            },
            ok: false,
            requests: 1..=1,
            min_elapsed: Duration::ZERO,
        },
    ];
    for probe in probes {
        fleet.settle(admin, quantity).await?;
        let before_instances: BTreeSet<String> =
            fleet.provider.instance_names().into_iter().collect();
        outside.reset_request_counts().await?;
        admin.fault(&probe.spec).await?;
        let started = Instant::now();
        let result = fleet.manager.reconcile(quantity, &fleet.resources).await;
        let elapsed = started.elapsed();
        admin.clear_faults().await?;
        let requests = list_requests(outside).await?;
        let after: BTreeSet<String> = fleet.provider.instance_names().into_iter().collect();
        let good = result.is_ok() == probe.ok
            && probe.requests.contains(&requests)
            && elapsed >= probe.min_elapsed
            && after == before_instances;
        counts.add("backoff probes", 1);
        println!(
            "    probe [{}] {}: list requests {requests}, {:.2} s, pass {}",
            if good { "ok" } else { "FAILED" },
            probe.what,
            elapsed.as_secs_f64(),
            if result.is_ok() { "ok" } else { "failed" }
        );
        if !good {
            counts.fail(format!(
                "probe {}: ok={} requests={requests} elapsed={elapsed:?} instances changed={}",
                probe.what,
                result.is_ok(),
                after != before_instances
            ));
        }
    }
    Ok(())
}

async fn r3_mode(
    outside: &Arc<Outside>,
    mode: RegistrationMode,
    app: &str,
    passes: u64,
    seed: u64,
) -> anyhow::Result<Tally> {
    let started = Instant::now();
    let mut counts = Tally::new("R3");
    let (admin, fleet) = ChaosFleet::start(outside, app, mode).await?;
    let mut rng = Rng::new(seed);
    let quantity = 6usize;
    let mut counted = BTreeSet::new();
    fleet.settle(&admin, quantity).await?;
    backoff_probes(outside, &admin, &fleet, quantity, &mut counts).await?;
    fleet.settle(&admin, quantity).await?;
    let stats_before = fleet.client.stats().total();
    let endpoints = match mode {
        RegistrationMode::Token => [LIST, DELETE, REG_TOKEN],
        RegistrationMode::Jit => [LIST, DELETE, JIT],
    };

    for pass in 0..passes {
        // Life goes on around the storm: jobs finish, new jobs keep runners busy, processes die.
        if rng.chance(0.3) {
            counts.add(
                "jobs finished before the pass",
                fleet.complete_jobs(&admin).await? as u64,
            );
        }
        if rng.chance(0.3) {
            admin.enqueue(&fleet.label).await?;
            counts.add("jobs queued before the pass", 1);
        }
        let regs = fleet.registrations(&admin).await?;
        let mut killed_process = None;
        if rng.chance(0.15) {
            let idle: Vec<&RunnerView> = regs.iter().filter(|r| !r.busy).collect();
            if let Some(r) = rng.pick(&idle) {
                fleet.provider.kill_runner(&r.name);
                killed_process = Some(r.name.clone());
                counts.add("runner processes killed before the pass", 1);
            }
        }
        let healthy: Vec<String> = regs
            .iter()
            .filter(|r| r.status == "online" && !r.busy)
            .filter(|r| Some(&r.name) != killed_process.as_ref())
            .filter(|r| {
                fleet
                    .provider
                    .instance(&r.name)
                    .is_some_and(|i| i.runner_alive)
            })
            .map(|r| r.name.clone())
            .collect();

        // The storm.
        for _ in 0..=rng.below(3) {
            let storm = *rng.pick(&Storm::ALL).context("storm")?;
            let endpoint = *rng.pick(&endpoints).context("endpoint")?;
            admin.fault(&storm.spec(endpoint, &mut rng)).await?;
            counts.add(&format!("faults injected: {}", storm.name()), 1);
        }

        // Instances sampled every millisecond during the pass.
        let peak = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop, provider) = (peak.clone(), stop.clone(), fleet.provider.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(provider.instance_names().len(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let result = fleet.manager.reconcile(quantity, &fleet.resources).await;
        stop.store(true, Ordering::Relaxed);
        sampler.await?;
        admin.clear_faults().await?;
        let peak = peak
            .load(Ordering::Relaxed)
            .max(fleet.provider.instance_names().len());
        match &result {
            Ok(report) if report.failed.is_empty() => counts.add("passes ok", 1),
            Ok(_) => counts.add("passes partial (some action failed)", 1),
            Err(_) => counts.add("passes failed (observe failed, nothing touched)", 1),
        }

        // Checks.
        for name in &healthy {
            if fleet.provider.instance(name).is_none() {
                counts.add("healthy runners deleted", 1);
                counts.fail(format!("pass {pass}: healthy runner {name} was deleted"));
            }
        }
        if peak > quantity {
            counts.add("passes with instances above quantity", 1);
            let why = match &result {
                Ok(r) => format!(
                    "created {}, removed {:?}, failed {:?}",
                    r.created.len(),
                    r.removed,
                    r.failed
                ),
                Err(e) => format!("pass error: {e}"),
            };
            counts.fail(format!(
                "pass {pass}: {peak} instances > quantity {quantity} ({why})"
            ));
        }
        let regs_after = fleet.registrations(&admin).await?;
        let live = regs_after.iter().filter(|r| r.status == "online").count();
        if live > quantity {
            counts.fail(format!(
                "pass {pass}: {live} online registrations > {quantity}"
            ));
        }
        let extra = regs_after.len().saturating_sub(quantity) as u64;
        counts.add(
            "offline registrations above quantity after a pass (removed later)",
            extra,
        );
        let when = format!("pass {pass}");
        fail_killed(&fleet, &admin, &mut counted, &mut counts, &when).await?;
        counts.iterations += 1;
    }

    // Recovery: faults stopped, jobs finish; one pass must converge.
    admin.clear_faults().await?;
    fleet.complete_jobs(&admin).await?;
    let report = fleet.manager.reconcile(quantity, &fleet.resources).await;
    let instances = fleet.provider.instance_names().len();
    let regs = fleet.registrations(&admin).await?;
    let online = regs.iter().filter(|r| r.status == "online").count();
    let second = fleet.manager.reconcile(quantity, &fleet.resources).await;
    let converged = report.as_ref().is_ok_and(|r| r.failed.is_empty())
        && instances == quantity
        && regs.len() == quantity
        && online == quantity
        && second
            .as_ref()
            .is_ok_and(|r| r.created.is_empty() && r.removed.is_empty() && r.failed.is_empty());
    counts.add(
        "converged in one pass after the storm",
        u64::from(converged),
    );
    if !converged {
        counts.fail(format!(
            "no convergence in one pass: {instances} instances, {} registrations ({online} online), first {:?}, second {:?}",
            regs.len(),
            report.map(|r| (r.created.len(), r.removed.len(), r.failed)),
            second.map(|r| (r.created.len(), r.removed.len(), r.failed.len())),
        ));
    }
    let stats = fleet.client.stats().total();
    let counters: [Counter<github::EndpointStats>; 3] = [
        ("client retries (5xx, timeouts, drops)", |s| s.retries),
        ("client rate-limit waits (retry-after honoured)", |s| {
            s.rate_limit_waits
        }),
        ("client calls that failed", |s| s.errors),
    ];
    for (key, count) in counters {
        counts.add_growth(key, count(&stats_before), count(&stats));
    }
    counts.leaks += fleet.drain_leaks(&admin).await?;
    counts.add("healthy runners deleted", 0);
    counts.add("busy jobs killed", 0);
    counts.elapsed = started.elapsed();
    Ok(counts)
}
