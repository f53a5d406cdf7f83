//! [`ScaleSetApi`] over `github::scaleset::ScaleSetClient`: the client's public types converted
//! by hand into the manager's; its errors sorted into the kinds the listener reacts to.

use async_trait::async_trait;
use github::scaleset::{
    JobInfo, JobMessage, Message, NewScaleSet, RemoveRunner, ScaleSetClient, ScaleSetError,
    ScaleSetPatch, Session, Statistics as WireStatistics,
};

use crate::scaleset::{
    ApiError, ApiErrorKind, Completed, JobEvent, JobRef, QueueMessage, Removed, ScaleSetApi,
    ScaleSetInfo, ScaleSetJit, ScaleSetPool, ScaleSetRunners, Started, Statistics,
};

/// The scale-set protocol over the real client (or the simulator).
#[derive(Debug, Clone)]
pub struct ScaleSetAdapter {
    client: ScaleSetClient,
}

impl ScaleSetAdapter {
    pub fn new(client: ScaleSetClient) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &ScaleSetClient {
        &self.client
    }
}

fn api_error(what: &str, error: ScaleSetError) -> ApiError {
    let kind = match &error {
        ScaleSetError::SessionConflict { .. } => ApiErrorKind::SessionConflict,
        ScaleSetError::SessionExpired { .. } => ApiErrorKind::SessionGone,
        ScaleSetError::ScaleSetNotFound { .. } => ApiErrorKind::ScaleSetGone,
        _ => ApiErrorKind::Other,
    };
    ApiError::new(what, kind, error)
}

fn statistics(s: &WireStatistics) -> Statistics {
    Statistics {
        available_jobs: s.total_available_jobs,
        acquired_jobs: s.total_acquired_jobs,
        assigned_jobs: s.total_assigned_jobs,
        running_jobs: s.total_running_jobs,
        registered_runners: s.total_registered_runners,
        busy_runners: s.total_busy_runners,
        idle_runners: s.total_idle_runners,
    }
}

fn job_ref(job: &JobInfo) -> JobRef {
    JobRef {
        job_id: job.job_id.clone(),
        runner_request_id: job.runner_request_id,
        queue_time: job.queue_time,
        scale_set_assign_time: job.scale_set_assign_time,
        runner_assign_time: job.runner_assign_time,
        finish_time: job.finish_time,
    }
}

fn message(m: &Message) -> QueueMessage {
    QueueMessage {
        id: m.id,
        statistics: statistics(&m.statistics),
        jobs: m
            .jobs
            .iter()
            .map(|job| match job {
                JobMessage::Available(j) => JobEvent::Available(job_ref(j)),
                JobMessage::Assigned(j) => JobEvent::Assigned(job_ref(j)),
                JobMessage::Started(s) => JobEvent::Started(Started {
                    job: job_ref(&s.job),
                    runner_id: s.runner_id,
                    runner_name: s.runner_name.clone(),
                }),
                JobMessage::Completed(c) => JobEvent::Completed(Completed {
                    job: job_ref(&c.job),
                    runner: c.runner_id.zip(c.runner_name.clone()),
                    result: c.result.as_str().to_owned(),
                }),
            })
            .collect(),
    }
}

#[async_trait]
impl ScaleSetRunners for ScaleSetAdapter {
    async fn generate_jit(&self, scale_set_id: u64, name: &str) -> Result<ScaleSetJit, ApiError> {
        let jit = self
            .client
            .generate_jit_config(scale_set_id, name)
            .await
            .map_err(|e| api_error("generating a scale-set jit config", e))?;
        Ok(ScaleSetJit {
            runner_id: jit.runner.id,
            encoded: jit.encoded,
        })
    }

    async fn runner_scale_set(&self, runner_id: u64) -> Result<Option<u64>, ApiError> {
        let runner = self
            .client
            .runner_by_id(runner_id)
            .await
            .map_err(|e| api_error("looking a scale-set runner up", e))?;
        Ok(runner.map(|r| r.scale_set_id))
    }

