//! What the process tests share: an HTTP agent, the runner tarball unpacked, and waiting for
//! a process.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Unpacks the runner tarball built around `agent` into `dir/runner` (the tarball is kept
/// as `dir/runner.tar.gz`) and returns that root.
pub fn unpack_runner(agent: &Path, dir: &Path) -> PathBuf {
    let tarball = github_sim::tarball::build_runner_tarball(agent, "2.336.0").expect("tarball");
    let archive = dir.join("runner.tar.gz");
    fs::write(&archive, tarball).expect("write tarball");
    let root = dir.join("runner");
    fs::create_dir(&root).expect("mkdir");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&root)
        .status()
        .expect("tar");
    assert!(status.success());
    root
}

/// The child's exit status; kills it and panics after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking HTTP agent: statuses are answers (not errors), no proxy, 30 s per request.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}
