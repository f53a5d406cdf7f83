//! One pass at a time per unit across processes: the `flock` on `<state_dir>/pass-<app>-<unit>.lock`.

use std::path::PathBuf;
use std::time::Duration;

use super::{ManagerError, RunnerManager};

impl RunnerManager {
    /// The file behind the pass lock: one per app and unit in the state directory.
    pub fn pass_lock_path(&self) -> PathBuf {
        self.config.state_dir.join(format!(
            "pass-{}-{}.lock",
            self.owner.app_name(),
            self.owner.unit()
        ))
    }

    /// Waits for, then holds until dropped, an exclusive `flock` on [`Self::pass_lock_path`], so
    /// that passes of different processes on the same unit (the daemon and a `reconcile` or
    /// `flush` from the command line) never overlap. The kernel releases it when a process dies.
    /// Polled (`try_lock`, 100 ms), so a waiting pass can still be cancelled.
    pub(super) async fn lock_pass(&self) -> Result<std::fs::File, ManagerError> {
        let path = self.pass_lock_path();
        let error = |source| ManagerError::PassLock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.config.state_dir).map_err(error)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(error)?;
        let mut logged = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !logged {
                        tracing::info!(
                            message = "Waiting for another process's pass on this unit to end.",
                            lock = %path.display()
                        );
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(error(source)),
            }
        }
    }
}
