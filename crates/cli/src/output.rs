//! The one place that writes to the console.
//!
//! Human summaries, tables, progress and errors go to stderr; `--json` writes exactly one JSON
//! document to stdout. Progress spinners appear only when stderr is a terminal. The `render_*`
//! functions are pure, so their text is snapshot-tested.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::ConfigSummary;
use crate::ops::{
    FlushOutput, ImageBuildOutput, ImageListOutput, ReconcileOutput, RunnerBinCheckOutput,
    RunnerBinOutput, RunnerBinUpdateOutput, StatusOutput,
};

/// Console output: stdout for `--json`, stderr for people.
pub struct Console {
    stdout: Box<dyn Write + Send>,
    stderr: Box<dyn Write + Send>,
    progress: bool,
}

/// What a captured console wrote (tests).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("capture poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Console {
    /// The process's stdout and stderr.
    pub fn stdio() -> Self {
        Self {
            stdout: Box::new(io::stdout()),
            stderr: Box::new(io::stderr()),
            progress: io::stderr().is_terminal(),
        }
    }

    /// A console writing into buffers: `(console, stdout, stderr)`.
    pub fn captured() -> (Self, Captured, Captured) {
        let stdout = Captured::default();
        let stderr = Captured::default();
        let console = Self {
            stdout: Box::new(stdout.clone()),
            stderr: Box::new(stderr.clone()),
            progress: false,
        };
        (console, stdout, stderr)
    }

    /// Writes `value` as one JSON document (and a newline) on stdout.
    pub fn json<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
        writeln!(self.stdout, "{text}")?;
        self.stdout.flush()
    }

    /// Writes human text on stderr.
    pub fn human(&mut self, text: &str) -> io::Result<()> {
        self.stderr.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            self.stderr.write_all(b"\n")?;
        }
        self.stderr.flush()
    }

    /// `value` as JSON on stdout with `--json`, else its human rendering on stderr.
    pub fn result<T: Serialize>(
        &mut self,
        json: bool,
        value: &T,
        human: impl FnOnce(&T) -> String,
    ) -> io::Result<()> {
        if json {
            self.json(value)
        } else {
            self.human(&human(value))
        }
    }

    /// Reports an error on stderr: `error: <message>` and indented detail lines.
    pub fn error(&mut self, message: &str, details: &[String]) {
        let mut text = format!("error: {message}\n");
        for detail in details {
            let _ = writeln!(text, "  {detail}");
        }
        // Nothing sensible is left to do when stderr itself fails.
        let _ = self.stderr.write_all(text.as_bytes());
        let _ = self.stderr.flush();
    }

    /// A spinner on stderr while `message` runs, when stderr is a terminal.
    pub fn spinner(&self, message: &str) -> Spinner {
        if !self.progress {
            return Spinner(None);
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner(Some(bar))
    }
}

/// Clears its spinner when dropped.
pub struct Spinner(Option<ProgressBar>);

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

pub fn render_reconcile(output: &ReconcileOutput) -> String {
    let mut text = format!(
        "reconciled towards {} runner(s): delta {}, created {}, removed {}",
        output.quantity,
        signed(output.delta),
        output.created,
        output.removed
    );
    if output.skipped_busy > 0 {
        let _ = write!(text, ", left {} busy runner(s) alone", output.skipped_busy);
    }
    if output.failed > 0 {
        let _ = write!(text, ", {} failed (the next pass retries)", output.failed);
    }
    for pool in &output.pools {
        let _ = write!(
            text,
            "\n  pool {}: desired {}, idle {}, busy {}, booting {}, queued {}, created {}, removed {}{}",
            pool.name,
            pool.desired,
            pool.idle,
            pool.busy,
            pool.booting,
            pool.queued,
            pool.created,
            pool.removed,
            if pool.draining { " (draining)" } else { "" }
        );
    }
    if output.unmatched_jobs > 0 {
        let _ = write!(
            text,
            "\n  {} queued job(s) match no pool",
            output.unmatched_jobs
        );
    }
    text
}

pub fn render_image_build(output: &ImageBuildOutput) -> String {
    let mut lines: Vec<String> = output
        .built
        .iter()
        .map(|i| {
            format!(
                "built {} for pool {} (runner {}, from {}), as a canary",
                i.alias, i.pool, i.runner_version, i.base_image
            )
        })
        .collect();
    lines.extend(
        output
            .current
            .iter()
            .map(|pool| format!("pool {pool}: its newest image is current")),
    );
    lines.extend(
        output
            .failed
            .iter()
            .map(|(pool, error)| format!("pool {pool}: build failed: {error}")),
    );
    lines.join("\n")
}

pub fn render_image_list(output: &ImageListOutput) -> String {
    if output.images.is_empty() {
        return "no images".to_owned();
    }
    let mut text = String::new();
    for i in &output.images {
        let _ = writeln!(
            text,
            "{:<8} {:<7} {} runner {} ({}), base {} ({}), {} MB, manager {}",
            i.pool,
            i.state,
            i.alias,
            i.runner_version,
            i.runner_sha256.get(..12).unwrap_or(&i.runner_sha256),
            i.base_image,
            i.base_fingerprint.get(..12).unwrap_or(&i.base_fingerprint),
            i.size_bytes / 1_000_000,
            i.manager_version
        );
    }
    text.trim_end().to_owned()
}

