//! A scripted fake of the manager's operations, shared by the test files.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use runner_manager::ops::{
    FlushMode, FlushOutput, Operations, ReconcileOutput, RunnerBinCheckOutput, RunnerBinOutput,
    RunnerBinUpdateOutput, RunnerStatus, StatusOutput,
};
use tokio::time::Instant;

#[derive(Default)]
pub struct FakeOps {
    /// How long each reconcile takes (tokio time, so a paused clock skips it).
    pub pass_duration: Mutex<Duration>,
    /// Scripted results of the next passes: `false` fails. Empty = succeed.
    pub script: Mutex<VecDeque<bool>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// When each pass started and whether it finished.
    pub starts: Mutex<Vec<Instant>>,
    pub finished: AtomicUsize,
    pub flushes: Mutex<Vec<FlushMode>>,
    pub bin_updates: AtomicUsize,
    pub bin_present: Mutex<bool>,
    pub fail_everything: Mutex<bool>,
    /// How many of the next passes succeed with one failed step (a partial pass).
    pub partial_passes: AtomicUsize,
}

impl FakeOps {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn with_pass_duration(duration: Duration) -> Arc<Self> {
        let ops = Self::default();
        *ops.pass_duration.lock().unwrap() = duration;
        Arc::new(ops)
    }
    /// A fake whose next `n` passes fail.
    pub fn failing(n: usize) -> Arc<Self> {
        let ops = Self::default();
        ops.script.lock().unwrap().extend(vec![false; n]);
        Arc::new(ops)
    }
    /// A fake whose next `n` passes each have one failed step (partial passes).
    pub fn partial(n: usize) -> Arc<Self> {
        let ops = Self::default();
        ops.partial_passes.store(n, Ordering::SeqCst);
        Arc::new(ops)
    }
    pub fn passes(&self) -> usize {
        self.starts.lock().unwrap().len()
    }
    pub fn binary() -> RunnerBinOutput {
        RunnerBinOutput {
            os: "linux".into(),
            architecture: "x64".into(),
            download_url: "https://sim.test/actions-runner-linux-x64-2.329.0.tar.gz".into(),
            filename: "actions-runner-linux-x64-2.329.0.tar.gz".into(),
            sha256_checksum: Some("0f".repeat(32)),
        }
    }
    fn check_failure(&self, what: &str) -> anyhow::Result<()> {
        if *self.fail_everything.lock().unwrap() {
            anyhow::bail!("{what}: GitHub answered 503");
        }
        Ok(())
    }
}

#[async_trait]
impl Operations for FakeOps {
    async fn reconcile(&self, quantity: u32) -> anyhow::Result<ReconcileOutput> {
        self.starts.lock().unwrap().push(Instant::now());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let duration = *self.pass_duration.lock().unwrap();
        tokio::time::sleep(duration).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        let ok = self.script.lock().unwrap().pop_front().unwrap_or(true);
        self.check_failure("reconciling")?;
        if !ok {
            anyhow::bail!("listing runners: connection refused");
        }
        let partial = self
            .partial_passes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Ok(ReconcileOutput {
            quantity,
            delta: i64::from(quantity),
            created: quantity,
            failed: u32::from(partial),
            ..ReconcileOutput::default()
        })
    }

    async fn flush(&self, mode: FlushMode) -> anyhow::Result<FlushOutput> {
        self.check_failure("flushing")?;
        self.flushes.lock().unwrap().push(mode);
        Ok(FlushOutput {
            removed: 2,
            skipped_busy: u32::from(mode == FlushMode::IdleOnly),
        })
    }

    async fn status(&self) -> anyhow::Result<StatusOutput> {
        self.check_failure("listing runners")?;
        Ok(StatusOutput {
            pools: vec![],
            runners: vec![
                running("github-runner-0-a1b2", false, 125),
                running("github-runner-0-c3d4", true, 4_000),
            ],
            dangling: vec!["github-runner-0-dead".into()],
            orphans: vec![],
            ha: None,
        })
    }

    async fn runner_bin_latest(&self, os: &str, arch: &str) -> anyhow::Result<RunnerBinOutput> {
        self.check_failure("listing downloads")?;
        if (os, arch) != ("linux", "x64") {
            anyhow::bail!("no runner binary for {os}/{arch}");
        }
        Ok(Self::binary())
    }

    async fn runner_bin_update(&self) -> anyhow::Result<RunnerBinUpdateOutput> {
        self.check_failure("downloading the runner binary")?;
        self.bin_updates.fetch_add(1, Ordering::SeqCst);
        Ok(RunnerBinUpdateOutput {
            updated: true,
            binary: Self::binary(),
            path: "/var/lib/runner-manager/actions-runner-linux-x64-2.329.0.tar.gz".into(),
        })
    }

    async fn runner_bin_check(&self) -> anyhow::Result<RunnerBinCheckOutput> {
        Ok(RunnerBinCheckOutput {
            present: *self.bin_present.lock().unwrap(),
            path: "/var/lib/runner-manager/actions-runner.tar.gz".into(),
        })
    }
}

/// A running, online runner of the default pool, on runner 2.329.0.
fn running(name: &str, busy: bool, age_seconds: u64) -> RunnerStatus {
    RunnerStatus {
        name: name.into(),
        pool: "default".into(),
        instance_status: "Running".into(),
        github_status: Some("online".into()),
        busy: Some(busy),
        age_seconds: Some(age_seconds),
        version: Some("2.329.0".into()),
        image: None,
    }
}

/// Variables removed from the binary's environment.
pub const CLEAN_ENV: [&str; 7] = [
    "RUNNER_MANAGER_CONFIG",
    "RUNNER_MANAGER_GITHUB_TOKEN",
    "RUNNER_MANAGER_SERVICE_TOKEN",
    "RUNNER_MANAGER_API_TOKEN",
    "RUNNER_MANAGER_WEBHOOK_SECRET",
    "RUST_LOG",
    "NO_COLOR",
];

/// The `runner-manager` binary with a clean environment (no secret or config path leaking in
/// from outside).
pub fn runner_manager() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("runner-manager").unwrap();
    for var in CLEAN_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// A finished run of the binary: its exit code (-1 when killed by a signal) and its output.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `cmd`, each output stream made text by `text`; asserts that none of `secrets` is in
    /// either stream.
    pub fn of(
        cmd: &mut assert_cmd::Command,
        text: impl Fn(&[u8]) -> String,
        secrets: &[&str],
    ) -> Self {
        let output = cmd.output().unwrap();
        let run = Self {
            code: output.status.code().unwrap_or(-1),
            stdout: text(&output.stdout),
            stderr: text(&output.stderr),
        };
        for secret in secrets {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{secret} printed"
            );
        }
        run
    }
}
