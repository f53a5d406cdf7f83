//! R4: an Incus daemon restart while a reconcile creates instances.

use super::*;

/// Incus operations in flight that touch anything but this run's instances.
async fn foreign_operations(prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "10",
                "--unix-socket",
                "/var/lib/incus/unix.socket",
                "http://local/1.0/operations?recursion=1",
            ])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .context("curl on the Incus socket timed out")??;
    anyhow::ensure!(
        out.status.success(),
        "listing Incus operations: {}",
        out.status
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut foreign = Vec::new();
    for op in doc["metadata"]["running"].as_array().into_iter().flatten() {
        let instances: Vec<&str> = op["resources"]["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let ours = !instances.is_empty()
            && instances
                .iter()
                .all(|i| i.rsplit('/').next().is_some_and(|n| n.starts_with(prefix)));
        if !ours {
            foreign.push(format!(
                "{} {:?}",
                op["description"].as_str().unwrap_or("?"),
                instances
            ));
        }
    }
    Ok(foreign)
}

/// Runs `incus-env.sh <what>` (bounded); its stderr on success.
async fn incus_env(script: &Path, what: &str) -> anyhow::Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(150),
        tokio::process::Command::new(script)
            .arg(what)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .with_context(|| format!("incus-env.sh {what} timed out"))??;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "incus-env.sh {what}: {}: {stderr}",
        out.status
    );
    Ok(stderr)
}

/// R4: the Incus daemon restarts while a reconcile creates runners (from 0 or 1 runner): once
/// its first new instance shows up, plus a random 0-600 ms. The pass
/// must end on its own, within [`RESTART_PASS_BOUND`], with an exit status (0, or 1 reporting the
/// failed steps), never a panic; then one reconcile must converge. Before each restart the run
/// waits (bounded) until no other Incus operation is in flight, so that other users of the daemon
/// are not hurt; an iteration that never sees a quiet daemon is skipped and counted.
pub async fn r4_restart(world: &World, options: &Options) -> anyhow::Result<Tally> {
    let mut tally = Tally::new("R4 incusd restart during create");
    let started = Instant::now();
    let mut rng = Rng::new(options.seed ^ 0x4e57a27);
    let q = options.quantity;
    let mut attempts = 0;
    while tally.iterations < options.restarts && attempts < options.restarts * 3 {
        if options.out_of_time(&mut tally) {
            break;
        }
        attempts += 1;
        let start = u32::try_from(attempts % 2).unwrap_or(0).min(q - 1);
        world.ensure(start, &mut tally).await?;
        // Wait for the rest of the daemon to be quiet before starting.
        let quiet_deadline = Instant::now() + Duration::from_secs(120);
        let mut foreign = foreign_operations(&world.prefix()).await?;
        while !foreign.is_empty() && Instant::now() < quiet_deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            foreign = foreign_operations(&world.prefix()).await?;
        }
        if !foreign.is_empty() {
            world.log(&format!(
                "R4: skipping, others' operations in flight: {foreign:?}"
            ));
            tally.add("skipped: other operations in flight", 1);
            continue;
        }
        let pre = world.snapshot().await?;
        let before: BTreeSet<String> = pre.owned.keys().cloned().collect();
        let registered_before: BTreeSet<String> = pre.registrations.keys().cloned().collect();
        let pass_started = Instant::now();
        let mut child = world
            .command(&["reconcile", "--json"])
            .spawn()
            .context("spawning runner-manager")?;
        // Creates are in flight once a new instance shows up; then a random extra 0-3 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut appeared = false;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                break;
            }
            let snap = world.snapshot().await?;
            if snap.owned.keys().any(|n| !before.contains(n)) {
                appeared = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !appeared {
            let out = child.wait_with_output().await?;
            tally.fail_and_print(format!(
                "restart {}: the pass created nothing to interrupt (exit {:?}): {}",
                attempts,
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
            world.ensure(q, &mut tally).await?;
            continue;
        }
        // A moment within the creates (a pass on an idle host takes about a second).
        let extra = moment(&mut rng, Duration::from_millis(600));
        tokio::time::sleep(extra).await;
        let at_restart = world.snapshot().await?;
        if child.try_wait()?.is_some() {
            world.log("R4: the pass ended before the restart moment; again");
            tally.add("attempts where the pass ended first (not counted)", 1);
            world.ensure(q, &mut tally).await?;
            continue;
        }
        let restart_at = pass_started.elapsed();
        let restart_started = Instant::now();
        let log = incus_env(&options.incus_env, "restart").await;
        let restart_took = restart_started.elapsed();
        if let Err(e) = log {
            // Never leave the machine without its daemon.
            let up = incus_env(&options.incus_env, "up").await;
            bail!("restarting incusd failed: {e:#} (up: {up:?})");
        }
        tally.iterations += 1;
        tally.add("restart time (ms, sum)", restart_took.as_millis() as u64);
        let waited = tokio::time::timeout(RESTART_PASS_BOUND, child.wait_with_output()).await;
        let pass_took = pass_started.elapsed();
        let note = format!(
            "restart {} (from {start}, {:.1} s into the pass; at restart: {})",
            tally.iterations,
            restart_at.as_secs_f64(),
            at_restart.summary()
        );
        match waited {
            Err(_) => {
                tally.fail_and_print(format!("{note}: the pass hung past {RESTART_PASS_BOUND:?}"))
            }
            Ok(Err(e)) => tally.fail_and_print(format!("{note}: waiting for the pass: {e}")),
            Ok(Ok(out)) => {
                let out = Output {
                    code: out.status.code(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    took: pass_took,
                };
                max_evidence(&mut tally, "pass time (ms, max)", pass_took);
                let failed = out.json().and_then(|d| d["failed"].as_u64());
                match (out.code, failed) {
                    _ if out.panicked() => {
                        tally.fail_and_print(format!("{note}: the pass panicked: {}", out.tail()))
                    }
                    (Some(1), Some(n)) if n > 0 => {
                        tally.add("pass exit 1, failed steps reported", 1)
                    }
                    (Some(1), None) => tally.add("pass exit 1, pass aborted with an error", 1),
                    (Some(0), Some(0)) => tally.add("pass exit 0 (rode out the restart)", 1),
                    (code, failed) => tally.fail_and_print(format!(
                        "{note}: exit {code:?} with failed {failed:?}: {}",
                        out.tail()
                    )),
                }
                world.log(&format!(
                    "{note}: pass exit {:?} after {:.1} s, restart took {:.1} s",
                    out.code,
                    pass_took.as_secs_f64(),
                    restart_took.as_secs_f64()
                ));
            }
        }
        // Did the containers survive the restart?
        let after = world.snapshot().await?;
        let survived = at_restart
            .owned
            .keys()
            .filter(|n| after.owned.get(*n).is_some_and(|s| s == "Running"))
            .count();
        tally.add("instances at restart", at_restart.owned.len() as u64);
        tally.add("of them still running after the pass", survived as u64);
        if let Err(reason) = world.clean_pass(&mut tally, &registered_before).await {
            tally.fail_and_print(format!("{note}: next reconcile: {reason}"));
            world.recover(&mut tally).await?;
        }
    }
    tally.elapsed = started.elapsed();
    Ok(tally)
}
