//! [`CountingOps`]: the [`Operations`] the tests and benchmarks of the daemon loop, the HTTP
//! server and the `[ha]` gate run against when only the passes matter. Not used by the binary.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::ops::{
    FlushMode, FlushOutput, Operations, ReconcileOutput, RunnerBinCheckOutput, RunnerBinOutput,
    RunnerBinUpdateOutput, StatusOutput,
};

/// Every pass succeeds and is counted; a flush removes nothing, `status` is empty, and the
/// runner binary's operations fail (nothing here uses them).
#[derive(Debug, Default)]
pub struct CountingOps {
    pub reconciles: AtomicU64,
}

impl CountingOps {
    /// The passes made so far.
    pub fn passes(&self) -> u64 {
        self.reconciles.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Operations for CountingOps {
    async fn reconcile(&self, quantity: u32) -> anyhow::Result<ReconcileOutput> {
        self.reconciles.fetch_add(1, Ordering::SeqCst);
        Ok(ReconcileOutput {
            quantity,
            ..ReconcileOutput::default()
        })
    }
    async fn flush(&self, _mode: FlushMode) -> anyhow::Result<FlushOutput> {
        Ok(FlushOutput::default())
    }
    async fn status(&self) -> anyhow::Result<StatusOutput> {
        Ok(StatusOutput::default())
    }
    async fn runner_bin_latest(&self, _os: &str, _arch: &str) -> anyhow::Result<RunnerBinOutput> {
        anyhow::bail!("CountingOps has no runner binary")
    }
    async fn runner_bin_update(&self) -> anyhow::Result<RunnerBinUpdateOutput> {
        anyhow::bail!("CountingOps has no runner binary")
    }
    async fn runner_bin_check(&self) -> anyhow::Result<RunnerBinCheckOutput> {
        anyhow::bail!("CountingOps has no runner binary")
    }
}
