//! Simulated runner agents for the chaos checks, with late registration.

use super::*;

/// Simulated runner agents ([`SimAgents`]) that can also register late, after the manager observed
/// the instance (see [`ChaosAgents::register_late`]).
pub struct ChaosAgents {
    agents: SimAgents,
    /// Runners that register late: `true` once deleted.
    late: Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>,
    /// The sim's truth about jobs (what a real instance's hook records would show).
    admin: Admin,
}

impl ChaosAgents {
    pub fn new(outside: Arc<Outside>) -> anyhow::Result<Self> {
        Ok(Self {
            admin: Admin::new(&outside)?,
            agents: SimAgents::new(outside, REPO)?,
            late: Mutex::default(),
        })
    }

    /// `config.sh` and `run.sh` of an instance that was already there (a pass interrupted
    /// mid-create, or another process creating), then a job only it can take. Atomic with respect
    /// to the instance's deletion: if the instance is deleted first, nothing happens and `false`
    /// is returned; a deletion that comes later happens to a registered runner holding a job.
    pub async fn register_late(
        &self,
        admin: &Admin,
        name: &str,
        labels: &str,
        job_label: &str,
        token: &str,
    ) -> anyhow::Result<bool> {
        let gate = self.late.lock().entry(name.to_owned()).or_default().clone();
        let deleted = gate.lock().await;
        if *deleted {
            return Ok(false);
        }
        self.agents.register(name, labels, token).await?;
        self.agents.run(name, None).await?;
        admin.enqueue(job_label).await?;
        Ok(true)
    }

    pub fn credential(&self, name: &str) -> Option<String> {
        self.agents.credential(name)
    }
}

#[async_trait]
impl SimRunnerHooks for ChaosAgents {
    async fn configure(&self, name: &str, labels: &str, token: &str) -> bool {
        self.agents.register(name, labels, token).await.is_ok()
    }

    async fn start(&self, name: &str, jit: Option<&str>) -> bool {
        self.agents.run(name, jit).await.is_ok()
    }

    async fn stop(&self, name: &str) {
        let gate = self.late.lock().get(name).cloned();
        let _deleted = match &gate {
            Some(gate) => {
                let mut deleted = gate.lock().await;
                *deleted = true;
                Some(deleted)
            }
            None => None,
        };
        self.agents.stop_agent(name).await;
    }

    /// What a real instance's hook records show: the job the runner picked up and has not
    /// completed. A job only assigned is not running (not acquired yet). When the sim cannot be
    /// asked, a job is assumed, as an unanswered look inside keeps the runner too.
    async fn job_running(&self, name: &str) -> bool {
        let held = async {
            let runners = self.admin.runners().await?;
            let Some(job_id) = runners
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.job_id)
            else {
                return Ok::<_, anyhow::Error>(false);
            };
            Ok(self.admin.job(job_id).await?.status == JobStatus::InProgress)
        };
        held.await.unwrap_or(true)
    }

    /// `guest/quiesce.sh`: freezes the runner (the sim then hands it no job), then looks for a
    /// running job; with one, thaws it and answers busy. Freezing first models the script's
    /// check and `kill -STOP` being one process inside the instance, with no job message
    /// acquired in between.
    async fn quiesce(&self, name: &str) -> bool {
        if self.admin.freeze(name, true).await.is_err() {
            return false;
        }
        if self.job_running(name).await {
            let _ = self.admin.freeze(name, false).await;
            return false;
        }
        true
    }

    async fn resume(&self, name: &str) {
        let _ = self.admin.freeze(name, false).await;
    }
}
