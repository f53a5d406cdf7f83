//! Benchmark 3: CPU time per reconcile and peak RSS of the manager at N = 1,000 runners.
//!
//! The manager runs in this process against the SIMULATION provider; github-sim and the agents'
//! long polls run in a child process, so this process's `getrusage` and `VmHWM` are the
//! manager's (plus the in-memory simulated provider, reported separately).
//!
//! `cargo run --release -p bench --bin scale-overhead`

use std::time::{Duration, Instant};

use bench::fleet::{spawn_outside, tarball_path, write_tarball, Fleet};
use bench::measure::{self, AllocStats};
use bench::table::{ratio, Table};
use manager::RegistrationMode;

#[global_allocator]
static ALLOC: measure::Counting = measure::Counting;

const N: usize = 1000;
const PASSES: u32 = 20;
/// For profiling (`perf record`): `BENCH_IDLE_PASSES=500` makes the idle phase dominate.
fn idle_passes() -> u32 {
    std::env::var("BENCH_IDLE_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PASSES)
}
const CPU_TARGET: Duration = Duration::from_millis(20);
const RSS_TARGET_MIB: f64 = 30.0;
/// A tarball of the real runner's order of size, for the per-pass binary check.
const REAL_TARBALL_MIB: usize = 128;

fn main() -> anyhow::Result<()> {
    bench::main(|bench::NoArgs {}| run())
}

/// What `passes` repetitions of `f` cost, per repetition.
struct Cost {
    cpu: Duration,
    wall: Duration,
    allocs: AllocStats,
    child_cpu: Option<Duration>,
}

async fn per_pass<F, Fut>(passes: u32, child: Option<u32>, mut f: F) -> anyhow::Result<Cost>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let child_before = child.and_then(measure::other_process_cpu);
    let allocs_before = AllocStats::now();
    let cpu_before = measure::process_cpu();
    let started = Instant::now();
    for _ in 0..passes {
        f().await?;
    }
    let wall = started.elapsed() / passes;
    let cpu = (measure::process_cpu() - cpu_before) / passes;
    let delta = AllocStats::now().since(&allocs_before);
    let child_cpu = match (child_before, child.and_then(measure::other_process_cpu)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) / passes),
        _ => None,
    };
    Ok(Cost {
        cpu,
        wall,
        allocs: AllocStats {
            allocations: delta.allocations / u64::from(passes),
            allocated_bytes: delta.allocated_bytes / u64::from(passes),
            live_bytes: delta.live_bytes,
        },
        child_cpu,
    })
}

