//! The sim's admin API (`/_sim/…`) as the chaos checks use it.

use super::*;
use crate::outside::get_json;

/// The sim's admin API (`/_sim/…`) and the runner's job completion.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    pub fn new(outside: &Outside) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()?,
            base: outside.base_url().to_owned(),
        })
    }

    /// `POST url` with `body` as JSON; the answer, a success.
    async fn post(
        &self,
        url: String,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(url)
            .json(body)
            .send()
            .await?
            .error_for_status()?)
    }

    /// Lifts the sim's primary rate limit (the suite makes far more than 5,000 calls an hour).
    pub async fn lift_rate_limit(&self) -> anyhow::Result<()> {
        self.post(
            format!("{}/_sim/rate-limit", self.base),
            &serde_json::json!({ "limit": 100_000_000u32, "used": 0 }),
        )
        .await?;
        Ok(())
    }

    pub async fn enqueue(&self, label: &str) -> anyhow::Result<u64> {
        let body = serde_json::json!({ "labels": [label], "script": "true" });
        let answer: serde_json::Value = self
            .post(format!("{}/_sim/jobs", self.base), &body)
            .await?
            .json()
            .await?;
        answer["job_id"].as_u64().context("enqueue answer")
    }

    pub async fn jobs(&self) -> anyhow::Result<Vec<JobView>> {
        get_json(&self.http, format!("{}/_sim/jobs", self.base)).await
    }

    /// Freezes or thaws a runner (`POST /_sim/runners/freeze`).
    pub async fn freeze(&self, name: &str, frozen: bool) -> anyhow::Result<()> {
        self.post(
            format!("{}/_sim/runners/freeze", self.base),
            &serde_json::json!({ "name": name, "frozen": frozen }),
        )
        .await?;
        Ok(())
    }

    pub async fn job(&self, id: u64) -> anyhow::Result<JobView> {
        get_json(&self.http, format!("{}/_sim/jobs/{id}", self.base)).await
    }

    pub async fn runners(&self) -> anyhow::Result<Vec<RunnerView>> {
        get_json(&self.http, format!("{}/_sim/runners", self.base)).await
    }

    pub async fn assign_on_delete(
        &self,
        runner: Option<&str>,
        enabled: bool,
    ) -> anyhow::Result<()> {
        let body = serde_json::json!({ "runner_name": runner, "enabled": enabled });
        self.post(format!("{}/_sim/hooks/assign-on-delete", self.base), &body)
            .await?;
        Ok(())
    }

    pub async fn fault(&self, spec: &FaultSpec) -> anyhow::Result<()> {
        self.post(format!("{}/_sim/faults", self.base), spec)
            .await?;
        Ok(())
    }

    /// Arms the busy-lie fault (`POST /_sim/faults/busy-lie`).
    pub async fn busy_lie(&self, spec: &BusyLieSpec) -> anyhow::Result<()> {
        self.post(format!("{}/_sim/faults/busy-lie", self.base), spec)
            .await?;
        Ok(())
    }

    /// The busy-lie fault and its counters (`jobs_killed_by_deletion`, …).
    pub async fn busy_lie_status(&self) -> anyhow::Result<BusyLieStatus> {
        get_json(&self.http, format!("{}/_sim/faults/busy-lie", self.base)).await
    }

    /// Clears every fault, the busy-lie fault included.
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/_sim/faults", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// `POST /_runner/jobs/{id}/complete` as the runner holding it.
    pub async fn complete(&self, job_id: u64, credential: &str) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_runner/jobs/{job_id}/complete", self.base))
            .header("authorization", format!("Bearer {credential}"))
            .json(&serde_json::json!({ "exit_code": 0, "output": "ok" }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
