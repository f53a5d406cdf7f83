//! The busy-lie fault: GitHub's `busy` flag reads `false` and `DELETE /runners/{id}` answers 204
//! while the runner runs a job, which kills the job (reported by other managers' operators).

mod common;

use common::*;
use github_sim::{BusyLieSpec, JobSpec, JobStatus, SimConfig, SimHandle};
use reqwest::Method;
use serde_json::{json, Value};

async fn rest_runner(sim: &SimHandle, id: u64) -> Value {
    let response = api_send(sim, Method::GET, &runner_path(&repo(), id)).await;
    assert_eq!(response.status(), 200);
    json(response).await
}

async fn rest_list_busy(sim: &SimHandle, name: &str) -> Value {
    let body = json(api_send(sim, Method::GET, &repo().runners_path()).await).await;
    body["runners"]
        .as_array()
        .expect("runners")
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| r["busy"].clone())
        .expect("listed")
}

async fn delete(sim: &SimHandle, id: u64) -> u16 {
    api_status(sim, Method::DELETE, &runner_path(&repo(), id))
        .await
        .as_u16()
}

/// `<method> /_sim/faults/busy-lie`, with `body` as JSON if given.
async fn busy_lie_admin(sim: &SimHandle, method: Method, body: Option<Value>) -> reqwest::Response {
    let mut request = admin(sim, method, "/faults/busy-lie");
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

/// A persistent repo runner, online, that has picked up a job (`in_progress`).
async fn runner_with_running_job(sim: &SimHandle, name: &str) -> (u64, String, u64) {
    let (id, credential) = register(sim, &repo(), name, &[name], false).await;
    poll(sim, id, &credential, 0).await;
    let job = sim
        .enqueue_job(JobSpec::new(&[name], "sleep 600"))
        .expect("enqueue");
    let response = poll(sim, id, &credential, 5).await;
    assert_eq!(json(response).await["job_id"], job, "picked up");
    assert_eq!(
        sim.job(job).expect("job").status,
        JobStatus::InProgress,
        "running"
    );
    (id, credential, job)
}

#[tokio::test]
async fn busy_lie_reports_idle_lets_delete_through_and_records_the_kill() {
    let sim = start(SimConfig::default()).await;
    let (id, credential, job) = runner_with_running_job(&sim, "lied-about").await;

    // GitHub's normal behaviour first: busy, and DELETE refused.
    assert_eq!(rest_runner(&sim, id).await["busy"], true);
    assert_eq!(delete(&sim, id).await, 422);

    let armed = busy_lie_admin(&sim, Method::POST, Some(json!({}))).await;
    assert_eq!(armed.status(), 201);
    let armed = json(armed).await;
    assert_eq!(
        armed["fault"],
        json!({"rate": null, "count": null, "seed": null})
    );
    assert_eq!(armed["jobs_killed_by_deletion"], 0);

    // The lie: the REST list and get say idle, the admin view keeps the truth.
    assert_eq!(rest_runner(&sim, id).await["busy"], false);
    assert_eq!(rest_list_busy(&sim, "lied-about").await, false);
    let truth = sim
        .runners()
        .into_iter()
        .find(|r| r.id == id)
        .expect("admin view");
    assert!(truth.busy && truth.job_id == Some(job), "{truth:?}");

    // DELETE goes through: the runner is gone and its job is killed, with a marker.
    assert_eq!(delete(&sim, id).await, 204);
    assert!(sim.runners().iter().all(|r| r.id != id), "deregistered");
    let killed = sim.job(job).expect("job");
    assert_eq!(killed.status, JobStatus::Completed);
    assert_eq!(killed.conclusion.as_deref(), Some("failure"));
    assert!(killed.killed_by_deletion, "{killed:?}");
    assert!(
        killed
            .output
            .contains("##[error]Killed: the self-hosted runner lied-about")
            && killed.output.contains("busy-lie"),
        "{}",
        killed.output
    );
    let status = json(busy_lie_admin(&sim, Method::GET, None).await).await;
    assert_eq!(status["jobs_killed_by_deletion"], 1);
    assert_eq!(status["busy_runners_deleted"], 1);
    assert_eq!(status["killed_job_ids"], json!([job]));
    assert_eq!(status["jobs_requeued_by_deletion"], 0);
    assert_eq!(sim.busy_lie().jobs_killed_by_deletion, 1);
    let jobs = admin_json(&sim, &format!("/jobs/{job}")).await;
    assert_eq!(jobs["killed_by_deletion"], true);

    // The runner learns it is gone: its poll and its completion are refused.
    assert_eq!(poll(&sim, id, &credential, 0).await.status(), 401);
    assert_eq!(complete(&sim, &credential, job, 0, "").await.status(), 401);
    assert!(!sim.job(job).expect("job").output.is_empty());

    // Idle runners are not affected, and a deleted idle runner kills nothing.
    let (idle, idle_credential) = register(&sim, &repo(), "idle", &[], false).await;
    poll(&sim, idle, &idle_credential, 0).await;
    assert_eq!(rest_runner(&sim, idle).await["busy"], false);
    assert_eq!(delete(&sim, idle).await, 204);
    assert_eq!(sim.busy_lie().jobs_killed_by_deletion, 1);
    assert_eq!(sim.busy_lie().busy_runners_deleted, 1);
}

#[tokio::test]
async fn a_job_not_picked_up_yet_is_queued_again_not_killed() {
    let sim = start(SimConfig::default()).await;
    let (id, credential) = register(&sim, &repo(), "assigned", &["assigned"], false).await;
    poll(&sim, id, &credential, 0).await;
    let job = sim
        .enqueue_job(JobSpec::new(&["assigned"], "true"))
        .expect("enqueue");
    assert_eq!(sim.job(job).expect("job").runner_id, Some(id), "assigned");
    sim.set_busy_lie(Some(BusyLieSpec::all()));
    assert_eq!(rest_runner(&sim, id).await["busy"], false);
    assert_eq!(delete(&sim, id).await, 204);
    let view = sim.job(job).expect("job");
    assert_eq!(view.status, JobStatus::Queued);
    assert_eq!(view.runner_id, None);
    assert!(!view.killed_by_deletion);
    let status = sim.busy_lie();
    assert_eq!(
        (
            status.busy_runners_deleted,
            status.jobs_killed_by_deletion,
            status.jobs_requeued_by_deletion
        ),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn rate_zero_never_lies_and_count_disarms() {
    let sim = start(SimConfig::default()).await;
    let (a, _, job_a) = runner_with_running_job(&sim, "runner-a").await;
    let (b, _, job_b) = runner_with_running_job(&sim, "runner-b").await;

    sim.set_busy_lie(Some(BusyLieSpec::rate(0.0)));
    assert_eq!(rest_runner(&sim, a).await["busy"], true);
    assert_eq!(delete(&sim, a).await, 422);

    // One deletion through the lie, then the fault is gone and GitHub is truthful again.
    let response = busy_lie_admin(&sim, Method::POST, Some(json!({"rate": 1.0, "count": 1}))).await;
    assert_eq!(response.status(), 201);
    assert_eq!(rest_runner(&sim, b).await["busy"], false);
    assert_eq!(delete(&sim, a).await, 204);
    assert!(sim.job(job_a).expect("job").killed_by_deletion);
    assert_eq!(sim.busy_lie().fault, None, "disarmed after count deletions");
    assert_eq!(rest_runner(&sim, b).await["busy"], true);
    assert_eq!(delete(&sim, b).await, 422);
    assert!(!sim.job(job_b).expect("job").killed_by_deletion);
    assert_eq!(sim.busy_lie().killed_job_ids, [job_a]);
}

#[tokio::test]
async fn admin_api_validates_and_clears() {
    let sim = start(SimConfig::default()).await;
    for (body, status) in [
        (json!({"rate": 1.5}), 422),
        (json!({"rate": -0.1}), 422),
        (json!({"count": 0}), 422),
        (json!({"sometimes": true}), 400),
    ] {
        assert_eq!(
            busy_lie_admin(&sim, Method::POST, Some(body.clone()))
                .await
                .status(),
            status,
            "{body}"
        );
    }
    assert_eq!(sim.busy_lie().fault, None);
    let response = busy_lie_admin(&sim, Method::POST, Some(json!({"rate": 0.25, "seed": 7}))).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        sim.busy_lie().fault,
        Some(BusyLieSpec {
            rate: Some(0.25),
            count: None,
            seed: Some(7)
        })
    );
    assert_eq!(
        busy_lie_admin(&sim, Method::DELETE, None).await.status(),
        204
    );
    assert_eq!(
        json(busy_lie_admin(&sim, Method::GET, None).await).await["fault"],
        Value::Null
    );
    // `DELETE /_sim/faults` clears it with the other faults.
    sim.set_busy_lie(Some(BusyLieSpec::all()));
    let response = send(admin(&sim, Method::DELETE, "/faults")).await;
    assert_eq!(response.status(), 204);
    assert_eq!(sim.busy_lie().fault, None);
}

/// A frozen runner (SIGSTOP, before its deregistration) is not handed the job assigned to it:
/// deleted through the lie, the job goes back to the queue; thawed, it takes the job.
#[tokio::test]
async fn a_frozen_runner_takes_no_job_until_thawed() {
    let sim = start(SimConfig::default()).await;
    let (id, credential) = register(&sim, &repo(), "frozen", &["frozen"], false).await;
    poll(&sim, id, &credential, 0).await;
    assert!(sim.set_frozen("frozen", true));
    assert!(!sim.set_frozen("nobody", true), "unknown runner");
    let job = sim
        .enqueue_job(JobSpec::new(&["frozen"], "true"))
        .expect("enqueue");
    assert_eq!(sim.job(job).expect("job").runner_id, Some(id), "assigned");
    assert_eq!(
        poll(&sim, id, &credential, 0).await.status(),
        204,
        "not handed over"
    );
    assert_eq!(sim.job(job).expect("job").status, JobStatus::Queued);
    assert!(sim.runners().iter().any(|r| r.name == "frozen" && r.frozen));

    // Honest GitHub refuses the delete (assigned = busy); the thawed runner then takes the job.
    assert_eq!(delete(&sim, id).await, 422);
    assert!(sim.set_frozen("frozen", false));
    let response = poll(&sim, id, &credential, 5).await;
    assert_eq!(json(response).await["job_id"], job, "picked up once thawed");

    // Under the lie, a frozen runner's assigned job is queued again, never killed.
    let (id2, credential2) = register(&sim, &repo(), "frozen2", &["frozen2"], false).await;
    poll(&sim, id2, &credential2, 0).await;
    sim.set_frozen("frozen2", true);
    let job2 = sim
        .enqueue_job(JobSpec::new(&["frozen2"], "true"))
        .expect("enqueue");
    sim.set_busy_lie(Some(BusyLieSpec::all()));
    assert_eq!(delete(&sim, id2).await, 204);
    let view = sim.job(job2).expect("job");
    assert_eq!(view.status, JobStatus::Queued);
    assert!(!view.killed_by_deletion);
}
