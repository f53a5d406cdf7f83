//! Benchmark 6 (`baked`): launches from a baked image against plain launches and the floor, on
//! REAL Incus. The harness of [`crate::real`] (its [`Rig`]: github-sim on the bridge, the fake
//! runner), plus what the baked path needs:
//! - [`Recorder`], which times every call of the manager's provider (through
//!   [`manager::tap::Tapped`], as [`crate::real::TimingProvider`] does), image calls included;
//! - [`manager`]: a manager with one configured pool (`[[pools]]`), plain or baked;
//! - [`floor`]: N bare launches of any image alias (the baked one);
//! - [`ImageGuard`]: deletes every image whose `runner-manager.app` starts with the run's tag,
//!   even on panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use manager::images::{IMAGE_KEY, PROP_APP};
use manager::pool::{ImageMode, PoolName, PoolSpec, Sizing};
use manager::provider::{ExecPurpose, ProviderError};
use manager::tap::{Call as TapCall, Tap};
use manager::{InstanceType, RegistrationMode, Resources, RunnerManager};
use parking_lot::Mutex;

use crate::real::{Call, Rig, Timeline};

/// The pool every benchmark manager has.
pub const POOL: &str = "bench";

/// Phase names of the recorded calls.
pub const CREATE: &str = "create+start";
pub const PUSH: &str = "push bundle (providers without stdin)";
pub const SETUP: &str = "setup exec";
pub const BAKE: &str = "bake exec (unpack runner + files)";
pub const STOP: &str = "stop";
pub const PUBLISH: &str = "publish";
pub const DELETE: &str = "delete";
pub const PROBE: &str = "probe";
pub const OTHER: &str = "other";

/// Every call a manager made, and the image each instance was created from.
#[derive(Debug, Default)]
pub struct Recorder {
    timeline: Timeline,
    /// Instance → (the image alias it was created from, the baked fingerprint it carries).
    images: Mutex<BTreeMap<String, (String, Option<String>)>>,
    /// Bytes sent on the setup execs' standard input (the install bundle).
    stdin_bytes: Mutex<u64>,
}

impl Recorder {
    pub fn clear(&self) {
        self.timeline.clear();
        self.images.lock().clear();
        *self.stdin_bytes.lock() = 0;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.timeline.calls()
    }

    pub fn errors(&self) -> Vec<String> {
        self.timeline.errors()
    }

    pub fn images(&self) -> BTreeMap<String, (String, Option<String>)> {
        self.images.lock().clone()
    }

    pub fn stdin_bytes(&self) -> u64 {
        *self.stdin_bytes.lock()
    }

    /// Seconds spent in `phase` over every call (for the image build: one instance).
    pub fn total(&self, phase: &str) -> Duration {
        self.calls()
            .iter()
            .filter(|c| c.phase == phase)
            .map(|c| c.end.saturating_duration_since(c.start))
            .sum()
    }
}

impl Tap for Recorder {
    fn record(&self, call: TapCall<'_>, started: Instant, error: Option<&ProviderError>) {
        let phase = match call {
            TapCall::ListInstances => "list",
            TapCall::ListImages => "list images",
            TapCall::CreateAndStart(spec) => {
                self.images.lock().insert(
                    spec.name.clone(),
                    (spec.image.clone(), spec.config.get(IMAGE_KEY).cloned()),
                );
                CREATE
            }
            TapCall::Exec(_, request) => match request.purpose {
                ExecPurpose::Setup => {
                    *self.stdin_bytes.lock() +=
                        request.stdin.as_ref().map_or(0, |s| s.len() as u64);
                    SETUP
                }
                ExecPurpose::Bake => BAKE,
                ExecPurpose::Probe => PROBE,
                _ => OTHER,
            },
            TapCall::PushFile(_, file) if file.path == manager::install::BUNDLE_PATH => PUSH,
            TapCall::PushFile(..) | TapCall::PullFile(..) => OTHER,
            TapCall::Delete(_) => DELETE,
            TapCall::Stop(_) => STOP,
            TapCall::Publish(_) => PUBLISH,
            _ => return,
        };
        self.timeline.push(call.instance(), phase, started, error);
    }
}

/// The one pool of a benchmark manager: `n` runners by demand (`min_idle = max = n`) of
/// `image`, launched as `mode` says, registered as `registration` says.
pub fn pool(
    image: &str,
    resources: &Resources,
    n: usize,
    mode: ImageMode,
    registration: RegistrationMode,
) -> anyhow::Result<PoolSpec> {
    Ok(PoolSpec {
        name: PoolName::new(POOL)?,
        image: image.to_owned(),
        instance_type: InstanceType::Container,
        resources: resources.clone(),
        profiles: Vec::new(),
        labels: Vec::new(),
        runner_group: None,
        registration,
        sizing: Sizing::Demand {
            min_idle: n,
            max: n,
        },
        priority: 0,
        image_mode: mode,
        placement: manager::pool::Placement::default(),
        marked: true,
    })
}

