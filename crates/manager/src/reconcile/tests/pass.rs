//! Whole passes: creation, accounting, failures and their reports, telemetry, requeue hints.

use super::*;

#[tokio::test]
async fn reconcile_from_empty_then_steady() {
    let w = world();
    let first = w.reconcile(2).await;
    assert_eq!(first.delta, 2);
    assert_eq!(first.created.len(), 2);
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    assert_eq!(w.owned_instances().len(), 2);
    assert_eq!(w.registry.names().len(), 2);
    let info = w.manager.get_github_info().await.expect("info");
    assert!(info.iter().all(|r| r.status() == "online" && !r.busy));

    let calls_before = w.provider.calls().len();
    let second = w.reconcile(2).await;
    assert_eq!(second.delta, 0);
    assert!(second.created.is_empty() && second.removed.is_empty());
    assert_eq!(
        w.provider.calls().len(),
        calls_before,
        "second pass changed something"
    );

    // Instances carry ownership keys and the resource profile, never secrets.
    for name in w.owned_instances() {
        let i = w.provider.instance(&name).expect("instance");
        assert_eq!(i.config.get(APP_KEY).map(String::as_str), Some("app"));
        assert_eq!(i.config.get(UNIT_KEY).map(String::as_str), Some("0"));
        assert_eq!(i.profiles, vec!["default", "cpu-2-mem-7GiB-disk-10GiB"]);
        assert!(!format!("{:?}", i.config).contains("s3cr3t"));
        assert!(
            i.files.keys().all(|p| !p.contains("token")),
            "token file left: {:?}",
            i.files.keys()
        );
        let env = String::from_utf8_lossy(&i.files[&format!("{RUNNER_DIR}/.env")].0).into_owned();
        assert!(
            env.contains("http_proxy=http://proxy:3128\nHTTP_PROXY=http://proxy:3128\n"),
            "{env}"
        );
    }
    assert_no_secret_in_execs(&w);
}

/// The install is one exec with the bundle on its standard input; a provider that cannot feed
/// stdin gets the bundle pushed first, then the same exec without input. Both come up.
#[tokio::test]
async fn install_feeds_the_bundle_on_stdin_or_pushes_it() {
    for stdin in [true, false] {
        let w = world_on(
            "app",
            0,
            |_| {},
            true,
            |p| {
                if stdin {
                    p
                } else {
                    p.without_stdin()
                }
            },
        );
        let report = w.reconcile(2).await;
        assert_eq!(
            report.created.len(),
            2,
            "stdin {stdin}: {:?}",
            report.failed
        );
        let setups: Vec<_> = w
            .provider
            .execs()
            .into_iter()
            .filter(|e| e.argv.join(" ").contains(crate::install::BUNDLE_PATH))
            .collect();
        assert_eq!(setups.len(), 2, "one setup exec per runner");
        for e in &setups {
            assert_eq!(e.stdin.is_some(), stdin, "{e:?}");
            assert!(e.stdin.is_none_or(|n| n > 1024), "the bundle: {e:?}");
        }
        assert_eq!(
            w.provider.execs().len(),
            2,
            "stdin {stdin}: nothing but the setup exec ran"
        );
        let info = w.manager.get_github_info().await.expect("info");
        assert!(info.iter().all(|r| r.status() == "online"), "{info:?}");
        assert_no_secret_in_execs(&w);
    }
}

/// A pass waits while another process holds the unit's pass lock (here: the lock file locked
/// through a second open file description, as another process's would be), then runs.
#[tokio::test]
async fn passes_wait_for_another_process_holding_the_unit_lock() {
    let w = world();
    let path = w.manager.pass_lock_path();
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let other = std::fs::File::create(&path).expect("lock file");
    other.lock().expect("lock");
    let resources = resources();
    let pass = w.manager.reconcile(1, &resources);
    tokio::pin!(pass);
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut pass).await;
    assert!(waited.is_err(), "the pass ran while the lock was held");
    assert!(w.provider.calls().is_empty(), "{:?}", w.provider.calls());
    let flush = tokio::time::timeout(
        Duration::from_millis(300),
        w.manager.flush(FlushMode::IdleOnly),
    )
    .await;
    assert!(flush.is_err(), "the flush ran while the lock was held");
    drop(other);
    let report = tokio::time::timeout(Duration::from_secs(10), pass)
        .await
        .expect("the pass runs once the lock is free")
        .expect("reconcile");
    assert_eq!(report.created.len(), 1);
    // Released after the pass: the next one does not wait.
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        w.manager.flush(FlushMode::IdleOnly),
    )
    .await
    .expect("not blocked")
    .expect("flush");
    assert_eq!(again.removed.len(), 1);
}

