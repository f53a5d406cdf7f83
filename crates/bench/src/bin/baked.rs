//! Benchmark 6: baked images against plain launches and the floor, on REAL Incus. For each N:
//! the floor (N bare parallel launches + one exec each) of the baked image itself and of its
//! base image, then a demand pool of N (`min_idle = max = N`) reconciled from empty with
//! `image_mode = plain` and with `image_mode = baked` (its image built by the manager and
//! promoted by a warm-up pass first), each timed from the pass's start to N runners online in
//! github-sim. Also the image build once, by step.
//!
//! `cargo run --release -p bench --bin baked [-- --runs 3 --image busybox --n 10,50]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::baked::{self, ImageGuard, Recorder};
use bench::real::{self, median, secs, Guard, Rig};
use bench::table::{ratio, Table};
use clap::Parser;
use manager::images::ImageState;
use manager::pool::ImageMode;
use manager::RunnerManager;

#[derive(Parser, Debug)]
struct Args {
    /// Repetitions per N (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The pool's base image (alias).
    #[arg(long, default_value = "busybox")]
    image: String,
    /// Pool sizes.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    n: Vec<usize>,
    /// `create_concurrency` of both managers (default: `ManagerConfig`'s default).
    #[arg(long)]
    concurrency: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bench::block_on(run(args))
}

/// One pass from empty to N online.
struct Run {
    online: Duration,
    pass: Duration,
    profile: real::Profile,
    /// Bytes on the setup execs' stdin, per runner.
    stdin_per_runner: u64,
}

struct Round {
    floor_baked: Duration,
    floor_base: Duration,
    plain: Run,
    baked: Run,
}

/// The image build, by step.
struct Build {
    total: Duration,
    steps: Vec<(&'static str, Duration)>,
    alias: String,
    size_note: String,
}

/// `reconcile_demand` from zero, timed until `n` runners are online; checks every runner was
/// launched from `expect` (`Some(fingerprint)`: that baked image; `None`: the base image).
/// Cleaned up after.
async fn measure(
    rig: &Rig,
    manager: &RunnerManager,
    recorder: &Recorder,
    n: usize,
    expect: Option<&str>,
) -> anyhow::Result<Run> {
    let prefix = manager.owner().prefix();
    let limit = Duration::from_secs(240);
    recorder.clear();
    let t0 = Instant::now();
    let watcher = rig.watch_online(&prefix, n, t0, limit);
    let report = tokio::time::timeout(limit, manager.reconcile_demand(None)).await;
    let pass = t0.elapsed();
    for error in recorder.errors() {
        eprintln!("provider error (the manager retried or failed): {error}");
    }
    let report = match report {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            watcher.abort();
            rig.clean(manager).await?;
            return Err(e).context("reconcile_demand");
        }
        Err(_) => {
            watcher.abort();
            rig.clean(manager).await?;
            anyhow::bail!("reconcile_demand timed out after {limit:?}");
        }
    };
    let launched = recorder.images();
    let wrong: Vec<String> = launched
        .iter()
        .filter(|(_, (_, fingerprint))| fingerprint.as_deref() != expect)
        .map(|(name, (alias, fingerprint))| format!("{name} from {alias} ({fingerprint:?})"))
        .collect();
    if !(report.failed.is_empty() && report.created.len() == n && wrong.is_empty()) {
        watcher.abort();
        rig.clean(manager).await?;
        anyhow::bail!(
            "the pass created {} of {n} runners; first failure: {:?}; launched from another image than {expect:?}: {wrong:?}",
            report.created.len(),
            report.failed.first().map(|f| &f.error),
        );
    }
    let online_at = watcher.await??;
    let online = online_at.values().copied().max().unwrap_or_default();
    let profile = real::profile(&recorder.calls(), &online_at, t0);
    let stdin_per_runner = recorder.stdin_bytes() / n.max(1) as u64;
    rig.clean(manager).await?;
    Ok(Run {
        online,
        pass,
        profile,
        stdin_per_runner,
    })
}