/// A manager for `app` (unit 0) over the real provider, every call recorded, with `pool` as its
/// only `[[pools]]` entry and the runner binary installed. `state`: its own directory.
pub async fn manager(
    rig: &Rig,
    state: &Path,
    app: &str,
    pool: PoolSpec,
    concurrency: Option<usize>,
) -> anyhow::Result<(RunnerManager, Arc<Recorder>)> {
    let recorder = Arc::new(Recorder::default());
    let image = pool.image.clone();
    let manager = rig
        .tapped_manager(app, state, &image, recorder.clone(), |config| {
            config.pools = vec![pool];
            if let Some(n) = concurrency {
                config.create_concurrency = n;
            }
        })
        .await?;
    Ok((manager, recorder))
}

/// The floor: `n` instances of `image` (an alias) launched in parallel with the rig's profiles,
/// plus one exec in each; the wall time. The instances are left for [`Rig::delete_prefix`].
pub async fn floor(rig: &Rig, image: &str, prefix: &str, n: usize) -> anyhow::Result<Duration> {
    crate::real::launch_floor(
        &rig.lxd,
        image,
        &rig.profiles,
        prefix,
        n,
        Duration::from_secs(30),
    )
    .await
}

/// Deletes every image whose `runner-manager.app` starts with `tag`; the count.
pub async fn delete_images(lxd: &lxd::Client, tag: &str) -> anyhow::Result<usize> {
    let mine: Vec<String> = lxd
        .list_images()
        .await?
        .into_iter()
        .filter(|i| {
            i.properties
                .get(PROP_APP)
                .is_some_and(|a| a.starts_with(tag))
        })
        .map(|i| i.fingerprint)
        .collect();
    for fingerprint in &mine {
        lxd.delete_image_if_exists(fingerprint)
            .await
            .with_context(|| format!("deleting image {fingerprint}"))?;
    }
    Ok(mine.len())
}

/// Deletes the run's images when dropped (on its own thread and runtime, as
/// [`crate::real::Guard`] does for instances). Declare it before the instance guard: the
/// instances go first, then the images they were made from.
pub struct ImageGuard {
    tag: String,
}

impl ImageGuard {
    pub fn new(tag: impl Into<String>) -> Self {
        Self { tag: tag.into() }
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let tag = self.tag.clone();
        let cleanup = crate::real::clean_up_on_own_thread(None, |lxd| async move {
            delete_images(&lxd, &tag).await
        });
        match cleanup {
            Some(Ok(0)) => {}
            Some(Ok(n)) => eprintln!("image guard: deleted {n} image(s) of {}*", self.tag),
            Some(Err(e)) => eprintln!("image guard: cleanup of {}* failed: {e:#}", self.tag),
            None => {
                eprintln!("image guard: cleanup thread panicked or could not start its runtime")
            }
        }
    }
}

/// The row of the time from a runner's setup exec's start to its runner online in the sim.
pub const EXEC_TO_ONLINE: &str = "setup exec start → online in sim";

/// The mean, over runners, of the time from the start of each one's setup exec to its runner
/// online in the sim (`online`: since `t0`, as [`crate::real::Rig::watch_online`] reports).
pub fn exec_to_online(calls: &[Call], online: &BTreeMap<String, Duration>, t0: Instant) -> f64 {
    let mut sum = 0.0;
    let mut runners = 0;
    for call in calls.iter().filter(|c| c.phase == SETUP) {
        if let Some(at) = online.get(&call.instance) {
            let started = call.start.saturating_duration_since(t0);
            sum += at.saturating_sub(started).as_secs_f64();
            runners += 1;
        }
    }
    sum / f64::from(runners.max(1))
}

/// The rows of the per-runner phase table, in launch order.
pub fn phase_order() -> Vec<&'static str> {
    vec![
        "before first call (observe, token, slot)",
        CREATE,
        PUSH,
        SETUP,
        PROBE,
        OTHER,
        "run.sh alive → online in sim",
        EXEC_TO_ONLINE,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_to_online_is_measured_from_each_setup_exec() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let call = |instance: &str, phase: &'static str, start: u64, end: u64| Call {
            instance: instance.to_owned(),
            phase,
            start: at(start),
            end: at(end),
        };
        let calls = vec![
            call("a", CREATE, 0, 1000),
            call("a", SETUP, 1000, 1200),
            call("b", CREATE, 0, 1100),
            call("b", SETUP, 1100, 1400),
            call("c", SETUP, 1000, 1100),
        ];
        let online: BTreeMap<String, Duration> = [
            ("a".to_owned(), Duration::from_millis(1100)),
            ("b".to_owned(), Duration::from_millis(1400)),
        ]
        .into();
        let mean = exec_to_online(&calls, &online, t0);
        assert!((mean - 0.2).abs() < 1e-9, "{mean}");
        assert_eq!(exec_to_online(&[], &online, t0), 0.0);
    }

    #[test]
    fn pools_are_sized_by_demand() -> anyhow::Result<()> {
        let resources = Resources::new(1, "256MiB", "1GiB")?;
        let p = pool(
            "busybox",
            &resources,
            10,
            ImageMode::Baked,
            RegistrationMode::Jit,
        )?;
        assert_eq!(
            p.sizing,
            Sizing::Demand {
                min_idle: 10,
                max: 10
            }
        );
        assert_eq!(p.image_mode, ImageMode::Baked);
        assert_eq!(p.registration, RegistrationMode::Jit);
        assert!(p.marked);
        Ok(())
    }
}
