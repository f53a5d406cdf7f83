//! The `github-sim` binary: serving, and the `runner-tarball` subcommand.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the child (by its own handle) when the test ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_the_api_with_the_given_token_and_scopes() {
    let child = Command::new(env!("CARGO_BIN_EXE_github-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--repo",
            "acme/web",
            "--org",
            "acme-org",
            "--rate-limit",
            "77",
        ])
        .env("GITHUB_SIM_TOKEN", "ghp_from_env")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn github-sim");
    let mut guard = Guard(child);
    let stderr = guard.0.stderr.take().expect("stderr");
    let addr = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split("listening on ")
                    .nth(1)
                    .map(|rest| rest.split(' ').next().unwrap_or_default().to_owned())
            })
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), addr)
        .await
        .expect("started in time")
        .expect("join")
        .expect("address line");
    let client = reqwest::Client::builder()
        .user_agent("t")
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let get = |path: &str, token: &str| {
        client
            .get(format!("http://{addr}{path}"))
            .header("authorization", format!("token {token}"))
            .send()
    };
    let response = get("/repos/acme/web/actions/runners", "ghp_from_env")
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-limit"], "77");
    // (path, token, status): the other scope given, the default one replaced, a wrong token.
    for (path, token, status) in [
        ("/orgs/acme-org/actions/runners", "ghp_from_env", 200),
        ("/repos/octo/app/actions/runners", "ghp_from_env", 404),
        ("/repos/acme/web/actions/runners", "ghp_other", 401),
    ] {
        let response = get(path, token).await.expect("send");
        assert_eq!(response.status(), status, "{path} {token}");
    }
    test_support::client::get_ok(&client, &format!("http://{addr}/_sim/requests")).await;
}

#[test]
fn runner_tarball_subcommand_writes_a_tarball() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = dir.path().join("runner-agent");
    std::fs::write(&agent, b"#!/bin/sh\necho fake agent\n").expect("write agent");
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_github-sim"))
        .args(["runner-tarball", "--agent"])
        .arg(&agent)
        .arg("--out")
        .arg(&out)
        .args(["--version", "2.331.0"])
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = out.join("actions-runner-linux-x64-2.331.0.tar.gz");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        path.display().to_string()
    );
    let file = std::fs::File::open(&path).expect("tarball");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut listener = None;
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_string_lossy() == "bin/Runner.Listener" {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("read");
            listener = Some(bytes);
        }
    }
    assert_eq!(
        listener.as_deref(),
        Some(&b"#!/bin/sh\necho fake agent\n"[..])
    );
    // Without an agent the subcommand fails with a message, not a panic.
    let output = Command::new(env!("CARGO_BIN_EXE_github-sim"))
        .args(["runner-tarball", "--agent", "/nonexistent/agent", "--out"])
        .arg(&out)
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("building the runner tarball"));
}