    async fn remove_runner(&self, runner_id: u64) -> Result<Removed, ApiError> {
        match self.client.remove_runner(runner_id).await {
            Ok(RemoveRunner::Removed) => Ok(Removed::Removed),
            Ok(RemoveRunner::JobStillRunning) => Ok(Removed::JobStillRunning),
            Err(e) => Err(api_error("removing a scale-set runner", e)),
        }
    }
}

#[async_trait]
impl ScaleSetApi for ScaleSetAdapter {
    type Session = Session;

    async fn ensure_scale_set(&self, pool: &ScaleSetPool) -> Result<ScaleSetInfo, ApiError> {
        let what = "finding or creating the scale set";
        let group = self
            .client
            .runner_group_id(pool.runner_group.as_deref().unwrap_or(""))
            .await
            .map_err(|e| api_error(what, e))?;
        let found = self
            .client
            .scale_set_by_name(group, &pool.scale_set_name)
            .await
            .map_err(|e| api_error(what, e))?;
        let set = match found {
            Some(set) => {
                // Adopted: its labels follow the pool's.
                let mut want: Vec<String> = pool.labels.clone();
                want.sort();
                let mut have: Vec<String> = set
                    .labels
                    .iter()
                    .filter(|l| **l != set.name)
                    .cloned()
                    .collect();
                have.sort();
                if want == have {
                    set
                } else {
                    let mut labels = vec![pool.scale_set_name.clone()];
                    labels.extend(pool.labels.iter().cloned());
                    let patch = ScaleSetPatch {
                        labels: Some(labels),
                        ..ScaleSetPatch::default()
                    };
                    self.client
                        .update_scale_set(set.id, &patch)
                        .await
                        .map_err(|e| api_error("updating the scale set's labels", e))?
                }
            }
            None => {
                let mut labels = vec![pool.scale_set_name.clone()];
                labels.extend(pool.labels.iter().cloned());
                let new = NewScaleSet {
                    name: pool.scale_set_name.clone(),
                    runner_group_id: group,
                    labels,
                    disable_update: true,
                };
                self.client
                    .create_scale_set(&new)
                    .await
                    .map_err(|e| api_error("creating the scale set", e))?
            }
        };
        self.client.set_scale_set_id(set.id);
        Ok(ScaleSetInfo {
            id: set.id,
            name: set.name.clone(),
            statistics: set.statistics.as_ref().map(statistics),
        })
    }

    async fn create_session(
        &self,
        scale_set_id: u64,
        owner: &str,
    ) -> Result<(Session, String, Statistics), ApiError> {
        let session = self
            .client
            .create_session(scale_set_id, owner)
            .await
            .map_err(|e| api_error("creating a message session", e))?;
        let id = session.id.clone();
        let stats = statistics(&session.statistics);
        Ok((session, id, stats))
    }

    async fn delete_session(&self, session: &Session) -> Result<(), ApiError> {
        self.client
            .delete_session(session)
            .await
            .map_err(|e| api_error("deleting the message session", e))
    }

    async fn get_message(
        &self,
        session: &mut Session,
        last_message_id: i64,
        max_capacity: usize,
    ) -> Result<Option<QueueMessage>, ApiError> {
        let capacity = u32::try_from(max_capacity).unwrap_or(u32::MAX);
        self.client
            .get_message(session, last_message_id, capacity)
            .await
            .map(|m| m.as_ref().map(message))
            .map_err(|e| api_error("polling the message queue", e))
    }

    async fn delete_message(&self, session: &mut Session, message_id: i64) -> Result<(), ApiError> {
        self.client
            .delete_message(session, message_id)
            .await
            .map_err(|e| api_error("acknowledging a message", e))
    }

    async fn acquire_jobs(
        &self,
        session: &mut Session,
        _scale_set_id: u64,
        request_ids: &[i64],
    ) -> Result<Vec<i64>, ApiError> {
        self.client
            .acquire_jobs(session, request_ids)
            .await
            .map_err(|e| api_error("acquiring jobs", e))
    }
}
