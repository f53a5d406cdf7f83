//! Benchmark 6: baked images against plain launches and the floor, on REAL Incus. For each N:
//! the floor (N bare parallel launches + one exec each) of the baked image itself and of its
//! base image, then a demand pool of N (`min_idle = max = N`) reconciled from empty with
//! `image_mode = plain` and with `image_mode = baked` (its image built by the manager and
//! promoted by a warm-up pass first), each timed from the pass's start to N runners online in
//! github-sim. Also the image build once, by step. `--registration token,jit` measures both
//! registration modes in the same run against the same floor (a plain and a baked manager per
//! mode; the default is the pools' default, `token`).
//!
//! `cargo run --release -p bench --bin baked [-- --runs 3 --image busybox --n 10,50
//! --registration token,jit]`

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::baked::{self, ImageGuard, Recorder};
use bench::real::{self, median, retried, secs, Guard, Rig};
use bench::table::{phase_table, ratio, Table};
use clap::Parser;
use manager::images::ImageState;
use manager::pool::ImageMode;
use manager::reconcile::JIT_PER_MINUTE;
use manager::{RegistrationMode, RunnerManager};

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
    /// The pools' registration modes, each measured (plain and baked) against the same floor:
    /// `token`, `jit` (default: `token`, a pool's default).
    #[arg(long, value_delimiter = ',', default_value = "token", value_parser = registration)]
    registration: Vec<RegistrationMode>,
}

