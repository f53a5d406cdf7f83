//! The real agent as a runner scale set's JIT runner: a listener-side client bootstraps, creates
//! a scale set and a session, generates a JIT config (`generatejitconfig`), and the agent runs
//! it with `run.sh --jitconfig-file` exactly as it runs the REST JIT configs; the message queue
//! reports `JobAssigned`, `JobStarted` and `JobCompleted` for the job it ran, and the runner is
//! gone afterwards (ephemeral).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent, wait_exit};
use github_sim::{AcquireMode, ScaleSetConfig, Scope, Sim, SimConfig, SimHandle};
use serde_json::{json, Value};

mod common;

const WAIT: Duration = Duration::from_secs(60);

/// `(status, JSON body or Null)`.
fn read(mut response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

struct Listener {
    base: String,
    admin_token: String,
    queue_url: String,
    queue_token: String,
}

impl Listener {
    fn connect(sim: &SimHandle, scope: &Scope) -> Self {
        let token = sim.registration_token(scope).expect("registration token");
        let (status, body) = read(
            agent()
                .post(format!("{}/actions/runner-registration", sim.api_url()))
                .header("Authorization", &format!("RemoteAuth {}", token.expose()))
                .send_json(json!({"url": sim.scope_url(scope), "runner_event": "register"}))
                .expect("runner-registration"),
        );
        assert_eq!(status, 200, "{body}");
        Self {
            base: body["url"].as_str().expect("url").to_owned(),
            admin_token: body["token"].as_str().expect("token").to_owned(),
            queue_url: String::new(),
            queue_token: String::new(),
        }
    }

    fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        read(
            agent()
                .post(format!("{}{path}?api-version=6.0-preview", self.base))
                .header("Authorization", &format!("Bearer {}", self.admin_token))
                .send_json(body)
                .expect("admin POST"),
        )
    }

    /// Polls once (capacity 10) and acks what came; the job messages.
    fn poll(&self) -> Vec<Value> {
        let (status, envelope) = read(
            agent()
                .get(&self.queue_url)
                .header("Authorization", &format!("Bearer {}", self.queue_token))
                .header("X-ScaleSetMaxCapacity", "10")
                .call()
                .expect("queue GET"),
        );
        if status == 202 {
            return Vec::new();
        }
        assert_eq!(status, 200);
        let id = envelope["messageId"].as_i64().expect("messageId");
        let (path, query) = self.queue_url.split_once('?').expect("query");
        let ack = agent()
            .delete(format!("{path}/{id}?{query}"))
            .header("Authorization", &format!("Bearer {}", self.queue_token))
            .call()
            .expect("ack");
        assert_eq!(ack.status().as_u16(), 204);
        serde_json::from_str(envelope["body"].as_str().expect("body")).expect("job messages")
    }
}

fn install(dir: &Path) -> std::path::PathBuf {
    common::unpack_runner(Path::new(env!("CARGO_BIN_EXE_runner-agent")), dir)
}

#[test]
fn the_agent_runs_a_scale_set_jit_config_and_the_queue_reports_its_job() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = ScaleSetConfig {
        mode: AcquireMode::Hosted,
        ..ScaleSetConfig::for_tests()
    };
    let sim = rt
        .block_on(Sim::start(SimConfig::default().with_scaleset(cfg)))
        .expect("sim starts");
    let scope = Scope::org("octo-org");
    let mut listener = Listener::connect(&sim, &scope);
    let (status, set) = listener.admin_post(
        "_apis/runtime/runnerscalesets",
        json!({"name": "fr-set", "runnerGroupId": 1,
               "labels": [{"type": "System", "name": "fr-set"}],
               "RunnerSetting": {"disableUpdate": true}, "createdOn": "0001-01-01T00:00:00Z"}),
    );
    assert_eq!(status, 200, "{set}");
    let set_id = set["id"].as_u64().expect("id");
    let (status, session) = listener.admin_post(
        &format!("_apis/runtime/runnerscalesets/{set_id}/sessions"),
        json!({"sessionId": "00000000-0000-0000-0000-000000000000", "ownerName": "fr-test"}),
    );
    assert_eq!(status, 200, "{session}");
    listener.queue_url = session["messageQueueUrl"].as_str().expect("url").to_owned();
    listener.queue_token = session["messageQueueAccessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, jit) = listener.admin_post(
        &format!("_apis/runtime/runnerscalesets/{set_id}/generatejitconfig"),
        json!({"name": "fr-ss-1", "workFolder": ""}),
    );
    assert_eq!(status, 200, "{jit}");
    let runner_id = jit["runner"]["id"].as_u64().expect("runner id");

    let dir = tempfile::tempdir().expect("tempdir");
    let root = install(dir.path());
    let jit_file = dir.path().join("jit");
    fs::write(&jit_file, jit["encodedJITConfig"].as_str().expect("config")).expect("write");
    let log = fs::File::create(dir.path().join("run.log")).expect("log");
    let mut run = Command::new(root.join("run.sh"))
        .arg("--jitconfig-file")
        .arg(&jit_file)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("run.sh");

    let job_id = sim
        .enqueue_job(github_sim::JobSpec::new(&["FR-SET"], "echo scale-set-job"))
        .expect("enqueue");
    let deadline = Instant::now() + WAIT;
    let mut messages: Vec<Value> = Vec::new();
    while !messages.iter().any(|m| m["messageType"] == "JobCompleted") {
        assert!(
            Instant::now() < deadline,
            "no JobCompleted: {messages:?}\n{}",
            fs::read_to_string(dir.path().join("run.log")).unwrap_or_default()
        );
        messages.extend(listener.poll());
    }
    let kinds: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["messageType"].as_str())
        .collect();
    assert_eq!(kinds, ["JobAssigned", "JobStarted", "JobCompleted"]);
    let completed = &messages[2];
    assert_eq!(completed["result"], "succeeded");
    assert_eq!(completed["runnerId"], runner_id);
    assert_eq!(completed["runnerName"], "fr-ss-1");
    assert_eq!(completed["jobId"], messages[0]["jobId"]);

    let status = wait_exit(&mut run, WAIT);
    assert!(status.success(), "run.sh exit {status:?}");
    assert!(
        !jit_file.exists(),
        "the JIT config file is deleted once read"
    );
    let job = sim.job(job_id).expect("job");
    assert_eq!(job.conclusion.as_deref(), Some("success"));
    assert!(job.output.contains("scale-set-job"), "{}", job.output);
    assert_eq!(job.runner_name.as_deref(), Some("fr-ss-1"));
    let deadline = Instant::now() + WAIT;
    while !sim.runners().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the runner stays: {:?}",
            sim.runners()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sim);
    drop(rt);
}
