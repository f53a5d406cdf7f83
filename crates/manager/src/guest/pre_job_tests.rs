//! The pre-job hook (`pre-job.sh`) run for real: against a policy-service double, under the host
//! tools and under busybox, and the refusal that stops the runner under every shell.

use super::*;
use crate::guest::tests::{session_leader, SHELLS};
use std::time::Duration;

/// A job the policy service refuses stops the runner: SIGINT to its process group, in a form
/// every shell accepts (dash rejects `kill -INT -- -PGID`, and then nothing is stopped).
#[test]
fn policy_refusal_stops_the_runner_under_every_shell() {
    for shell in SHELLS {
        let dir = tempfile::tempdir().expect("tmp");
        let meta = dir.path().join("meta");
        std::fs::create_dir_all(&meta).expect("mkdir");
        let mut runner = session_leader(&["sleep", "60"]);
        std::fs::write(meta.join("runner.pgid"), runner.id().to_string()).expect("write");
        let script = dir.path().join("pre-job.sh");
        std::fs::write(&script, pre_job_script(Some("http://127.0.0.1:9"))).expect("write");
        let out = std::process::Command::new(shell[0])
            .args(&shell[1..])
            .arg(&script)
            .env("RUNNER_MANAGER_META", &meta)
            .env("RUNNER_MANAGER_DENY_DELAY", "0")
            .env("GITHUB_EVENT_NAME", "push")
            .env("GITHUB_REPOSITORY", "octo/repo")
            .output()
            .expect("hook runs");
        assert_eq!(out.status.code(), Some(1), "{shell:?}: refused (no token)");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let stopped = loop {
            if runner.try_wait().expect("wait").is_some() {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !stopped {
            let _ = runner.kill();
        }
        assert!(
            stopped,
            "{shell:?}: the runner's process group was not signalled: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A policy service double: allows `ott-good` unless the repository is `evil/repo`.
async fn policy_server() -> (
    String,
    std::sync::Arc<parking_lot::Mutex<Vec<(String, String, serde_json::Value)>>>,
) {
    use axum::http::{HeaderMap, StatusCode, Uri};
    use std::sync::Arc;
    type Seen = Arc<parking_lot::Mutex<Vec<(String, String, serde_json::Value)>>>;
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .fallback(
            |axum::extract::State(seen): axum::extract::State<Seen>,
             uri: Uri,
             headers: HeaderMap,
             body: String| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let allowed = auth == "Bearer ott-good" && body["repository_name"] != "evil/repo";
                seen.lock().push((uri.path().to_owned(), auth, body));
                if allowed {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::FORBIDDEN
                }
            },
        )
        .with_state(seen.clone());
    let url = test_support::http::serve(std::net::Ipv4Addr::LOCALHOST, app).await;
    (url, seen)
}

/// A PATH holding only busybox applets (busybox wget, no curl, no jq).
fn busybox_path(dir: &std::path::Path) -> Option<String> {
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let bin = dir.join("bb");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for applet in [
        "sh", "nc", "wc", "timeout", "sed", "tr", "cat", "date", "mv", "rm", "grep", "head",
        "sleep", "kill", "printf",
    ] {
        std::os::unix::fs::symlink(busybox, bin.join(applet)).expect("symlink");
    }
    Some(bin.display().to_string())
}

struct HookRun {
    code: i32,
    stderr: String,
    meta: std::path::PathBuf,
}

async fn run_hook(
    url: &str,
    path_env: &str,
    event: &str,
    repo: &str,
    token: Option<&str>,
    event_json: &str,
) -> HookRun {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let meta = dir.join("meta");
    std::fs::create_dir_all(&meta).expect("mkdir");
    if let Some(token) = token {
        std::fs::write(meta.join("policy-token"), token).expect("write");
    }
    let event_path = dir.join("event.json");
    std::fs::write(&event_path, event_json).expect("write");
    let script = dir.join("pre-job.sh");
    std::fs::write(&script, pre_job_script(Some(url))).expect("write");
    let sh = format!("{}/sh", path_env.split(':').next().unwrap_or("/bin"));
    let sh = if std::path::Path::new(&sh).exists() {
        sh
    } else {
        "sh".to_owned()
    };
    let out = tokio::process::Command::new(sh)
        .arg(&script)
        .env_clear()
        .env("PATH", path_env)
        .env("RUNNER_MANAGER_META", &meta)
        .env("GITHUB_EVENT_NAME", event)
        .env("GITHUB_REPOSITORY", repo)
        .env("GITHUB_WORKFLOW", "CI \"main\"")
        .env("GITHUB_REF", "refs/heads/main")
        .env("GITHUB_SHA", "abc123")
        .env("GITHUB_EVENT_PATH", &event_path)
        .env("http_proxy", "http://127.0.0.1:9")
        .output()
        .await
        .expect("hook runs");
    HookRun {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        meta,
    }
}

const PR_EVENT: &str = r#"{
  "action": "opened",
  "pull_request": {
"head": {
  "label": "fork:feature",
  "ref": "feature",
  "sha": "headsha1",
  "user": {"login": "someone"},
  "repo": {"name": "repo", "full_name": "fork/repo"}
},
"base": {
  "label": "octo:main",
  "ref": "main",
  "sha": "basesha2",
  "repo": {"name": "repo", "full_name": "octo/repo"}
}
  }
}"#;

/// The pre-job hook under busybox (nc, no curl, no jq) and under the host tools (curl, jq).
#[tokio::test]
async fn pre_job_hook_asks_the_policy_service() {
    let (url, seen) = policy_server().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut paths = vec!["/usr/local/bin:/usr/bin:/bin".to_owned()];
    paths.extend(busybox_path(tmp.path()));
    for path in paths {
        seen.lock().clear();
        let ok = run_hook(&url, &path, "push", "octo/repo", Some("ott-good"), "{}").await;
        assert_eq!(ok.code, 0, "{path}: {}", ok.stderr);
        assert!(
            !ok.meta.join("policy-token").exists(),
            "one-time token not deleted"
        );
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ok.meta.join("pre-job.json")).expect("record"))
                .expect("json");
        assert_eq!(record["workflow"], "CI \"main\"");
        assert_eq!(record["repo"], "octo/repo");
        assert_eq!(record["github_event"], "push");
        assert_eq!(
            seen.lock()[0],
            (
                "/push/check-run".to_owned(),
                "Bearer ott-good".to_owned(),
                serde_json::json!({"repository_name":"octo/repo","branch_name":"main","commit_sha":"abc123"})
            ),
            "{path}"
        );

        let pr = run_hook(
            &url,
            &path,
            "pull_request",
            "octo/repo",
            Some("ott-good"),
            PR_EVENT,
        )
        .await;
        assert_eq!(pr.code, 0, "{path}: {}", pr.stderr);
        assert_eq!(
            seen.lock()[1].2,
            serde_json::json!({"repository_name":"octo/repo","source_repository_name":"fork/repo",
                "target_branch_name":"main","source_branch_name":"feature","commit_sha":"headsha1"}),
            "{path}"
        );

        let refused = run_hook(&url, &path, "push", "evil/repo", Some("ott-good"), "{}").await;
        assert_eq!(refused.code, 1, "{path}");
        assert!(
            refused.stderr.contains("not compliant with policies"),
            "{}",
            refused.stderr
        );
        assert!(refused.meta.join("policy-refused").exists());

        let no_token = run_hook(&url, &path, "push", "octo/repo", None, "{}").await;
        assert_eq!(no_token.code, 1);
        let other = run_hook(
            &url,
            &path,
            "issue_comment",
            "octo/repo",
            Some("ott-good"),
            "{}",
        )
        .await;
        assert_eq!(other.code, 1);
        assert_eq!(
            seen.lock().len(),
            3,
            "{path}: refused cases must not all reach the service"
        );
    }
}