/// Heap bytes the SIMULATION provider holds for its own bookkeeping (not the manager's): its
/// exec log (the latest 4,096) and every file left in its instances. An estimate from lengths.
fn simulation_heap_bytes(provider: &manager::sim_provider::SimProvider) -> usize {
    const STRING: usize = 24;
    let execs: usize = provider
        .execs()
        .iter()
        .map(|e| {
            3 * STRING
                + e.instance.len()
                + e.argv.iter().map(|a| STRING + a.len()).sum::<usize>()
                + e.env
                    .iter()
                    .map(|(k, v)| 2 * STRING + k.len() + v.len())
                    .sum::<usize>()
        })
        .sum();
    let files: usize = provider
        .instance_names()
        .iter()
        .filter_map(|name| provider.instance(name))
        .map(|i| {
            i.files
                .iter()
                .map(|(path, (content, _))| 2 * STRING + 8 + path.len() + content.len())
                .sum::<usize>()
        })
        .sum();
    execs + files
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_tarball(dir.path(), 0)?;
    let outside = spawn_outside(dir.path()).await?;
    let child = outside.pid();
    let fleet = Fleet::new(&outside, "bench", RegistrationMode::Token, 8).await?;
    let resources = fleet.resources.clone();
    let rss_start = measure::rss_mib();

    // Baseline 1: an empty reconcile (N = 0) of the same manager.
    fleet.converge(0, 1).await?;
    let empty = per_pass(PASSES, child, || async {
        fleet.manager.reconcile(0, &resources).await?;
        Ok(())
    })
    .await?;

    // Scale to N and settle.
    let started = Instant::now();
    fleet.converge(N, 3).await?;
    outside.wait_online_idle(N, Duration::from_secs(60)).await?;
    let scale_up = started.elapsed();
    let peak_after_scale_up = measure::peak_rss_mib();
    fleet.converge(N, 1).await?; // warm-up: fills the ETag cache

    // Steady state: N online idle runners, nothing changes.
    let reset = measure::reset_peak_rss();
    let live_before_idle = AllocStats::now().live_bytes;
    let execs_before = fleet.provider.exec_count();
    let idle = per_pass(idle_passes(), child, || async {
        let report = fleet.manager.reconcile(N, &resources).await?;
        anyhow::ensure!(
            report.created.is_empty() && report.removed.is_empty() && report.counts.idle == N,
            "pass was not idle: {:?}",
            report.counts
        );
        Ok(())
    })
    .await?;
    let steady_peak = measure::peak_rss_mib();
    let steady_rss = measure::rss_mib();
    let live_growth_per_pass = (idle.allocs.live_bytes as f64 - live_before_idle as f64)
        / f64::from(idle_passes())
        / 1024.0;
    let sim_held_mib = simulation_heap_bytes(&fleet.provider) as f64 / 1048576.0;
    let execs_per_pass = (fleet.provider.exec_count() - execs_before) / idle_passes() as u64;
    outside.wait_online_idle(N, Duration::from_secs(5)).await?;

    // Baseline 2: the bare conditional list of N runners (⌈N/100⌉ × 304) with a github client.
    let client = fleet.client.clone();
    client.list_runners(None).await?;
    let bare = per_pass(PASSES, child, || {
        let client = client.clone();
        async move {
            anyhow::ensure!(client.list_runners(None).await?.len() == N, "bare list");
            Ok(())
        }
    })
    .await?;

    // The per-pass runner-binary check with a tarball of the real runner's size (N = 0).
    let big_dir = tempfile::tempdir()?;
    write_tarball(big_dir.path(), REAL_TARBALL_MIB << 20)?;
    let tarball_mib =
        std::fs::metadata(tarball_path(big_dir.path()))?.len() as f64 / (1024.0 * 1024.0);
    let big_outside = spawn_outside(big_dir.path()).await?;
    let big_fleet = Fleet::new(&big_outside, "bigbin", RegistrationMode::Token, 8).await?;
    measure::reset_peak_rss();
    let rss_before_big = measure::rss_mib();
    let big_empty = per_pass(3, big_outside.pid(), || async {
        big_fleet.manager.reconcile(0, &big_fleet.resources).await?;
        Ok(())
    })
    .await?;
    let big_peak_extra = measure::peak_rss_mib() - rss_before_big;

    let mut table = Table::new(&[
        "measurement",
        "CPU/pass (manager process)",
        "wall/pass",
        "allocations/pass",
        "bytes allocated/pass",
        "sim+agents CPU/pass (child)",
        "CPU vs empty reconcile",
        "CPU vs bare list",
    ]);
    let row = |name: &str, c: &Cost| {
        vec![
            name.to_owned(),
            ms(c.cpu),
            ms(c.wall),
            c.allocs.allocations.to_string(),
            format!("{:.1} MiB", c.allocs.allocated_bytes as f64 / 1048576.0),
            c.child_cpu.map_or("?".to_owned(), ms),
            ratio(c.cpu.as_secs_f64(), empty.cpu.as_secs_f64()),
            ratio(c.cpu.as_secs_f64(), bare.cpu.as_secs_f64()),
        ]
    };
    table.row(row("baseline: empty reconcile, N = 0", &empty));
    table.row(row(&format!("baseline: bare list of {N} (304s)"), &bare));
    table.row(row(&format!("idle reconcile, N = {N}"), &idle));
    table.row(row(
        &format!("empty reconcile, N = 0, {tarball_mib:.0} MiB tarball"),
        &big_empty,
    ));
    println!("\n### CPU per reconcile ({PASSES} passes each; big tarball: 3)\n");
    print!("{}", table.render());

    let mut rss = Table::new(&["memory", "MiB", "target"]);
    rss.row(vec![
        "RSS after setup, before any runner".into(),
        format!("{rss_start:.1}"),
        String::new(),
    ]);
    rss.row(vec![
        format!("peak RSS (VmHWM) including scale-up 0 → {N}"),
        format!("{peak_after_scale_up:.1}"),
        format!("≤ {RSS_TARGET_MIB}"),
    ]);
    rss.row(vec![
        format!(
            "peak RSS during the idle passes at N = {N}{}",
            if reset {
                ""
            } else {
                " (VmHWM reset failed: lifetime)"
            }
        ),
        format!("{steady_peak:.1}"),
        format!("≤ {RSS_TARGET_MIB}"),
    ]);
    rss.row(vec![
        format!("RSS after the idle passes"),
        format!("{steady_rss:.1}"),
        String::new(),
    ]);
    rss.row(vec![
        "live heap after the idle passes (counting allocator)".into(),
        format!("{:.1}", idle.allocs.live_bytes as f64 / 1048576.0),
        String::new(),
    ]);
    rss.row(vec![
        "live heap growth per idle pass (KiB)".into(),
        format!("{live_growth_per_pass:.0}"),
        String::new(),
    ]);
    rss.row(vec![
        "heap held by the simulated provider (exec log, pushed files), estimate".into(),
        format!("{sim_held_mib:.1}"),
        String::new(),
    ]);
    rss.row(vec![
        format!("peak RSS during the idle passes minus the simulated provider's heap"),
        format!("{:.1}", steady_peak - sim_held_mib),
        format!("≤ {RSS_TARGET_MIB}"),
    ]);
    rss.row(vec![
        format!("peak RSS added by one pass with the {tarball_mib:.0} MiB tarball"),
        format!("{big_peak_extra:.1}"),
        String::new(),
    ]);
    println!("\n### Memory\n");
    print!("{}", rss.render());
    println!(
        "\nscale-up 0 → {N}: {:.1} s; probes (execs into the simulated provider) per idle pass: \
         {execs_per_pass}; targets: CPU ≤ {} per reconcile: {}; RSS ≤ {RSS_TARGET_MIB} MiB: {} \
         (process, simulated provider included), {} (manager's estimate, provider's heap excluded)",
        scale_up.as_secs_f64(),
        ms(CPU_TARGET),
        if idle.cpu <= CPU_TARGET {
            "met"
        } else {
            "MISSED"
        },
        if peak_after_scale_up.max(steady_peak) <= RSS_TARGET_MIB {
            "met"
        } else {
            "MISSED"
        },
        if peak_after_scale_up.max(steady_peak - sim_held_mib) <= RSS_TARGET_MIB {
            "met"
        } else {
            "MISSED"
        },
    );
    Ok(())
}