fn registration(s: &str) -> Result<RegistrationMode, String> {
    [RegistrationMode::Token, RegistrationMode::Jit]
        .into_iter()
        .find(|mode| mode.as_str() == s)
        .ok_or_else(|| format!("{s:?}: token or jit"))
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

/// One registration mode's pair of runs in a round.
struct ModeRun {
    plain: Run,
    baked: Run,
}

struct Round {
    floor_baked: Duration,
    floor_base: Duration,
    /// In the order of `--registration`.
    modes: Vec<ModeRun>,
}

/// The JIT registrations the run's managers sent in the last minute: each manager's pacer admits
/// [`JIT_PER_MINUTE`] a minute, and GitHub's secondary limit counts every manager of the run
/// (one token), so a pass of `n` waits here until all `n` fit (a round that creates fewer than
/// `n` is a failed round).
#[derive(Default)]
struct JitWindow {
    sent: VecDeque<(Instant, usize)>,
}

impl JitWindow {
    async fn before(&mut self, mode: RegistrationMode, n: usize) -> anyhow::Result<()> {
        if mode != RegistrationMode::Jit {
            return Ok(());
        }
        anyhow::ensure!(
            n <= JIT_PER_MINUTE,
            "N = {n} JIT runners do not fit the manager's pacing ({JIT_PER_MINUTE} a minute)"
        );
        let window = Duration::from_secs(61);
        loop {
            self.sent.retain(|(at, _)| at.elapsed() < window);
            let sent: usize = self.sent.iter().map(|(_, k)| k).sum();
            match self.sent.front() {
                Some((oldest, _)) if sent + n > JIT_PER_MINUTE => {
                    let wait = window.saturating_sub(oldest.elapsed());
                    eprintln!("jit: waiting {} for the pacing window", secs(wait));
                    tokio::time::sleep(wait).await;
                }
                _ => break,
            }
        }
        self.sent.push_back((Instant::now(), n));
        Ok(())
    }
}

/// A registration mode's two managers (plain and baked) for one N.
struct Side {
    mode: RegistrationMode,
    plain: RunnerManager,
    plain_rec: std::sync::Arc<Recorder>,
    baked: RunnerManager,
    baked_rec: std::sync::Arc<Recorder>,
    fingerprint: String,
    alias: String,
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
    let calls = recorder.calls();
    let mut profile = real::profile(&calls, &online_at, t0);
    profile.mean.insert(
        baked::EXEC_TO_ONLINE,
        baked::exec_to_online(&calls, &online_at, t0),
    );
    let stdin_per_runner = recorder.stdin_bytes() / n.max(1) as u64;
    rig.clean(manager).await?;
    Ok(Run {
        online,
        pass,
        profile,
        stdin_per_runner,
    })
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
    let mut builds: Vec<(String, Build)> = Vec::new();
    let mut failed_rounds = 0;
    let modes = args.registration.clone();
    let jit = tokio::sync::Mutex::new(JitWindow::default());
    for &n in &args.n {
        let mut sides: Vec<Side> = Vec::new();
        for &mode in &modes {
            let m = mode.as_str().chars().next().unwrap_or('x');
            let plain_pool = baked::pool(&args.image, &rig.resources, n, ImageMode::Plain, mode)?;
            let baked_pool = baked::pool(&args.image, &rig.resources, n, ImageMode::Baked, mode)?;
            let (plain, plain_rec) = baked::manager(
                &rig,
                state.path(),
                &format!("{tag}p{m}{n}"),
                plain_pool,
                args.concurrency,
            )
            .await?;
            let (bakedm, baked_rec) = baked::manager(
                &rig,
                state.path(),
                &format!("{tag}k{m}{n}"),
                baked_pool,
                args.concurrency,
            )
            .await?;
            let (fingerprint, built) = build(&bakedm, &baked_rec).await?;
            eprintln!(
                "N={n} {}: image {} built in {} {}",
                mode.as_str(),
                built.alias,
                secs(built.total),
                built.size_note
            );
            let alias = built.alias.clone();
            builds.push((format!("N={n} {}", mode.as_str()), built));
            jit.lock().await.before(mode, n).await?;
            let started = Instant::now();
            let passes = warm_up(&rig, &bakedm, n, &fingerprint).await?;
            eprintln!(
                "N={n} {}: warm-up promoted the image in {} pass(es) after the first, {}",
                mode.as_str(),
                passes,
                secs(started.elapsed())
            );
            sides.push(Side {
                mode,
                plain,
                plain_rec,
                baked: bakedm,
                baked_rec,
                fingerprint,
                alias,
            });
        }
        let Some(alias) = sides.first().map(|s| s.alias.clone()) else {
            anyhow::bail!("no registration mode to measure");
        };
        for rep in 0..args.runs {
            // Each repetition measures the same rounds in a rotated order, so that no round
            // is always the first or the last (the host slows down as a repetition goes on:
            // the deleted instances' volumes are still being cleaned up).
            #[derive(Clone, Copy)]
            enum Step {
                Floor,
                FloorBase,
                Plain(usize),
                Baked(usize),
            }
            let mut steps = vec![Step::Floor, Step::FloorBase];
            for i in 0..sides.len() {
                steps.extend([Step::Plain(i), Step::Baked(i)]);
            }
            let turn = rep % steps.len();
            steps.rotate_left(turn);
            let (mut floor_baked, mut floor_base) = (None, None);
            let mut plain_runs: Vec<Option<_>> = sides.iter().map(|_| None).collect();
            let mut baked_runs: Vec<Option<_>> = sides.iter().map(|_| None).collect();
            for step in steps {
                match step {
                    Step::Floor => {
                        let prefix = format!("{tag}f{n}x{rep}k-");
                        let floor = baked::floor(&rig, &alias, &prefix, n).await;
                        rig.delete_prefix(&prefix).await?;
                        floor_baked = Some(floor?);
                    }
                    Step::FloorBase => {
                        let prefix = format!("{tag}f{n}x{rep}b-");
                        let floor = baked::floor(&rig, &args.image, &prefix, n).await;
                        rig.delete_prefix(&prefix).await?;
                        floor_base = Some(floor?);
                    }
                    Step::Plain(i) => {
                        let side = &sides[i];
                        let run = retried(&mut failed_rounds, || async {
                            jit.lock().await.before(side.mode, n).await?;
                            measure(&rig, &side.plain, side.plain_rec.as_ref(), n, None).await
                        })
                        .await?;
                        plain_runs[i] = Some(run);
                    }
                    Step::Baked(i) => {
                        let side = &sides[i];
                        let run = retried(&mut failed_rounds, || async {
                            jit.lock().await.before(side.mode, n).await?;
                            let fingerprint = Some(side.fingerprint.as_str());
                            measure(&rig, &side.baked, side.baked_rec.as_ref(), n, fingerprint)
                                .await
                        })
                        .await?;
                        baked_runs[i] = Some(run);
                    }
                }
            }
            let (Some(floor_baked), Some(floor_base)) = (floor_baked, floor_base) else {
                anyhow::bail!("N={n} rep {rep}: a floor was not measured");
            };
            let mut mode_runs = Vec::new();
            for ((side, plain_run), baked_run) in sides.iter().zip(plain_runs).zip(baked_runs) {
                let (Some(plain_run), Some(baked_run)) = (plain_run, baked_run) else {
                    anyhow::bail!("N={n} rep {rep}: a round was not measured");
                };
                eprintln!(
                    "N={n} {} rep {rep}: floor {} (base image {}), plain {} (pass {}), baked {} (pass {})",
                    side.mode.as_str(),
                    secs(floor_baked),
                    secs(floor_base),
                    secs(plain_run.online),
                    secs(plain_run.pass),
                    secs(baked_run.online),
                    secs(baked_run.pass),
                );
                mode_runs.push(ModeRun {
                    plain: plain_run,
                    baked: baked_run,
                });
            }
            rounds.entry(n).or_default().push(Round {
                floor_baked,
                floor_base,
                modes: mode_runs,
            });
        }
    }

    let mut table = Table::new(&[
        "N",
        "registration",
        "floor (baked image)",
        "floor (base image)",
        "plain → N online",
        "baked → N online",
        "baked/floor",
        "plain/floor",
        "baked/plain",
    ]);
    for (n, list) in &rounds {
        let pick = |f: &dyn Fn(&Round) -> Duration| median(&list.iter().map(f).collect::<Vec<_>>());
        let floor = pick(&|r| r.floor_baked);
        let floor_base = pick(&|r| r.floor_base);
        for (k, mode) in modes.iter().enumerate() {
            let plain = pick(&|r| r.modes[k].plain.online);
            let baked_online = pick(&|r| r.modes[k].baked.online);
            table.row(vec![
                n.to_string(),
                mode.as_str().to_owned(),
                secs(floor),
                secs(floor_base),
                secs(plain),
                secs(baked_online),
                ratio(baked_online.as_secs_f64(), floor.as_secs_f64()),
                ratio(plain.as_secs_f64(), floor.as_secs_f64()),
                ratio(baked_online.as_secs_f64(), plain.as_secs_f64()),
            ]);
        }
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
        "registration",
        "floor (baked)",
        "floor (base)",
        "plain online",
        "plain pass returned",
        "baked online",
        "baked pass returned",
    ]);
    for (n, list) in &rounds {
        for (i, r) in list.iter().enumerate() {
            for (mode, m) in modes.iter().zip(&r.modes) {
                per_run.row(vec![
                    n.to_string(),
                    i.to_string(),
                    mode.as_str().to_owned(),
                    secs(r.floor_baked),
                    secs(r.floor_base),
                    secs(m.plain.online),
                    secs(m.plain.pass),
                    secs(m.baked.online),
                    secs(m.baked.pass),
                ]);
            }
        }
    }
    println!("\n### Per run\n");
    print!("{}", per_run.render());

    type Pick = fn(&ModeRun) -> &Run;
    for (label, pick) in [
        ("plain", (|r: &ModeRun| &r.plain) as Pick),
        ("baked", |r: &ModeRun| &r.baked),
    ] {
        let columns: Vec<(usize, usize, RegistrationMode)> = rounds
            .keys()
            .flat_map(|&n| modes.iter().enumerate().map(move |(k, m)| (n, k, *m)))
            .collect();
        let runs_of = |n: usize, k: usize| -> Vec<&Run> {
            rounds
                .get(&n)
                .map(|list| list.iter().map(|r| pick(&r.modes[k])).collect())
                .unwrap_or_default()
        };
        let profiles: Vec<(String, Vec<&real::Profile>)> = columns
            .iter()
            .map(|&(n, k, m)| {
                let runs = runs_of(n, k).into_iter().map(|r| &r.profile).collect();
                (format!("N={n} {}", m.as_str()), runs)
            })
            .collect();
        let mut phases = phase_table(&baked::phase_order(), &profiles);
        let mut row = vec!["setup exec stdin per runner (KiB)".to_owned()];
        row.extend(columns.iter().map(|&(n, k, _)| {
            let runs = runs_of(n, k);
            let bytes =
                runs.iter().map(|r| r.stdin_per_runner).sum::<u64>() / runs.len().max(1) as u64;
            format!("{:.1}", bytes as f64 / 1024.0)
        }));
        phases.row(row);
        println!("\n### Where a runner's time goes: {label} (averaged over runs)\n");
        print!("{}", phases.render());
    }

    if !builds.is_empty() {
        let mut header = vec!["image build step".to_owned()];
        header.extend(builds.iter().map(|(n, _)| format!("pool of {n}")));
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
