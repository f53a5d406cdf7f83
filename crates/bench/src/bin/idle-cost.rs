//! The cost of an idle reconcile on REAL Incus: LXD API requests and execs per pass with N
//! healthy idle runners, against the previous pass's cost (one probe exec per instance)
//! reproduced in the same run on the same fleet.
//!
//! Counted three ways: the manager's provider calls (a wrapper around the real `LxdProvider`),
//! the daemon's `instance-exec` lifecycle events for the fleet's instances (`incus monitor
//! --type=lifecycle`, filtered by the run's name prefix: exact), and the daemon's "Handling API
//! request" debug log lines during the passes (`incus monitor --type=logging --loglevel=debug`:
//! every client of the daemon, so run it on a quiet daemon). GitHub requests per pass are the
//! simulator's REST counters.
//!
//! `cargo run --release -p bench --bin idle-cost [-- --sizes 10,100 --passes 5]`

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::real::{secs, Rig};
use bench::table::Table;
use clap::Parser;
use parking_lot::Mutex;

#[derive(Parser, Debug)]
struct Args {
    /// Fleet sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 100])]
    sizes: Vec<usize>,
    /// Idle passes measured per size.
    #[arg(long, default_value_t = 5)]
    passes: usize,
}

fn main() -> anyhow::Result<()> {
    bench::main(run)
}

/// Lines of an `incus monitor` child, collected by a thread.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new("incus")
            .arg("monitor")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `incus monitor` (is the incus client installed?)")?;
        let stdout = child.stdout.take().context("monitor stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().push(line);
            }
        });
        Ok(Self { child, lines })
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the daemon saw during a window.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    execs: usize,
    api_requests: usize,
}

/// Drains both monitors after a short settle and counts what concerns `prefix`.
async fn seen(lifecycle: &Monitor, logging: &Monitor, prefix: &str) -> Seen {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let execs = lifecycle
        .take()
        .iter()
        .filter(|l| l.contains("\"instance-exec\"") && l.contains(prefix))
        .count();
    let api_requests = logging
        .take()
        .iter()
        .filter(|l| l.contains("Handling API request"))
        .count();
    Seen {
        execs,
        api_requests,
    }
}

/// The simulator's REST requests so far (the runner protocol and downloads excluded).
fn rest_requests(sim: &github_sim::SimHandle) -> u64 {
    bench::outside::RestCost::from_counts(&sim.request_counts()).requests
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (rig, tag, _guard) = Rig::start_run("idle-cost").await?;
    let lifecycle = Monitor::start(&["--type=lifecycle", "--format=json"])?;
    let logging = Monitor::start(&["--type=logging", "--loglevel=debug", "--pretty"])?;
    let mut table = Table::new(&[
        "N",
        "passes",
        "provider calls/pass (now)",
        "execs/pass (now, daemon)",
        "API requests/pass (now, daemon)",
        "GitHub requests/pass (now)",
        "execs/pass (before: probe each)",
        "API requests/pass (before)",
        "execs now vs before",
        "idle pass wall time (now)",
    ]);
    for (i, &n) in args.sizes.iter().enumerate() {
        let app = format!("{tag}i{i}");
        let (manager, timeline) = rig.manager(&app, None).await?;
        let prefix = manager.owner().prefix();
        // Bring the fleet up and wait until GitHub reports every runner online.
        let t0 = Instant::now();
        let watcher = rig.watch_online(&prefix, n, t0, Duration::from_secs(600));
        for _ in 0..5 {
            let report = manager.reconcile(n, &rig.resources).await?;
            if report.created.is_empty() && report.failed.is_empty() {
                break;
            }
        }
        watcher.await??;
        eprintln!("N = {n}: fleet online in {}", secs(t0.elapsed()));
        // One pass to settle the ETag cache and the offline bookkeeping.
        manager.reconcile(n, &rig.resources).await?;
        seen(&lifecycle, &logging, &prefix).await;
        timeline.clear();
        let requests_before = rest_requests(&rig.sim);
        let started = Instant::now();
        for _ in 0..args.passes {
            let report = manager.reconcile(n, &rig.resources).await?;
            anyhow::ensure!(
                report.created.is_empty() && report.removed.is_empty() && report.failed.is_empty(),
                "an idle pass acted: {report:?}"
            );
            anyhow::ensure!(report.counts.idle == n, "not {n} idle: {report:?}");
        }
        let wall = started.elapsed() / args.passes as u32;
        let github = (rest_requests(&rig.sim) - requests_before) as f64 / args.passes as f64;
        let now = seen(&lifecycle, &logging, &prefix).await;
        let calls = timeline.calls().len() as f64 / args.passes as f64;

        // Before: the same list, plus one probe exec per instance, as every pass made until now.
        let provider = manager::adapters::LxdProvider::new(rig.lxd.clone());
        let owner = manager.owner().clone();
        let probe = manager::guest::probe();
        for _ in 0..args.passes {
            use manager::provider::InstanceProvider;
            let instances = provider.list_instances(&owner).await?;
            let probes = instances
                .iter()
                .filter(|i| owner.owns_instance(&i.name, &i.config))
                .map(|i| provider.exec(&i.name, &probe));
            for result in futures::future::join_all(probes).await {
                anyhow::ensure!(result?.exit_code == 0, "a probe found a runner not alive");
            }
        }
        let before = seen(&lifecycle, &logging, &prefix).await;
        let per = |x: usize| x as f64 / args.passes as f64;
        table.row(vec![
            n.to_string(),
            args.passes.to_string(),
            format!("{calls:.1}"),
            format!("{:.1}", per(now.execs)),
            format!("{:.1}", per(now.api_requests)),
            format!("{github:.1}"),
            format!("{:.1}", per(before.execs)),
            format!("{:.1}", per(before.api_requests)),
            format!("{:.2}×", per(now.execs) / per(before.execs).max(1e-9)),
            secs(wall),
        ]);
        rig.clean(&manager).await?;
    }
    println!("{}", table.render());
    Ok(())
}