#[tokio::test]
async fn missing_binary_refuses_and_touches_nothing() {
    let w = world_with("app", 0, |_| {}, false);
    assert!(!w.manager.check_runner_bin());
    let err = w
        .manager
        .reconcile(2, &resources())
        .await
        .expect_err("must refuse");
    assert!(matches!(err, ManagerError::MissingRunnerBinary), "{err}");
    assert!(err.to_string().contains("no runner binary"));
    assert!(w.provider.calls().is_empty());
    assert!(w.provider.execs().is_empty());
}

#[tokio::test]
async fn failed_creation_is_cleaned_and_others_come_up() {
    let w = app_world(|c| c.create_concurrency = 1);
    w.provider.fail_next_configures(1);
    let report = w.reconcile(3).await;
    assert_eq!(report.created.len(), 2);
    assert_eq!(report.failed.len(), 1);
    let failure = &report.failed[0];
    assert_eq!(failure.action, "create");
    assert!(failure.error.contains("config.sh"), "{}", failure.error);
    let failed_name = failure.runner.clone().expect("runner");
    assert!(w.provider.instance(failed_name.as_str()).is_none());
    assert!(!w.registry.names().contains(failed_name.as_str()));
    assert_eq!(w.owned_instances().len(), 2);

    // Failed starts are retried, up to three attempts; three in a row fail that runner only.
    w.provider.fail_next_creates(2);
    let report = w.reconcile(3).await;
    assert_eq!(
        (report.created.len(), report.failed.len()),
        (1, 0),
        "{report:?}"
    );
    w.provider.fail_next_creates(3);
    let report = w.reconcile(5).await;
    assert_eq!((report.created.len(), report.failed.len()), (1, 1));
    assert!(report.failed[0].error.contains("creating instance"));
    assert_eq!(w.owned_instances().len(), 4);
    let deletes = w.provider.calls_starting("delete ");
    assert!(deletes >= 5, "each failed attempt is removed: {deletes}");
}

#[tokio::test]
async fn github_failure_touches_nothing() {
    let w = world();
    w.reconcile(2).await;
    let calls = w.provider.calls().len();
    w.registry.state.lock().fail_list = true;
    let err = w
        .manager
        .reconcile(0, &resources())
        .await
        .expect_err("list fails");
    assert!(err.to_string().contains("listing github runners"), "{err}");
    assert_eq!(w.provider.calls().len(), calls);
    assert_eq!(w.owned_instances().len(), 2);
    // The failed pass is reported too: `result="error"`, once; the ok ones before it stay.
    assert_eq!(reconciles(&w, ReconcileResult::Error), 1);
    assert_eq!(reconciles(&w, ReconcileResult::Ok), 1);
}

fn reconciles(w: &World, result: ReconcileResult) -> u64 {
    w.manager
        .metrics()
        .reconciles_total
        .get_or_create(&vec![("result", result.as_str().to_owned())])
        .get()
}

/// An authorisation error keeps what GitHub said behind it, in the prepare step's failure.
#[tokio::test]
async fn a_refused_token_keeps_githubs_message() {
    let w = world();
    w.registry.state.lock().refuse_token = true;
    let report = w.reconcile(1).await;
    assert_eq!(
        report.failed,
        [Failure {
            runner: None,
            action: Step::Prepare,
            error:
                "fetching a registration token: github refused the credentials while \
                    creating a registration token: github rejected the credentials: Bad credentials"
                    .into(),
        }]
    );
    assert_eq!(reconciles(&w, ReconcileResult::Partial), 1);
    assert!(w.owned_instances().is_empty());
}

/// A pass that leaves work for later says when to come back: after a short backoff that
/// doubles while steps keep failing, and not at all once nothing is left.
#[tokio::test]
async fn failed_steps_ask_for_a_requeue_that_backs_off() {
    let w = world();
    let created = w.reconcile(2).await;
    assert_eq!(created.requeue_after, None, "nothing left: {created:?}");
    w.runner_dies(created.created[0].as_str());
    w.registry.state.lock().fail_delete = true;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(w.reconcile(2).await.requeue_after);
    }
    assert_eq!(
        got,
        [5, 10, 20].map(|s| Some(Duration::from_secs(s))),
        "5 s, then doubling"
    );
    w.registry.state.lock().fail_delete = false;
    let report = w.reconcile(2).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.requeue_after, None);
    // The backoff starts again from its first step.
    w.registry.state.lock().refuse_token = true;
    let name = w.owned_instances().into_iter().next().expect("a runner");
    w.runner_dies(&name);
    assert_eq!(
        w.reconcile(2).await.requeue_after,
        Some(FAILED_STEP_REQUEUE)
    );
}