pub fn render_flush(output: &FlushOutput) -> String {
    let mut text = format!("flushed: removed {} runner(s)", output.removed);
    if output.skipped_busy > 0 {
        let _ = write!(text, ", left {} busy runner(s) alone", output.skipped_busy);
    }
    text
}

/// `3d4h`, `2h05m`, `4m10s`, `12s`.
pub fn render_age(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `[ha]`'s line of `status`: `role: standby (holder host-b-12-…, generation 7)`.
pub fn render_ha(ha: &crate::ha::HaStatus) -> String {
    let holder = match (&ha.holder, ha.generation) {
        (Some(h), Some(g)) => format!("holder {h}, generation {g}"),
        (Some(h), None) => format!("holder {h}"),
        _ => "no holder yet".to_owned(),
    };
    format!(
        "role: {} ({holder}); this manager: {}; lease: {}\n",
        ha.role, ha.manager_id, ha.lease
    )
}

pub fn render_status(status: &StatusOutput) -> String {
    let mut text = String::new();
    if let Some(ha) = &status.ha {
        text.push_str(&render_ha(ha));
    }
    // Pools are shown when there is more than the single-pool form's `default`.
    let single =
        status.pools.len() == 1 && status.pools[0].name == manager::pool::PoolName::DEFAULT;
    let show_pools = !status.pools.is_empty() && !single;
    if status.runners.is_empty() {
        text.push_str("no runners\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .runners
            .iter()
            .map(|r| {
                [
                    r.name.clone(),
                    r.pool.clone(),
                    r.instance_status.clone(),
                    r.github_status.clone().unwrap_or_else(|| "-".into()),
                    r.busy
                        .map_or("-".into(), |b| if b { "yes" } else { "no" }.into()),
                    r.age_seconds.map_or("-".into(), render_age),
                    r.version.clone().unwrap_or_else(|| "-".into()),
                ]
                .into_iter()
                // The POOL column only when there are pools to tell apart.
                .enumerate()
                .filter(|(i, _)| *i != 1 || show_pools)
                .map(|(_, cell)| cell)
                .collect()
            })
            .collect();
        let header: Vec<String> = [
            "NAME", "POOL", "INSTANCE", "GITHUB", "BUSY", "AGE", "VERSION",
        ]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 1 || show_pools)
        .map(|(_, h)| h.to_owned())
        .collect();
        let mut widths: Vec<usize> = header.iter().map(String::len).collect();
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ");
            let _ = writeln!(text, "{}", line.trim_end());
        }
        let busy = status
            .runners
            .iter()
            .filter(|r| r.busy == Some(true))
            .count();
        let _ = writeln!(text, "{} runner(s), {busy} busy", status.runners.len());
    }
    if show_pools {
        for pool in &status.pools {
            let bounds = match (pool.min_idle, pool.max) {
                (Some(min_idle), Some(max)) => format!(" (min_idle {min_idle}, max {max})"),
                (None, Some(max)) => format!(" (max {max})"),
                _ if !pool.configured => " (not configured: draining)".to_owned(),
                _ => String::new(),
            };
            let _ = writeln!(
                text,
                "pool {}{bounds}: {} idle, {} busy, {} booting, {} to remove",
                pool.name, pool.idle, pool.busy, pool.booting, pool.unhealthy
            );
        }
    }
    let list = |items: &[String]| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let _ = writeln!(
        text,
        "dangling (on GitHub, no instance): {}",
        list(&status.dangling)
    );
    let _ = write!(
        text,
        "orphans (instance, not on GitHub): {}",
        list(&status.orphans)
    );
    text
}

pub fn render_runner_bin(output: &RunnerBinOutput) -> String {
    format!(
        "{} ({} {})\n  url:    {}\n  sha256: {}",
        output.filename,
        output.os,
        output.architecture,
        output.download_url,
        output
            .sha256_checksum
            .as_deref()
            .unwrap_or("(not published)")
    )
}

pub fn render_runner_bin_update(output: &RunnerBinUpdateOutput) -> String {
    let verb = if output.updated {
        "downloaded"
    } else {
        "already up to date:"
    };
    format!("{verb} {} at {}", output.binary.filename, output.path)
}

pub fn render_runner_bin_check(output: &RunnerBinCheckOutput) -> String {
    if output.present {
        format!("runner binary present at {}", output.path)
    } else {
        format!(
            "runner binary missing at {} (run `runner-manager runner-bin update`)",
            output.path
        )
    }
}