/// Runs `round` up to 3 times, counting the failed attempts.
async fn retried<F, Fut>(failed: &mut usize, mut round: F) -> anyhow::Result<Run>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Run>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match round().await {
            Ok(run) => return Ok(run),
            Err(e) if attempt < 3 => {
                *failed += 1;
                eprintln!("round failed, repeating it: {e:#}");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Builds the baked pool's image with the manager, timed by step.
async fn build(manager: &RunnerManager, recorder: &Recorder) -> anyhow::Result<(String, Build)> {
    let pool = manager
        .pools()
        .first()
        .cloned()
        .context("the manager has no pool")?;
    recorder.clear();
    let started = Instant::now();
    let image = manager
        .build_image(&pool)
        .await
        .context("building the baked image")?;
    let total = started.elapsed();
    let steps = [
        baked::CREATE,
        baked::BAKE,
        baked::STOP,
        baked::PUBLISH,
        baked::DELETE,
    ]
    .into_iter()
    .map(|phase| (phase, recorder.total(phase)))
    .collect();
    let size_note = match manager.baked_images().await {
        Ok(images) => images
            .iter()
            .find(|i| i.fingerprint == image.fingerprint)
            .map_or_else(String::new, |i| {
                format!("{:.1} MiB", i.size as f64 / 1024.0 / 1024.0)
            }),
        Err(_) => String::new(),
    };
    Ok((
        image.fingerprint.clone(),
        Build {
            total,
            steps,
            alias: image.alias,
            size_note,
        },
    ))
}

/// The warm-up: a pass from empty launches every runner on the new image (a canary, the pool's
/// first image), the runners come online, the next pass promotes it; then the fleet is removed.
/// Returns how many passes the promotion took.
async fn warm_up(
    rig: &Rig,
    manager: &RunnerManager,
    n: usize,
    fingerprint: &str,
) -> anyhow::Result<usize> {
    let prefix = manager.owner().prefix();
    let limit = Duration::from_secs(240);
    let t0 = Instant::now();
    let watcher = rig.watch_online(&prefix, n, t0, limit);
    let result = async {
        let report = manager.reconcile_demand(None).await?;
        anyhow::ensure!(
            report.created.len() == n,
            "warm-up: created {} of {n}; first failure: {:?}",
            report.created.len(),
            report.failed.first().map(|f| &f.error)
        );
        watcher.await??;
        for pass in 1..=5 {
            manager.reconcile_demand(None).await?;
            let state = manager
                .baked_images()
                .await?
                .into_iter()
                .find(|i| i.fingerprint == fingerprint)
                .map(|i| i.state);
            match state {
                Some(ImageState::Good) => return Ok(pass),
                Some(ImageState::Bad) => anyhow::bail!("warm-up: the image was rolled back"),
                None => anyhow::bail!("warm-up: the image is gone"),
                Some(ImageState::Canary) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        anyhow::bail!("warm-up: the image is still a canary after 5 passes")
    }
    .await;
    rig.clean(manager).await?;
    result
}

async fn run(args: Args) -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let tag = real::run_tag();
    // Dropped in reverse order: the instances first, then the images.
    let _images = ImageGuard::new(tag.clone());
    let _guard = Guard::new(tag.clone());
    let state = tempfile::tempdir()?;
    eprintln!(
        "baked: sim at {}, instances and images of {tag}*, base image {}, N = {:?}, {} run(s)",
        rig.sim.base_url(),
        args.image,
        args.n,
        args.runs
    );

    let mut rounds: BTreeMap<usize, Vec<Round>> = BTreeMap::new();
    let mut builds: Vec<(usize, Build)> = Vec::new();
    let mut failed_rounds = 0;
    for &n in &args.n {
        let plain_pool = baked::pool(&args.image, &rig.resources, n, ImageMode::Plain)?;
        let baked_pool = baked::pool(&args.image, &rig.resources, n, ImageMode::Baked)?;
        let (plain, plain_rec) = baked::manager(
            &rig,
            state.path(),
            &format!("{tag}p{n}"),
            plain_pool,
            args.concurrency,
        )
        .await?;
        let (bakedm, baked_rec) = baked::manager(
            &rig,
            state.path(),
            &format!("{tag}k{n}"),
            baked_pool,
            args.concurrency,
        )
        .await?;
        let (fingerprint, built) = build(&bakedm, &baked_rec).await?;
        eprintln!(
            "N={n}: image {} built in {} {}",
            built.alias,
            secs(built.total),
            built.size_note
        );
        let alias = built.alias.clone();
        builds.push((n, built));
        let started = Instant::now();
        let passes = warm_up(&rig, &bakedm, n, &fingerprint).await?;
        eprintln!(
            "N={n}: warm-up promoted the image in {} pass(es) after the first, {}",
            passes,
            secs(started.elapsed())
        );
        for rep in 0..args.runs {
            let prefix = format!("{tag}f{n}x{rep}k-");
            let floor_baked = baked::floor(&rig, &alias, &prefix, n).await;
            rig.delete_prefix(&prefix).await?;
            let floor_baked = floor_baked?;
            let prefix = format!("{tag}f{n}x{rep}b-");
            let floor_base = baked::floor(&rig, &args.image, &prefix, n).await;
            rig.delete_prefix(&prefix).await?;
            let floor_base = floor_base?;
            let plain_run = retried(&mut failed_rounds, || {
                measure(&rig, &plain, &plain_rec, n, None)
            })
            .await?;
            let baked_run = retried(&mut failed_rounds, || {
                measure(&rig, &bakedm, &baked_rec, n, Some(&fingerprint))
            })
            .await?;
            eprintln!(
                "N={n} rep {rep}: floor {} (base image {}), plain {} (pass {}), baked {} (pass {})",
                secs(floor_baked),
                secs(floor_base),
                secs(plain_run.online),
                secs(plain_run.pass),
                secs(baked_run.online),
                secs(baked_run.pass),
            );
            rounds.entry(n).or_default().push(Round {
                floor_baked,
                floor_base,
                plain: plain_run,
                baked: baked_run,
            });
        }
    }

    let mut table = Table::new(&[
        "N",
        "floor (baked image)",
        "floor (base image)",
        "plain → N online",
        "baked → N online",
        "baked/floor",
        "plain/floor",
        "baked/plain",
    ]);
    for (n, list) in &rounds {
        let pick = |f: fn(&Round) -> Duration| median(&list.iter().map(f).collect::<Vec<_>>());
        let floor = pick(|r| r.floor_baked);
        let plain = pick(|r| r.plain.online);
        let baked_online = pick(|r| r.baked.online);
        table.row(vec![
            n.to_string(),
            secs(floor),
            secs(pick(|r| r.floor_base)),
            secs(plain),
            secs(baked_online),
            ratio(baked_online.as_secs_f64(), floor.as_secs_f64()),
            ratio(plain.as_secs_f64(), floor.as_secs_f64()),
            ratio(baked_online.as_secs_f64(), plain.as_secs_f64()),
        ]);
    }
    println!(
        "\n### Baked against plain and the floor (median of {} run(s); target baked ≤ 1.10× floor at N = 10)\n",
        args.runs
    );
    print!("{}", table.render());
    println!("\nRounds repeated after a failed creation: {failed_rounds}");

    let mut per_run = Table::new(&[
        "N",
        "run",
        "floor (baked)",
        "floor (base)",
        "plain online",
        "plain pass returned",
        "baked online",
        "baked pass returned",
    ]);
    for (n, list) in &rounds {
        for (i, r) in list.iter().enumerate() {
            per_run.row(vec![
                n.to_string(),
                i.to_string(),
                secs(r.floor_baked),
                secs(r.floor_base),
                secs(r.plain.online),
                secs(r.plain.pass),
                secs(r.baked.online),
                secs(r.baked.pass),
            ]);
        }
    }
    println!("\n### Per run\n");
    print!("{}", per_run.render());

    type Pick = fn(&Round) -> &Run;
    for (label, pick) in [
        ("plain", (|r: &Round| &r.plain) as Pick),
        ("baked", |r: &Round| &r.baked),
    ] {
        let mut header = vec!["phase (mean s per runner)".to_owned()];
        header.extend(rounds.keys().map(|n| format!("N={n}")));
        let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut phases = Table::new(&header_refs);
        for phase in baked::phase_order() {
            let cells: Vec<f64> = rounds
                .values()
                .map(|list| {
                    list.iter()
                        .map(|r| pick(r).profile.mean.get(phase).copied().unwrap_or(0.0))
                        .sum::<f64>()
                        / list.len().max(1) as f64
                })
                .collect();
            if cells.iter().all(|v| *v == 0.0) {
                continue;
            }
            let mut row = vec![phase.to_owned()];
            row.extend(cells.iter().map(|v| format!("{v:.2}")));
            phases.row(row);
        }
        let mut row = vec!["setup exec stdin per runner (KiB)".to_owned()];
        row.extend(rounds.values().map(|list| {
            let bytes = list.iter().map(|r| pick(r).stdin_per_runner).sum::<u64>()
                / list.len().max(1) as u64;
            format!("{:.1}", bytes as f64 / 1024.0)
        }));
        phases.row(row);
        println!("\n### Where a runner's time goes: {label} (averaged over runs)\n");
        print!("{}", phases.render());
    }

    if !builds.is_empty() {
        let mut header = vec!["image build step".to_owned()];
        header.extend(builds.iter().map(|(n, _)| format!("pool of N={n}")));
        let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut table = Table::new(&header_refs);
        let steps: Vec<&'static str> = builds
            .first()
            .map(|(_, b)| b.steps.iter().map(|(s, _)| *s).collect())
            .unwrap_or_default();
        for (i, step) in steps.iter().enumerate() {
            let mut row = vec![(*step).to_owned()];
            row.extend(
                builds
                    .iter()
                    .map(|(_, b)| b.steps.get(i).map_or_else(String::new, |(_, d)| secs(*d))),
            );
            table.row(row);
        }
        let mut row = vec!["build_image, total".to_owned()];
        row.extend(builds.iter().map(|(_, b)| secs(b.total)));
        table.row(row);
        let mut row = vec!["image size".to_owned()];
        row.extend(builds.iter().map(|(_, b)| b.size_note.clone()));
        table.row(row);
        println!(
            "\n### Image build (`RunnerManager::build_image`, base {}; one build per pool)\n",
            args.image
        );
        print!("{}", table.render());
    }

    // Explicit cleanup (the guards do it again on any path out, finding nothing).
    let instances = rig.delete_prefix(&tag).await?;
    let images = baked::delete_images(&rig.lxd, &tag).await?;
    eprintln!("cleanup: {instances} instance(s), {images} image(s) deleted");
    Ok(())
}