/// JIT pacing holds the rest of the shortfall back and asks to come back when the pacing
/// window frees a slot (within its minute), not after a whole interval.
#[tokio::test]
async fn jit_pacing_asks_for_a_requeue_within_the_window() {
    let w = app_world(|c| c.registration_mode = RegistrationMode::Jit);
    let report = w.reconcile(JIT_PER_MINUTE + 5).await;
    assert_eq!(report.created.len(), JIT_PER_MINUTE, "{:?}", report.failed);
    let hint = report.requeue_after.expect("the rest waits");
    assert!(
        hint > Duration::from_secs(50) && hint <= Duration::from_secs(60),
        "{hint:?}"
    );
    // The next pass creates nothing yet, and says the same.
    let again = w.reconcile(JIT_PER_MINUTE + 5).await;
    assert!(again.created.is_empty(), "{again:?}");
    assert!(again.requeue_after.is_some_and(|h| h <= hint), "{again:?}");
}

#[tokio::test]
async fn github_failure_mid_pass_keeps_instances_and_reports() {
    let w = world();
    let created = w.reconcile(3).await.created;
    w.runner_dies(created[0].as_str());
    w.registry.state.lock().fail_delete = true;
    let report = w.reconcile(2).await;
    // The dead runner could not be unregistered: its instance stays, the healthy ones too.
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].runner.as_ref(), Some(&created[0]));
    assert!(report
        .failed
        .iter()
        .all(|f| f.action == Step::Remove && f.error.contains("deleting github registration")));
    // The cause is kept down to the operating system's words, rendered once.
    let error = &report.failed[0].error;
    assert!(
        error.starts_with("deleting github registration ")
            && error.contains(": deleting a runner failed: request to github failed: ")
            && error.to_ascii_lowercase().contains("connection refused"),
        "{error}"
    );
    assert_eq!(w.owned_instances().len(), 3);
    // The next pass, with GitHub back, converges.
    w.registry.state.lock().fail_delete = false;
    let report = w.reconcile(2).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(w.owned_instances().len(), 2);
    assert!(!w.owned_instances().contains(created[0].as_str()));
}

#[tokio::test]
async fn jit_mode_creates_without_config_sh() {
    let w = app_world(|c| c.registration_mode = RegistrationMode::Jit);
    let report = w.reconcile(2).await;
    assert_eq!(report.created.len(), 2, "{:?}", report.failed);
    let info = w.manager.get_github_info().await.expect("info");
    assert_eq!(info.len(), 2);
    assert!(info.iter().all(|r| r.online));
    assert!(w
        .provider
        .execs()
        .iter()
        .all(|e| !format!("{:?}", e.argv).contains("./config.sh")));
    for name in w.owned_instances() {
        let i = w.provider.instance(&name).expect("instance");
        assert!(
            !i.files.contains_key(&format!("{RUNNER_DIR}/.jitconfig")),
            "jit file not deleted"
        );
    }
    assert_no_secret_in_execs(&w);
    assert_eq!(w.reconcile(2).await.delta, 0);
}

#[tokio::test]
async fn metrics_events_for_a_full_cycle() {
    let w = app_world(|c| c.issue_metrics = true);
    let created = w.reconcile(1).await.created;
    let name = created[0].as_str();
    w.provider.write_file(name, INSTALLED_FILE, "1000\n");
    w.provider.write_file(
        name,
        PRE_JOB_FILE,
        r#"{"timestamp":1010,"workflow":"ci","repo":"octo/repo","github_event":"push"}"#,
    );
    w.provider.write_file(
        name,
        POST_JOB_FILE,
        r#"{"timestamp":1070,"status":"normal"}"#,
    );
    w.runner_dies(name);
    w.reconcile(0).await;
    let events = w.events();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "runner_installed",
            "reconciliation",
            "runner_start",
            "runner_stop",
            "reconciliation"
        ]
    );
    assert_eq!(
        events[0],
        serde_json::json!({"event":"runner_installed","timestamp":12345,"flavor":"app","duration":0})
    );
    assert_eq!(
        events[2],
        serde_json::json!({"event":"runner_start","timestamp":1010,"flavor":"app","workflow":"ci","repo":"octo/repo","github_event":"push","idle":10})
    );
    assert_eq!(
        events[3],
        serde_json::json!({"event":"runner_stop","timestamp":1070,"flavor":"app","workflow":"ci","repo":"octo/repo","github_event":"push","status":"normal","job_duration":60})
    );
    assert_eq!(events[4]["crashed_runners"], 1);
    assert_eq!(events[4]["idle_runners"], 0);
}