pub fn render_config_summary(path: &str, summary: &ConfigSummary) -> String {
    let mut text = format!("config {path} is valid\n");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(text, "  {name:<15} {value}");
    };
    row(
        "github",
        format!(
            "{} {} ({}), runner group \"{}\"",
            summary.github_scope, summary.github_path, summary.github_auth, summary.runner_group
        ),
    );
    row(
        "api",
        format!("{} (web {})", summary.api_url, summary.web_url),
    );
    row("lxd", summary.lxd_endpoint.clone());
    // With [[pools]], `[runners]` and `[lxd]` only give the pools their defaults.
    let pools = !summary.pools.is_empty();
    let flavor = format!(
        "{} \"{}\": {} cpu, {} memory, {} disk, {} registration",
        summary.instance_type,
        summary.image,
        summary.cpu,
        summary.memory,
        summary.disk,
        summary.registration
    );
    if pools {
        row(
            "runners",
            format!("sized per pool (below); pool defaults {flavor}"),
        );
    } else {
        row("runners", format!("{} x {flavor}", summary.quantity));
    }
    row("names", format!("{}<suffix>", summary.runner_name_prefix));
    if !pools {
        row("labels", summary.labels.join(", "));
    }
    row(
        "storage",
        match &summary.target {
            Some(target) => format!("{} on cluster member {target}", summary.storage),
            None => summary.storage.clone(),
        },
    );
    row(
        "proxy",
        if summary.proxy.is_empty() {
            "none".to_owned()
        } else {
            summary.proxy.join(", ")
        },
    );
    row("policy", summary.policy.clone());
    row(
        "events log",
        summary.events_log.clone().unwrap_or_else(|| "off".into()),
    );
    row("state dir", summary.state_dir.clone());
    row(
        "server",
        format!(
            "{}, reconcile every {}s, api_token {}, webhook_secret {}",
            summary.listen,
            summary.reconcile_interval_seconds,
            summary.api_token,
            summary.webhook_secret
        ),
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::RunnerStatus;

    #[test]
    fn ages() {
        assert_eq!(render_age(0), "0s");
        assert_eq!(render_age(59), "59s");
        assert_eq!(render_age(250), "4m10s");
        assert_eq!(render_age(7_500), "2h05m");
        assert_eq!(render_age(3 * 86_400 + 4 * 3_600 + 5), "3d4h");
    }

    fn status() -> StatusOutput {
        StatusOutput {
            runners: vec![
                RunnerStatus {
                    name: "github-runner-0-a1b2c3".into(),
                    pool: "default".into(),
                    instance_status: "Running".into(),
                    github_status: Some("online".into()),
                    busy: Some(true),
                    age_seconds: Some(7_500),
                    version: Some("2.329.0".into()),
                    image: None,
                },
                RunnerStatus {
                    name: "github-runner-0-d4e5f6".into(),
                    pool: "default".into(),
                    instance_status: "Starting".into(),
                    github_status: None,
                    busy: None,
                    age_seconds: Some(12),
                    version: None,
                    image: None,
                },
            ],
            pools: vec![],
            dangling: vec!["github-runner-0-0ld".into()],
            orphans: vec![],
            ha: None,
        }
    }

    #[test]
    fn human_renderings() {
        insta::assert_snapshot!("status", render_status(&status()));
        insta::assert_snapshot!(
            "status_empty",
            render_status(&StatusOutput {
                runners: vec![],
                pools: vec![],
                dangling: vec![],
                orphans: vec![],
                ha: None,
            })
        );
        insta::assert_snapshot!(
            "reconcile",
            render_reconcile(&ReconcileOutput {
                quantity: 3,
                delta: 2,
                created: 2,
                removed: 0,
                skipped_busy: 1,
                failed: 1,
                pools: vec![],
                unmatched_jobs: 0,
            })
        );
        insta::assert_snapshot!(
            "flush",
            render_flush(&FlushOutput {
                removed: 2,
                skipped_busy: 1
            })
        );
        let binary = RunnerBinOutput {
            os: "linux".into(),
            architecture: "x64".into(),
            download_url: "https://example.test/actions-runner-linux-x64-2.329.0.tar.gz".into(),
            filename: "actions-runner-linux-x64-2.329.0.tar.gz".into(),
            sha256_checksum: Some("ab".repeat(32)),
        };
        insta::assert_snapshot!("runner_bin", render_runner_bin(&binary));
        insta::assert_snapshot!(
            "runner_bin_update",
            render_runner_bin_update(&RunnerBinUpdateOutput {
                updated: true,
                binary,
                path: "/var/lib/runner-manager/runner.tar.gz".into()
            })
        );
        insta::assert_snapshot!(
            "runner_bin_check_missing",
            render_runner_bin_check(&RunnerBinCheckOutput {
                present: false,
                path: "/x".into()
            })
        );
    }

    #[test]
    fn json_is_one_document_on_stdout() {
        let (mut console, stdout, stderr) = Console::captured();
        console
            .result(true, &status(), render_status)
            .expect("write");
        let value: serde_json::Value =
            serde_json::from_str(&stdout.text()).expect("one JSON document");
        assert_eq!(value["runners"][0]["name"], "github-runner-0-a1b2c3");
        assert_eq!(value["runners"][1]["busy"], serde_json::Value::Null);
        assert_eq!(stderr.text(), "");

        let (mut console, stdout, stderr) = Console::captured();
        console
            .result(false, &status(), render_status)
            .expect("write");
        assert_eq!(stdout.text(), "");
        assert!(stderr.text().contains("NAME"));
    }
}
