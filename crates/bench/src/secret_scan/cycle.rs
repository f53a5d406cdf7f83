//! One cycle: a daemon run, jobs, one-shot commands, and the scan of everything collected.

use super::*;
use runner_manager::secret::SecretExt;

/// A random string of `n` letters and digits (lowercase only with `lower`).
fn random(n: usize, lower: bool) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let alphabet = if lower { &ALPHABET[..26] } else { ALPHABET };
    crate::bad_input::random_string(&mut rand::rng(), alphabet, n)
}

/// The daemon process; killed on drop.
struct Daemon {
    child: Option<std::process::Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Daemon {
    /// SIGTERM, then wait up to `bound` for the exit code.
    async fn stop(&mut self, bound: Duration) -> anyhow::Result<Option<i32>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status(),
        )
        .await
        .context("kill timed out")??;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            anyhow::ensure!(
                started.elapsed() < bound,
                "the daemon did not stop within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The places of one mode, filled during the cycle.
#[derive(Default)]
struct Places {
    logs_text: Corpus,
    logs_json: Corpus,
    events: Corpus,
    state: Corpus,
    config_show: Corpus,
    config_expanded: Corpus,
    cmdline: Corpus,
    environ: Corpus,
    job_output: Corpus,
    http: Corpus,
    /// Lines the Incus daemon logged during the cycle (it may log operations and exec commands).
    incus_log: Corpus,
}

struct Cycle {
    mode: Mode,
    app: String,
    sim: github_sim::SimHandle,
    lxd: lxd::Client,
    dir: tempfile::TempDir,
    config: PathBuf,
    binary: PathBuf,
    port: u16,
    pat: String,
    api_token: String,
    webhook_secret: String,
    service_token: String,
    http: reqwest::Client,
    places: Places,
    /// Length of the Incus daemon log when the cycle started (`None`: not readable).
    incus_log_start: Option<u64>,
    /// Instances whose config was captured (name → times).
    seen: BTreeMap<String, u32>,
    notes: Vec<String>,
    started: Instant,
}

impl Cycle {
    fn note(&mut self, text: String) {
        let line = format!(
            "[{} +{:5.1}s] {text}",
            self.mode.as_str(),
            self.started.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        self.notes.push(line);
    }

    fn prefix(&self) -> String {
        format!("{}-", self.app)
    }

    /// The daemon logs in JSON in token mode and in text in JIT mode; the commands the other.
    fn daemon_format(&self) -> &'static str {
        match self.mode {
            Mode::Token => "json",
            Mode::Jit => "text",
        }
    }

    fn command_format(&self) -> &'static str {
        match self.mode {
            Mode::Token => "text",
            Mode::Jit => "json",
        }
    }

    fn logs_of(&mut self, format: &str) -> &mut Corpus {
        if format == "json" {
            &mut self.places.logs_json
        } else {
            &mut self.places.logs_text
        }
    }

    async fn runners_online(
        &self,
        n: usize,
        not_in: &BTreeSet<String>,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let prefix = self.prefix();
            let online: Vec<String> = self
                .sim
                .runners()
                .into_iter()
                .filter(|r| {
                    r.name.starts_with(&prefix) && r.status == "online" && !not_in.contains(&r.name)
                })
                .map(|r| r.name)
                .collect();
            if online.len() >= n {
                return Ok(online);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{n} new runners never came online (have {online:?}); daemon log:\n{}",
                self.daemon_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    async fn instances(&self) -> anyhow::Result<Vec<String>> {
        let prefix = self.prefix();
        let all = tokio::time::timeout(COMMAND_TIMEOUT, self.lxd.list_instances())
            .await
            .context("listing instances timed out")??;
        Ok(all
            .into_iter()
            .filter(|i| i.name.starts_with(&prefix))
            .map(|i| i.name)
            .collect())
    }

    /// `incus config show` (plain and expanded) of every instance, and one process snapshot.
    async fn snapshot(&mut self, phase: &str) -> anyhow::Result<usize> {
        let t = Instant::now();
        let names = self.instances().await?;
        let listed = t.elapsed();
        for name in &names {
            let plain = incus(&["config", "show", name]).await?;
            let expanded = incus(&["config", "show", "--expanded", name]).await?;
            self.places
                .config_show
                .add(format!("{phase} {name}"), plain);
            self.places
                .config_expanded
                .add(format!("{phase} {name}"), expanded);
            *self.seen.entry(name.clone()).or_default() += 1;
        }
        let configs = t.elapsed();
        self.processes(phase, &names).await?;
        self.note(format!(
            "{phase}: list {:.1} s, configs {:.1} s, processes {:.1} s",
            listed.as_secs_f64(),
            (configs - listed).as_secs_f64(),
            (t.elapsed() - configs).as_secs_f64()
        ));
        Ok(names.len())
    }

    async fn processes(&mut self, phase: &str, names: &[String]) -> anyhow::Result<usize> {
        let dumps = futures::future::join_all(
            names
                .iter()
                .map(|name| async move { (name.clone(), processes(name).await) }),
        )
        .await;
        let mut n = 0;
        for (name, dump) in dumps {
            // An instance can vanish between list and exec (a finished runner being removed).
            let Ok(dump) = dump else { continue };
            for (pid, cmdline, environ) in dump {
                n += 1;
                self.places
                    .cmdline
                    .add(format!("{phase} {name} pid {pid}"), cmdline.clone());
                // The label names the process by pid only: a cmdline could hold a secret.
                self.places
                    .environ
                    .add(format!("{phase} {name} pid {pid}"), environ);
            }
        }
        Ok(n)
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status}: {body}");
        self.places.http.add(format!("GET {path}"), body.clone());
        Ok(body)
    }

    /// One-shot `runner-manager <args>` in the command log format.
    async fn run_command(&mut self, args: &[&str]) -> anyhow::Result<Output> {
        let format = self.command_format();
        let config = self.config.display().to_string();
        let mut all = vec!["--log-format", format, "--config", config.as_str()];
        all.extend_from_slice(args);
        let out = command(&self.binary, &all, &[("RUST_LOG", "debug")]).await?;
        let label = format!("runner-manager {}", args.join(" "));
        let logs = self.logs_of(format);
        logs.add_lines(&format!("{label} stderr"), &out.stderr);
        logs.add_lines(&format!("{label} stdout"), &out.stdout);
        Ok(out)
    }

    async fn run(&mut self, job_sleep: Duration) -> anyhow::Result<()> {
        // 1. The daemon reconciles to 2 runners at start.
        let log = std::fs::File::create(self.dir.path().join("daemon.log"))?;
        let child = std::process::Command::new(&self.binary)
            .args(["--log-format", self.daemon_format(), "--config"])
            .arg(&self.config)
            .arg("run")
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env_remove("RUNNER_MANAGER_GITHUB_TOKEN")
            .env_remove("RUNNER_MANAGER_SERVICE_TOKEN")
            .env_remove("RUNNER_MANAGER_API_TOKEN")
            .env_remove("RUNNER_MANAGER_WEBHOOK_SECRET")
            .env_remove("RUNNER_MANAGER_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting runner-manager run")?;
        let mut daemon = Daemon { child: Some(child) };
        let first = self.runners_online(2, &BTreeSet::new()).await?;
        self.note(format!("2 runners online: {first:?}"));
        let n = self.snapshot("idle").await?;
        self.note(format!("idle snapshot of {n} instances"));

        // 2. Two jobs that print their environment and processes, then sleep.
        let admin = format!("{}/_sim/jobs", self.sim.base_url());
        let script = format!(
            "echo R6-JOB-ENV; env; echo R6-JOB-PS; ps -o pid,args 2>/dev/null || ps; sleep {}; echo R6-JOB-END",
            job_sleep.as_secs()
        );
        let mut jobs = Vec::new();
        for _ in 0..2 {
            let response = self
                .http
                .post(&admin)
                .json(&serde_json::json!({"labels": [self.app], "script": script, "scope": REPO}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().as_u16() == 201,
                "enqueue: {}",
                response.status()
            );
            let body: serde_json::Value = response.json().await?;
            jobs.push(body["job_id"].as_u64().context("job_id")?);
        }
        // Process snapshots every ~0.3 s until both jobs are done.
        let deadline = Instant::now() + WAIT;
        let (mut snapshots, mut in_progress_seen) = (0u32, 0u32);
        loop {
            let views: Vec<_> = jobs.iter().filter_map(|id| self.sim.job(*id)).collect();
            let done = views.len() == jobs.len()
                && views
                    .iter()
                    .all(|j| j.status == github_sim::JobStatus::Completed);
            if done {
                for job in &views {
                    self.places
                        .job_output
                        .add_lines(&format!("job {}", job.job_id), &job.output);
                    anyhow::ensure!(
                        job.conclusion.as_deref() == Some("success"),
                        "job {} ended {:?}: {}",
                        job.job_id,
                        job.conclusion,
                        job.output
                    );
                }
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "jobs did not finish: {views:?}");
            if views
                .iter()
                .any(|j| j.status == github_sim::JobStatus::InProgress)
            {
                in_progress_seen += 1;
            }
            let t = Instant::now();
            let names = self.instances().await?;
            let n = self.processes("job running", &names).await?;
            snapshots += 1;
            let statuses: Vec<String> = views.iter().map(|j| format!("{:?}", j.status)).collect();
            self.note(format!(
                "snapshot {snapshots}: {n} processes in {} instances in {:.2} s; jobs {statuses:?}",
                names.len(),
                t.elapsed().as_secs_f64()
            ));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.note(format!(
            "2 jobs done; {snapshots} process snapshots while they ran ({in_progress_seen} with a job in progress)"
        ));
        anyhow::ensure!(in_progress_seen > 0, "no snapshot saw a job in progress");

        // 3. Replace: a signed webhook for a finished job on our runner, and POST /reconcile.
        let runner = first.first().cloned().unwrap_or_default();
        let body = serde_json::json!({
            "action": "completed",
            "workflow_job": {"id": jobs[0], "labels": [self.app], "runner_name": runner},
        })
        .to_string();
        let secret = runner_manager::secret::Secret::non_empty(self.webhook_secret.clone())
            .context("webhook secret")?;
        let signature = runner_manager::webhook::sign(&secret, body.as_bytes());
        let response = self
            .http
            .post(format!("http://127.0.0.1:{}/webhook", self.port))
            .header("x-github-event", "workflow_job")
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().as_u16() == 202,
            "webhook: {}",
            response.status()
        );
        let response = self
            .http
            .post(format!("http://127.0.0.1:{}/reconcile", self.port))
            .bearer_auth(&self.api_token)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        self.places.http.add("POST /reconcile", text.clone());
        anyhow::ensure!(status.is_success(), "POST /reconcile: {status}: {text}");
        let old: BTreeSet<String> = first.into_iter().collect();
        let replaced = self.runners_online(2, &old).await?;
        self.note(format!("replaced by {replaced:?}"));
        let n = self.snapshot("replaced").await?;
        self.note(format!("replacement snapshot of {n} instances"));

        // 4. The daemon's HTTP surface.
        for path in ["/metrics", "/runners", "/health"] {
            self.get(path).await?;
        }

        // 5. Stop the daemon, then one-shot commands: status, flush.
        let code = daemon.stop(Duration::from_secs(150)).await?;
        self.note(format!("daemon stopped, exit {code:?}"));
        let out = self.run_command(&["status", "--json"]).await?;
        anyhow::ensure!(out.code == Some(0), "status: {}", out.stderr);
        let out = self.run_command(&["flush", "--json"]).await?;
        anyhow::ensure!(out.code == Some(0), "flush: {}", out.stderr);
        let left = self.instances().await?;
        self.note(format!("flushed; instances left: {left:?}"));

        // 6. Files: the daemon log, the events log, the state directory.
        let log = self.daemon_log();
        let format = self.daemon_format();
        self.logs_of(format).add_lines("daemon", &log);
        let events =
            std::fs::read_to_string(self.dir.path().join("events.log")).unwrap_or_default();
        anyhow::ensure!(!events.is_empty(), "the events log is empty");
        self.places.events.add_lines("events.log", &events);
        if let Some(start) = self.incus_log_start {
            let bytes = std::fs::read(INCUS_LOG).unwrap_or_default();
            let from = usize::try_from(start).unwrap_or(0).min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[from..]).into_owned();
            self.places.incus_log.add_lines("incus.log", &text);
        }
        for path in walk(&self.dir.path().join("state")) {
            let bytes = std::fs::read(&path)?;
            self.places.state.add(
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            );
        }
        Ok(())
    }

    /// Plants `value` in the command line and environment of a process inside `instance`.
    async fn plant(&self, instance: &str, value: &str) -> anyhow::Result<()> {
        // setsid: Incus kills the exec's process group when it returns.
        let script = format!(
            "R6_CONTROL={value} setsid sh -c 'sleep 30; true' {value} </dev/null >/dev/null 2>&1 &"
        );
        incus(&["exec", instance, "--", "sh", "-c", &script]).await?;
        Ok(())
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

pub(super) async fn cycle(
    options: &Options,
    mode: Mode,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let app = format!("r6scan{}", random(4, true));
    let _guard = Guard::new(format!("{app}-"));
    let pat = format!("ghp_{}", random(36, false));
    let api_token = format!("r6api_{}", random(30, false));
    let webhook_secret = format!("r6hook_{}", random(30, false));
    let service_token = format!("r6svc_{}", random(30, false));

    let agent = github_sim::tarball::locate_or_build_agent().context("the fake runner agent")?;
    let tarball = github_sim::tarball::build_runner_tarball(&agent, RUNNER_VERSION)?;
    let listen: SocketAddr = format!("{BRIDGE_IP}:0").parse()?;
    let sim = github_sim::Sim::start(
        github_sim::SimConfig::default()
            .with_listen(listen)
            .with_token(pat.clone())
            .with_runner_tarball(tarball, RUNNER_VERSION),
    )
    .await
    .context("starting github-sim on the Incus bridge (run `./scripts/incus-env.sh up`)")?;
    let (policy_url, one_time_tokens) = policy_service(service_token.clone()).await?;
    // Generous: Incus's API can stall for a minute while other instances stop on a shared host.
    let lxd =
        crate::real::connect_incus(Duration::from_secs(150), Duration::from_secs(300)).await?;

    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    for (name, value) in [
        ("github-token", &pat),
        ("api-token", &api_token),
        ("webhook-secret", &webhook_secret),
        ("service-token", &service_token),
    ] {
        std::fs::write(dir.path().join(name), value)?;
    }
    let port = crate::burst::free_port()?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        crate::real::binary_config(
            &app,
            REPO,
            &dir.path().join("state"),
            &dir.path().join("github-token"),
            &sim,
            2,
        ) + &format!(
            r#"registration = "{mode}"

[policy]
url = "{policy_url}"
service_token_file = "{service}"

[metrics]
issue_metrics = true
events_log = "{events}"

[server]
listen = "127.0.0.1:{port}"
api_token_file = "{api_token_file}"
webhook_secret_file = "{secret}"
reconcile_interval_seconds = 3600
"#,
            mode = mode.as_str(),
            service = path("service-token"),
            events = path("events.log"),
            api_token_file = path("api-token"),
            secret = path("webhook-secret"),
        ),
    )?;
    let mut cycle = Cycle {
        mode,
        app,
        sim,
        lxd,
        dir,
        config,
        binary: options.binary.clone(),
        port,
        pat: pat.clone(),
        api_token: api_token.clone(),
        webhook_secret: webhook_secret.clone(),
        service_token: service_token.clone(),
        http: reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()?,
        places: Places::default(),
        incus_log_start: std::fs::metadata(INCUS_LOG).ok().map(|m| m.len()),
        seen: BTreeMap::new(),
        notes: Vec::new(),
        started,
    };
    let result = cycle.run(options.job_sleep).await;
    if let Err(err) = &result {
        eprintln!(
            "[{}] cycle failed: {err:#}\ndaemon log tail:\n{}",
            mode.as_str(),
            {
                let log = cycle.daemon_log();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            }
        );
    }
    result?;

    // The secrets, as issued.
    let issued: github_sim::IssuedSecrets = cycle
        .http
        .get(format!("{}/_sim/secrets", cycle.sim.base_url()))
        .send()
        .await?
        .json()
        .await?;
    let mut needles = vec![
        needle("PAT", &cycle.pat, true),
        needle("policy service token", &cycle.service_token, false),
        needle("server api_token", &cycle.api_token, false),
        needle("webhook secret", &cycle.webhook_secret, false),
    ];
    for (kind, values) in [
        ("registration token", &issued.registration_tokens),
        ("remove token", &issued.remove_tokens),
        ("JIT config", &issued.jit_configs),
        ("runner credential", &issued.runner_credentials),
    ] {
        for value in values {
            needles.push(needle(kind, value, false));
        }
    }
    for value in one_time_tokens.lock().iter() {
        needles.push(needle("one-time policy token", value, false));
    }
    let count = |kind: &str| needles.iter().filter(|n| n.kind == kind).count();
    cycle.note(format!(
        "secrets: 1 PAT, 3 service tokens, {} registration tokens, {} remove tokens, {} JIT configs, {} runner credentials, {} one-time policy tokens",
        count("registration token"),
        count("remove token"),
        count("JIT config"),
        count("runner credential"),
        count("one-time policy token"),
    ));
    match mode {
        // One registration token per pass that creates runners (2 passes), one JIT config per runner.
        Mode::Token => anyhow::ensure!(
            count("registration token") >= 2,
            "token mode issued too few registration tokens"
        ),
        Mode::Jit => anyhow::ensure!(
            count("JIT config") >= 4,
            "JIT mode issued too few JIT configs"
        ),
    }
    anyhow::ensure!(
        count("one-time policy token") >= 4,
        "the policy double issued too few tokens"
    );
    let secrets = needles.len() as u64;

    let m = mode.as_str().to_owned();
    let places = std::mem::take(&mut cycle.places);
    let list: [(&str, &Corpus); 11] = [
        ("logs, text format (RUST_LOG=debug)", &places.logs_text),
        ("logs, JSON format (RUST_LOG=debug)", &places.logs_json),
        ("events log", &places.events),
        ("state dir files", &places.state),
        ("incus config show", &places.config_show),
        ("incus config show --expanded", &places.config_expanded),
        ("/proc/*/cmdline in instances", &places.cmdline),
        ("/proc/*/environ in instances", &places.environ),
        ("job output (env, ps in the job)", &places.job_output),
        (
            "GET /metrics, /runners, /health, POST /reconcile",
            &places.http,
        ),
        ("Incus daemon log (lines of the cycle)", &places.incus_log),
    ];
    for (place, corpus) in list {
        if corpus.items.is_empty() && std::ptr::eq(corpus, &places.incus_log) {
            // Not readable here, or Incus wrote nothing: no row rather than an empty one.
            continue;
        }
        anyhow::ensure!(
            !corpus.items.is_empty(),
            "[{m}] nothing collected for {place}"
        );
        let hits = scan(corpus, &needles, place, &m, &mut outcome.hits);
        outcome.rows.push(Row {
            mode: m.clone(),
            place: place.to_owned(),
            items: corpus.items.len() as u64,
            secrets,
            hits,
            control: false,
        });
    }

    // Control (token mode run only): a planted value in a live instance must be found.
    if mode == Mode::Token {
        control(&mut cycle, &mut outcome.rows, &mut outcome.hits).await?;
    }
    outcome.notes.append(&mut cycle.notes);
    outcome.notes.push(format!(
        "[{m}] cycle took {:.1} s; instances captured: {}",
        started.elapsed().as_secs_f64(),
        cycle.seen.len()
    ));
    cycle.sim.shutdown().await;
    Ok(())
}

/// Launches one throwaway container under the cycle's prefix, plants a known value in a
/// process's command line and environment there, and scans one process snapshot for it.
async fn control(
    cycle: &mut Cycle,
    rows: &mut Vec<Row>,
    hits: &mut Vec<String>,
) -> anyhow::Result<()> {
    let name = format!("{}-control", cycle.app);
    incus(&["launch", "busybox", &name]).await?;
    let planted = format!("r6control_{}", random(24, false));
    // exec works once the container runs init; retry briefly.
    let mut planted_ok = false;
    for _ in 0..50 {
        if cycle.plant(&name, &planted).await.is_ok() {
            planted_ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(planted_ok, "could not plant the control value in {name}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut places = Places::default();
    std::mem::swap(&mut places, &mut cycle.places);
    cycle
        .processes("control", std::slice::from_ref(&name))
        .await?;
    std::mem::swap(&mut places, &mut cycle.places);
    let needles = [needle("control", &planted, false)];
    for (place, corpus) in [
        ("control: planted in /proc/*/cmdline", &places.cmdline),
        ("control: planted in /proc/*/environ", &places.environ),
    ] {
        let found = scan(corpus, &needles, place, "control", hits);
        rows.push(Row {
            mode: "control".into(),
            place: place.to_owned(),
            items: corpus.items.len() as u64,
            secrets: 1,
            hits: found,
            control: true,
        });
    }
    incus(&["delete", "--force", &name]).await?;
    Ok(())
}