#[tokio::test]
async fn metrics_off_writes_no_events() {
    let w = world();
    w.reconcile(1).await;
    assert!(w.events().is_empty());
}

#[tokio::test]
async fn latest_runner_bin_url() {
    let w = world();
    let d = w
        .manager
        .get_latest_runner_bin_url("linux", "x64")
        .await
        .expect("found");
    assert_eq!(d.filename, "x.tgz");
    let err = w
        .manager
        .get_latest_runner_bin_url("linux", "arm64")
        .await
        .expect_err("none");
    assert!(matches!(err, ManagerError::NoMatchingDownload { .. }));
}

#[test]
fn job_events_statuses() {
    let pre =
        Some(r#"{"timestamp":100,"workflow":"w","repo":"o/r","github_event":"push"}"#.to_owned());
    let none = JobRecords::default();
    assert!(job_events("n", &none, 500).is_none());
    let abnormal = JobRecords {
        pre_job: pre.clone(),
        ..JobRecords::default()
    };
    let (start, stop) = job_events("n", &abnormal, 500).expect("events");
    assert_eq!(
        (start.idle, stop.status.as_str(), stop.job_duration),
        (0, "abnormal", 400)
    );
    let refused = JobRecords {
        pre_job: pre,
        policy_refused: true,
        installed_at: Some("90\n".into()),
        ..JobRecords::default()
    };
    let (start, stop) = job_events("n", &refused, 130).expect("events");
    assert_eq!(start.idle, 10);
    assert_eq!(stop.status, "repo-policy-check-failure");
    let job = crate::events::JobContext {
        workflow: "w".into(),
        repo: "o/r".into(),
        github_event: "push".into(),
    };
    assert_eq!((&start.job, &stop.job), (&job, &job));
    let bare = JobRecords {
        pre_job: Some(r#"{"timestamp":100,"repo":"o/r"}"#.to_owned()),
        ..JobRecords::default()
    };
    let (start, _) = job_events("n", &bare, 500).expect("events");
    assert_eq!(
        start.job,
        crate::events::JobContext {
            repo: "o/r".into(),
            ..Default::default()
        },
        "missing fields are empty"
    );
}

/// `status` classifies as the pass does: a booting instance without a registration is booting,
/// not an orphan; an old one is; a registration without an instance is dangling; no exec runs.
#[tokio::test]
async fn status_agrees_with_the_pass() {
    let w = world();
    let created = w.reconcile(1).await.created;
    let keys = w.manager.owner().config_keys();
    let booting = w.manager.owner().new_runner_name();
    w.provider
        .add_booting_instance(booting.as_str(), keys.clone());
    let old = w.manager.owner().new_runner_name();
    w.provider
        .add_instance(old.as_str(), keys, Duration::from_secs(3600));
    let dangling = w.manager.owner().new_runner_name();
    w.registry.add(dangling.as_str(), false, false);
    let execs = w.provider.exec_count();
    let fleet = w.manager.status().await.expect("status");
    assert_eq!(w.provider.exec_count(), execs, "status runs no exec");
    let view = |name: &RunnerName| {
        fleet
            .runners
            .iter()
            .find(|r| &r.name == name)
            .unwrap_or_else(|| panic!("{name} in {fleet:?}"))
            .clone()
    };
    assert_eq!(view(&created[0]).state, RunnerState::Idle { online: true });
    assert_eq!(view(&booting).state, RunnerState::Booting);
    assert!(!view(&booting).is_orphan(), "booting is not an orphan");
    assert!(view(&old).is_orphan());
    assert!(view(&dangling).is_dangling());
    assert_eq!(
        view(&dangling).state,
        RunnerState::Remove(RemovalReason::Dangling)
    );
    assert!(fleet.runner_binary.is_some());
    // The pass agrees: it removes the old orphan and the dangling registration, keeps the rest.
    let report = w.reconcile(2).await;
    let removed: Vec<&RunnerName> = report.removed.iter().map(|(n, _)| n).collect();
    assert!(
        removed.contains(&&old) && removed.contains(&&dangling),
        "{report:?}"
    );
    assert!(!removed.contains(&&booting) && !removed.contains(&&created[0]));
}
