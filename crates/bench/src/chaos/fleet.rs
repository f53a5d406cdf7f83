//! The chaos fleet: a manager over the SIMULATION provider, and the killed-job count.

use super::*;

/// A [`Fleet`] over the SIMULATION provider with [`ChaosAgents`], and a GitHub client with the
/// suite's shorter timeout and backoff constants.
pub struct ChaosFleet {
    fleet: Fleet,
    pub agents: Arc<ChaosAgents>,
    pub label: String,
}

impl std::ops::Deref for ChaosFleet {
    type Target = Fleet;

    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

impl ChaosFleet {
    pub async fn new(
        outside: &Arc<Outside>,
        app: &str,
        mode: RegistrationMode,
    ) -> anyhow::Result<Self> {
        let agents = Arc::new(ChaosAgents::new(outside.clone())?);
        let provider = Arc::new(SimProvider::new(
            SimLatency {
                create: Duration::ZERO,
                exec: Duration::from_micros(200),
                delete: Duration::from_micros(500),
            },
            Some(agents.clone() as Arc<dyn SimRunnerHooks>),
        ));
        let mut client_config =
            crate::fleet::sim_client_config(&outside.api_url(), outside.base_url())?;
        client_config.timeout = CLIENT_TIMEOUT;
        client_config.retry = github::RetryPolicy {
            max_retries: MAX_RETRIES,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
        };
        client_config.max_rate_limit_wait = Duration::from_secs(5);
        let fleet = Fleet::with(outside, app, provider, client_config, |config| {
            config.registration_mode = mode;
            config.create_concurrency = 4;
            config.busy_stop_timeout = Duration::from_secs(5);
        })
        .await?;
        Ok(Self {
            fleet,
            agents,
            label: app.to_owned(),
        })
    }

    /// The suite's [`Admin`] with GitHub's rate limit lifted, and a new fleet.
    pub async fn start(
        outside: &Arc<Outside>,
        app: &str,
        mode: RegistrationMode,
    ) -> anyhow::Result<(Admin, Self)> {
        let admin = Admin::new(outside)?;
        admin.lift_rate_limit().await?;
        Ok((admin, Self::new(outside, app, mode).await?))
    }

    fn owns(&self, name: &str) -> bool {
        self.manager.owner().parse_name(name).is_some()
    }

    /// This fleet's registrations in the sim.
    pub async fn registrations(&self, admin: &Admin) -> anyhow::Result<Vec<RunnerView>> {
        Ok(admin
            .runners()
            .await?
            .into_iter()
            .filter(|r| self.owns(&r.name))
            .collect())
    }

    /// Completes every unfinished job held by one of this fleet's runners, as the runner would,
    /// and ends the runner process (ephemeral). Returns how many were completed.
    pub async fn complete_jobs(&self, admin: &Admin) -> anyhow::Result<usize> {
        let mut done = 0;
        for job in admin.jobs().await? {
            if job.status == JobStatus::Completed {
                continue;
            }
            let Some(runner) = job.runner_name.as_deref().filter(|r| self.owns(r)) else {
                continue;
            };
            if let Some(credential) = self.agents.credential(runner) {
                if admin.complete(job.job_id, &credential).await.is_ok() {
                    done += 1;
                }
            }
            self.provider.finish_runner(runner);
        }
        Ok(done)
    }

    /// Brings the fleet to `quantity` online idle runners and no unfinished job of its label.
    /// JIT pacing (70 registrations a minute) can hold creations back: up to 90 s.
    pub async fn settle(&self, admin: &Admin, quantity: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            self.complete_jobs(admin).await?;
            let report = self.manager.reconcile(quantity, &self.resources).await?;
            let changed = !report.created.is_empty() || !report.removed.is_empty();
            if changed || !report.failed.is_empty() {
                continue;
            }
            let open = admin.jobs().await?.into_iter().any(|j| {
                j.status != JobStatus::Completed
                    && (j.labels.contains(&self.label)
                        || j.runner_name.as_deref().is_some_and(|r| self.owns(r)))
            });
            let regs = self.registrations(admin).await?;
            let good = regs
                .iter()
                .filter(|r| r.status == "online" && !r.busy)
                .count();
            if !open && regs.len() == quantity && good == quantity {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let regs: Vec<String> = self
            .registrations(admin)
            .await?
            .iter()
            .map(|r| format!("{} {} busy={} job={:?}", r.name, r.status, r.busy, r.job_id))
            .collect();
        let jobs: Vec<String> = admin
            .jobs()
            .await?
            .iter()
            .filter(|j| j.status != JobStatus::Completed)
            .map(|j| {
                format!(
                    "{} {:?} {:?} on {:?}",
                    j.job_id, j.status, j.labels, j.runner_name
                )
            })
            .collect();
        anyhow::bail!(
            "the fleet did not settle at {quantity}: registrations {regs:?}, instances {:?}, open jobs {jobs:?}",
            self.provider.instance_names()
        )
    }

    /// Drains the fleet (jobs completed, `reconcile(0)`) and returns the instances and
    /// registrations left behind.
    pub async fn drain_leaks(&self, admin: &Admin) -> anyhow::Result<u64> {
        admin.clear_faults().await?;
        admin.assign_on_delete(None, false).await?;
        for _ in 0..5 {
            self.complete_jobs(admin).await?;
            let _ = self.manager.reconcile(0, &self.resources).await;
        }
        let instances = self.provider.instance_names().len() as u64;
        let registrations = self.registrations(admin).await?.len() as u64;
        Ok(instances + registrations)
    }
}

/// Every job [`killed_jobs`] finds is a failure of `counts` (`busy jobs killed`), noted as
/// seen `when`.
pub(super) async fn fail_killed(
    fleet: &ChaosFleet,
    admin: &Admin,
    counted: &mut BTreeSet<u64>,
    counts: &mut Tally,
    when: &str,
) -> anyhow::Result<()> {
    for note in killed_jobs(fleet, admin, counted).await? {
        counts.add("busy jobs killed", 1);
        counts.fail(format!("{when}: {note}"));
    }
    Ok(())
}

/// Jobs whose runner's instance is gone while the job was still assigned, and jobs that ended
/// failed or cancelled. `counted` keeps each job from being counted twice.
pub(super) async fn killed_jobs(
    fleet: &ChaosFleet,
    admin: &Admin,
    counted: &mut BTreeSet<u64>,
) -> anyhow::Result<Vec<String>> {
    let mut killed = Vec::new();
    for job in admin.jobs().await? {
        if counted.contains(&job.job_id) {
            continue;
        }
        let Some(runner) = job.runner_name.as_deref().filter(|r| fleet.owns(r)) else {
            continue;
        };
        let bad_end = job.status == JobStatus::Completed
            && matches!(job.conclusion.as_deref(), Some("failure" | "cancelled"));
        let orphaned =
            job.status != JobStatus::Completed && fleet.provider.instance(runner).is_none();
        if bad_end || orphaned {
            counted.insert(job.job_id);
            killed.push(format!(
                "job {} on {runner}: status {:?}, conclusion {:?}, instance {}{}",
                job.job_id,
                job.status,
                job.conclusion,
                if orphaned { "deleted" } else { "present" },
                if job.killed_by_deletion {
                    ", killed by the DELETE of its busy runner (busy-lie fault)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(killed)
}
