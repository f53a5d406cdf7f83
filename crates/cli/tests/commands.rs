//! Every subcommand in-process against a fake manager: human and `--json` output, exit codes,
//! and `run` on a bound listener with a shutdown during a pass.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use common::FakeOps;
use prometheus_client::registry::Registry;
use runner_manager::app::{execute, run_daemon, Backend};
use runner_manager::cli::Cli;
use runner_manager::config::Config;
use runner_manager::daemon::DaemonExit;
use runner_manager::ops::Operations;
use runner_manager::output::Console;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct FakeBackend(Arc<FakeOps>);

#[async_trait]
impl Backend for FakeBackend {
    async fn connect(
        &self,
        _config: &Config,
        _registry: &mut Registry,
    ) -> anyhow::Result<Arc<dyn Operations>> {
        Ok(self.0.clone())
    }
}

struct Unreachable;

#[async_trait]
impl Backend for Unreachable {
    async fn connect(
        &self,
        _config: &Config,
        _registry: &mut Registry,
    ) -> anyhow::Result<Arc<dyn Operations>> {
        Err(anyhow::anyhow!("connection refused")
            .context("connecting to /var/lib/incus/unix.socket"))
    }
}

const CONFIG: &str =
    "[github]\npath = \"octo-org\"\ntoken = \"ghp_SECRET\"\n[runners]\nquantity = 2\n";

struct Outcome {
    code: u8,
    stdout: String,
    stderr: String,
}

async fn invoke(args: &[&str], backend: &dyn Backend) -> Outcome {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let path = path.display().to_string();
    let argv = ["runner-manager", "--config", &path]
        .into_iter()
        .chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).unwrap();
    let (mut console, stdout, stderr) = Console::captured();
    let code = execute(cli, &mut console, backend).await;
    Outcome {
        code,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

#[tokio::test]
async fn every_subcommand_human_and_json() {
    let ops = FakeOps::new();
    *ops.bin_present.lock().unwrap() = true;
    let backend = FakeBackend(ops.clone());
    let mut report = String::new();
    for args in [
        &["reconcile"][..],
        &["reconcile", "--quantity", "5", "--json"],
        &["flush"],
        &["flush", "--idle-only", "--json"],
        &["status"],
        &["status", "--json"],
        &["runner-bin", "latest"],
        &[
            "runner-bin",
            "latest",
            "--os",
            "linux",
            "--arch",
            "x64",
            "--json",
        ],
        &["runner-bin", "update"],
        &["runner-bin", "update", "--json"],
        &["runner-bin", "check"],
    ] {
        let out = invoke(args, &backend).await;
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        if args.contains(&"--json") {
            assert_eq!(out.stderr, "", "{args:?}");
            let _: serde_json::Value =
                serde_json::from_str(&out.stdout).expect("exactly one JSON document");
            report.push_str(&format!("$ {}\n[stdout]\n{}\n", args.join(" "), out.stdout));
        } else {
            assert_eq!(out.stdout, "", "{args:?}: human output goes to stderr");
            report.push_str(&format!("$ {}\n[stderr]\n{}\n", args.join(" "), out.stderr));
        }
    }
    insta::assert_snapshot!(report);
    // The configured quantity is the default; --quantity overrides it.
    assert_eq!(ops.passes(), 2);
}

#[tokio::test]
async fn failures_exit_1_with_an_explanation() {
    let ops = FakeOps::new();
    let backend = FakeBackend(ops.clone());
    let out = invoke(&["runner-bin", "check"], &backend).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("runner binary missing"),
        "{}",
        out.stderr
    );

    let out = invoke(&["runner-bin", "latest", "--os", "win"], &backend).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "error: looking up the runner binary for win/x64\n  caused by: no runner binary for win/x64\n"
    );

    *ops.fail_everything.lock().unwrap() = true;
    for args in [
        &["reconcile", "--json"][..],
        &["flush"],
        &["status", "--json"],
        &["runner-bin", "update"],
    ] {
        let out = invoke(args, &backend).await;
        assert_eq!(out.code, 1, "{args:?}");
        assert_eq!(out.stdout, "", "{args:?}: no JSON document on failure");
        assert!(
            out.stderr.starts_with("error: ") && out.stderr.contains("GitHub answered 503"),
            "{}",
            out.stderr
        );
    }

    let out = invoke(&["status"], &Unreachable).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "error: connecting to GitHub and LXD\n  caused by: connecting to /var/lib/incus/unix.socket\n  caused by: connection refused\n"
    );
    // check-config never connects.
    assert_eq!(invoke(&["check-config"], &Unreachable).await.code, 0);
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn run_serves_and_shuts_down_after_the_in_flight_pass() {
    let config = Config::parse(
        CONFIG,
        std::path::Path::new("/"),
        &runner_manager::config::ProcessEnvironment,
    )
    .unwrap();
    let ops = FakeOps::with_pass_duration(Duration::from_millis(600));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn({
        let ops: Arc<dyn Operations> = ops.clone();
        let config = config.clone();
        async move {
            run_daemon(&config, ops, Registry::default(), listener, async move {
                let _ = stopped.await;
            })
            .await
        }
    });
    let health = http_get(address, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = http_get(address, "/metrics").await;
    assert!(
        metrics.contains("runner_manager_reconcile_triggers_total") && metrics.ends_with("# EOF\n"),
        "{metrics}"
    );

    // The startup pass (600 ms, after the binary update) is in flight: stop now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ops.in_flight.load(Ordering::SeqCst), 1, "a pass is running");
    stop.send(()).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(exit, DaemonExit::PassFinished);
    assert_eq!(ops.finished.load(Ordering::SeqCst), 1);
    assert_eq!(ops.bin_updates.load(Ordering::SeqCst), 1);
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
}
