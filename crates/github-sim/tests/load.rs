//! Many runners polling at once: every job runs exactly once, on a matching runner.

mod common;

use std::time::Duration;

use common::*;
use futures::stream::{self, StreamExt};
use github_sim::{JobSpec, JobStatus, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_polling_runners_share_six_hundred_jobs() {
    let sim = start(SimConfig::default()).await;
    let token = registration_token(&sim, &org()).await;
    let runners: Vec<(u64, String)> =
        stream::iter(0..300)
            .map(|i| {
                let (sim, token) = (&sim, &token);
                let label = if i % 2 == 0 { "even" } else { "odd" };
                async move {
                    register_with(sim, token, &org(), &format!("load-{i}"), &[label], false).await
                }
            })
            .buffer_unordered(50)
            .collect()
            .await;
    let mut jobs = Vec::new();
    for i in 0..600 {
        let label = if i % 2 == 0 { "even" } else { "odd" };
        jobs.push(
            sim.enqueue_job(JobSpec::new(&[label], format!("echo {i}")))
                .expect("enqueue"),
        );
    }
    // Each runner polls until it sees no more work, completing what it gets.
    let done: usize = stream::iter(runners)
        .map(|(id, credential)| {
            let sim = &sim;
            async move {
                let mut ran = 0;
                loop {
                    let response = poll(sim, id, &credential, 1).await;
                    if response.status() == 204 {
                        return ran;
                    }
                    assert_eq!(response.status(), 200);
                    let job = json(response).await;
                    let job_id = job["job_id"].as_u64().expect("job_id");
                    let view = sim.job(job_id).expect("job");
                    assert_eq!(view.runner_id, Some(id));
                    assert_eq!(
                        complete(sim, &credential, job_id, 0, "ok").await.status(),
                        204
                    );
                    ran += 1;
                }
            }
        })
        .buffer_unordered(300)
        .fold(0, |sum, ran| async move { sum + ran })
        .await;
    assert_eq!(done, 600);
    for job_id in jobs {
        let view = sim
            .wait_for_job(job_id, Duration::from_secs(1))
            .await
            .expect("job");
        assert_eq!(view.status, JobStatus::Completed);
        let runner: u64 = view
            .runner_name
            .as_deref()
            .and_then(|n| n.strip_prefix("load-"))
            .and_then(|n| n.parse().ok())
            .expect("runner");
        let job_label = if (job_id - 1) % 2 == 0 { 0 } else { 1 };
        assert_eq!(
            runner % 2,
            job_label,
            "job {job_id} ran on a runner with its label"
        );
    }
}
