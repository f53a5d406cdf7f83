//! Builds the fake actions-runner tarball served by the simulator's downloads endpoint.
//!
//! The layout follows actions/runner's release tarball: `config.sh`, `run.sh` and `env.sh` at the
//! root (POSIX `sh`, so they work under busybox; both entry scripts source `prelude.sh` first), the
//! listener as `bin/Runner.Listener` and the version in `bin/runnerversion`. The listener is `crates/fake-runner`'s static `runner-agent`.
//! The archive is deterministic (fixed mtimes, owners and order), so its sha256 is stable.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

const CONFIG_SH: &str = include_str!("../../fake-runner/layout/config.sh");
const RUN_SH: &str = include_str!("../../fake-runner/layout/run.sh");
const ENV_SH: &str = include_str!("../../fake-runner/layout/env.sh");
const PRELUDE_SH: &str = include_str!("../../fake-runner/layout/prelude.sh");

/// The mtime of every entry: 2023-11-14T22:13:20Z.
const FIXED_MTIME: u64 = 1_700_000_000;
/// How long building the agent may take before [`locate_or_build_agent`] gives up.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Where `scripts/build-fake-runner.sh` places the static agent, relative to the workspace.
pub const AGENT_PATH: &str = "target/fake-runner/runner-agent";
/// Overrides where [`locate_or_build_agent`] looks for the agent.
pub const AGENT_ENV: &str = "FAKE_RUNNER_AGENT";

/// A gzip tarball of the fake runner with `agent` as `bin/Runner.Listener`.
pub fn build_runner_tarball(agent: &Path, version: &str) -> io::Result<Vec<u8>> {
    let agent_bytes = std::fs::read(agent).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reading the runner agent {}: {e}", agent.display()),
        )
    })?;
    let version_file = format!("{}\n", version.trim());
    let gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    append_dir(&mut tar, "bin/")?;
    append_file(&mut tar, "bin/Runner.Listener", &agent_bytes, 0o755)?;
    append_file(
        &mut tar,
        "bin/runnerversion",
        version_file.as_bytes(),
        0o644,
    )?;
    append_file(&mut tar, "config.sh", CONFIG_SH.as_bytes(), 0o755)?;
    append_file(&mut tar, "env.sh", ENV_SH.as_bytes(), 0o755)?;
    append_file(&mut tar, "prelude.sh", PRELUDE_SH.as_bytes(), 0o755)?;
    append_file(&mut tar, "run.sh", RUN_SH.as_bytes(), 0o755)?;
    let gz: GzEncoder<Vec<u8>> = tar.into_inner()?;
    gz.finish()
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(FIXED_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    tar.append_data(&mut h, path, io::empty())
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
    tar.append_data(&mut h, path, data)
}

/// The workspace root (this crate lives in `<root>/crates/github-sim`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether the agent exists and is newer than every source of `crates/fake-runner`.
fn is_fresh(root: &Path, agent: &Path) -> bool {
    fn newest(path: &Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path)
            .ok()?
            .filter_map(|entry| newest(&entry.ok()?.path()))
            .max()
    }
    let Some(built) = std::fs::metadata(agent)
        .ok()
        .and_then(|m| m.modified().ok())
    else {
        return false;
    };
    let crate_dir = root.join("crates/fake-runner");
    ["src", "layout", "Cargo.toml"]
        .iter()
        .filter_map(|p| newest(&crate_dir.join(p)))
        .all(|source| source <= built)
}

/// The static agent for tests and the demo: `$FAKE_RUNNER_AGENT` if set, else
/// `target/fake-runner/runner-agent`, (re)built by `scripts/build-fake-runner.sh` when missing or
/// older than the fake-runner sources.
pub fn locate_or_build_agent() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os(AGENT_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{AGENT_ENV}={} is not a file", path.display()),
            ))
        };
    }
    let root = workspace_root();
    let path = root.join(AGENT_PATH);
    if is_fresh(&root, &path) {
        return Ok(path);
    }
    // One build per process; concurrent processes are serialised by cargo's own lock.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if is_fresh(&root, &path) {
        return Ok(path);
    }
    let script = root.join("scripts/build-fake-runner.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running {}: {e}", script.display())))?;
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} took longer than {BUILD_TIMEOUT:?}", script.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() || !path.is_file() {
        return Err(io::Error::other(format!(
            "{} failed ({status}); {} is missing",
            script.display(),
            path.display()
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    /// Path → (mode, mtime, content) of every entry.
    fn entries(tarball: &[u8]) -> BTreeMap<String, (u32, u64, Vec<u8>)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
        let mut out = BTreeMap::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mode = entry.header().mode().expect("mode");
            let mtime = entry.header().mtime().expect("mtime");
            let mut content = Vec::new();
            entry.read_to_end(&mut content).expect("content");
            out.insert(path, (mode, mtime, content));
        }
        out
    }

    fn fake_agent(dir: &Path) -> PathBuf {
        let agent = dir.join("runner-agent");
        std::fs::write(&agent, b"\x7fELF fake agent").expect("write");
        agent
    }

    #[test]
    fn layout_modes_and_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tarball = build_runner_tarball(&fake_agent(dir.path()), "2.336.0").expect("tarball");
        let entries = entries(&tarball);
        let names: Vec<&str> = entries.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "bin/",
                "bin/Runner.Listener",
                "bin/runnerversion",
                "config.sh",
                "env.sh",
                "prelude.sh",
                "run.sh"
            ]
        );
        let mode = |p: &str| entries[p].0;
        for executable in [
            "bin/",
            "bin/Runner.Listener",
            "config.sh",
            "env.sh",
            "prelude.sh",
            "run.sh",
        ] {
            assert_eq!(mode(executable), 0o755, "{executable}");
        }
        assert_eq!(mode("bin/runnerversion"), 0o644);
        assert!(entries.values().all(|(_, mtime, _)| *mtime == FIXED_MTIME));
        assert_eq!(entries["bin/Runner.Listener"].2, b"\x7fELF fake agent");
        assert_eq!(entries["bin/runnerversion"].2, b"2.336.0\n");
        let config = String::from_utf8_lossy(&entries["config.sh"].2).into_owned();
        let run = String::from_utf8_lossy(&entries["run.sh"].2).into_owned();
        assert!(config.starts_with("#!/bin/sh\n"));
        assert!(config.contains("bin/Runner.Listener configure"));
        let prelude = String::from_utf8_lossy(&entries["prelude.sh"].2).into_owned();
        assert!(prelude.contains("Must not run with sudo"));
        for script in [&config, &run] {
            assert!(script.contains(". \"$runner_root/prelude.sh\""));
        }
        assert!(
            config.contains("--token-file"),
            "the extension is documented"
        );
        assert!(run.contains("bin/Runner.Listener run"));
        assert!(
            run.contains("--jitconfig-file"),
            "the extension is documented"
        );
    }

    #[test]
    fn deterministic_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = fake_agent(dir.path());
        let a = build_runner_tarball(&agent, "2.336.0").expect("tarball");
        std::thread::sleep(Duration::from_millis(1100));
        let b = build_runner_tarball(&agent, "2.336.0").expect("tarball");
        assert_eq!(a, b);
        let c = build_runner_tarball(&agent, "2.337.0").expect("tarball");
        assert_ne!(a, c);
    }

    #[test]
    fn missing_agent_is_an_error() {
        let err =
            build_runner_tarball(Path::new("/nonexistent/runner-agent"), "1").expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/runner-agent"));
    }
}
