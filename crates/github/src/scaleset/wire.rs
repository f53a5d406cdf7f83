//! The Actions service's JSON shapes. Responses are decoded leniently (unknown fields ignored,
//! absent fields defaulted); requests follow Go's `encoding/json` output on purpose (§3).

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::types::{
    JobCompleted, JobInfo, JobMessage, JobResult, JobStarted, NewScaleSet, ScaleSet, ScaleSetPatch,
    ScaleSetRunner, Statistics,
};
use crate::secret::Secret;

/// Go's zero `time.Time`, always sent as `createdOn`.
pub(crate) const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// Go's zero UUID, always sent as the new session's `sessionId`.
pub(crate) const ZERO_UUID: &str = "00000000-0000-0000-0000-000000000000";

// ---- requests --------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub(crate) struct LabelOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct RunnerSettingOut {
    #[serde(rename = "disableUpdate", skip_serializing_if = "std::ops::Not::not")]
    disable_update: bool,
}

/// A `RunnerScaleSet` as Go encodes it: zero values omitted, except `RunnerSetting` and
/// `createdOn`, which are always sent.
#[derive(Debug, Serialize)]
pub(crate) struct ScaleSetOut<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(rename = "runnerGroupId", skip_serializing_if = "is_zero")]
    runner_group_id: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<LabelOut<'a>>,
    #[serde(rename = "RunnerSetting")]
    runner_setting: RunnerSettingOut,
    #[serde(rename = "createdOn")]
    created_on: &'static str,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn labels_out(labels: &[String]) -> Vec<LabelOut<'_>> {
    labels
        .iter()
        .map(|name| LabelOut {
            kind: "System",
            name,
        })
        .collect()
}

impl<'a> ScaleSetOut<'a> {
    /// Labels default to the name, as the Go client does before sending.
    pub(crate) fn create(new: &'a NewScaleSet) -> Self {
        let labels = if new.labels.is_empty() {
            vec![LabelOut {
                kind: "System",
                name: &new.name,
            }]
        } else {
            labels_out(&new.labels)
        };
        Self {
            name: &new.name,
            runner_group_id: new.runner_group_id,
            labels,
            runner_setting: RunnerSettingOut {
                disable_update: new.disable_update,
            },
            created_on: GO_ZERO_TIME,
        }
    }

    pub(crate) fn patch(patch: &'a ScaleSetPatch) -> Self {
        Self {
            name: patch.name.as_deref().unwrap_or(""),
            runner_group_id: patch.runner_group_id.unwrap_or(0),
            labels: patch.labels.as_deref().map(labels_out).unwrap_or_default(),
            runner_setting: RunnerSettingOut {
                disable_update: patch.disable_update.unwrap_or(false),
            },
            created_on: GO_ZERO_TIME,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct SessionOut<'a> {
    #[serde(rename = "sessionId")]
    pub(crate) session_id: &'static str,
    #[serde(rename = "ownerName")]
    pub(crate) owner_name: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct JitOut<'a> {
    pub(crate) name: &'a str,
    #[serde(rename = "workFolder")]
    pub(crate) work_folder: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct RegistrationOut<'a> {
    pub(crate) url: &'a str,
    pub(crate) runner_event: &'static str,
}

// ---- responses -------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ListWire<T> {
    pub(crate) count: i64,
    pub(crate) value: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RunnerGroupWire {
    pub(crate) id: u64,
    pub(crate) name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LabelWire {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RunnerSettingWire {
    #[serde(rename = "disableUpdate")]
    disable_update: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct StatisticsWire {
    #[serde(rename = "totalAvailableJobs")]
    total_available_jobs: i64,
    #[serde(rename = "totalAcquiredJobs")]
    total_acquired_jobs: i64,
    #[serde(rename = "totalAssignedJobs")]
    total_assigned_jobs: i64,
    #[serde(rename = "totalRunningJobs")]
    total_running_jobs: i64,
    #[serde(rename = "totalRegisteredRunners")]
    total_registered_runners: i64,
    #[serde(rename = "totalBusyRunners")]
    total_busy_runners: i64,
    #[serde(rename = "totalIdleRunners")]
    total_idle_runners: i64,
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl From<StatisticsWire> for Statistics {
    fn from(w: StatisticsWire) -> Self {
        Statistics {
            total_available_jobs: count(w.total_available_jobs),
            total_acquired_jobs: count(w.total_acquired_jobs),
            total_assigned_jobs: count(w.total_assigned_jobs),
            total_running_jobs: count(w.total_running_jobs),
            total_registered_runners: count(w.total_registered_runners),
            total_busy_runners: count(w.total_busy_runners),
            total_idle_runners: count(w.total_idle_runners),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ScaleSetWire {
    pub(crate) id: u64,
    name: String,
    #[serde(rename = "runnerGroupId")]
    runner_group_id: u64,
    #[serde(rename = "runnerGroupName")]
    runner_group_name: String,
    labels: Option<Vec<LabelWire>>,
    #[serde(rename = "RunnerSetting", alias = "runnerSetting")]
    runner_setting: Option<RunnerSettingWire>,
    #[serde(rename = "createdOn")]
    created_on: Option<String>,
    statistics: Option<StatisticsWire>,
}

impl From<ScaleSetWire> for ScaleSet {
    fn from(w: ScaleSetWire) -> Self {
        ScaleSet {
            id: w.id,
            name: w.name,
            runner_group_id: w.runner_group_id,
            runner_group_name: w.runner_group_name,
            labels: w
                .labels
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.name)
                .collect(),
            disable_update: w.runner_setting.is_some_and(|s| s.disable_update),
            created_on: time_of(w.created_on.as_deref()),
            statistics: w.statistics.map(Into::into),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct SessionWire {
    #[serde(rename = "sessionId")]
    pub(crate) session_id: Option<String>,
    #[serde(rename = "ownerName")]
    pub(crate) owner_name: String,
    #[serde(rename = "runnerScaleSet")]
    pub(crate) runner_scale_set: Option<ScaleSetWire>,
    #[serde(rename = "messageQueueUrl")]
    pub(crate) message_queue_url: Option<String>,
    #[serde(rename = "messageQueueAccessToken")]
    pub(crate) message_queue_access_token: Option<Secret>,
    pub(crate) statistics: Option<StatisticsWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct EnvelopeWire {
    #[serde(rename = "messageId")]
    pub(crate) message_id: i64,
    #[serde(rename = "messageType")]
    pub(crate) message_type: String,
    pub(crate) statistics: Option<StatisticsWire>,
    pub(crate) body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JobWire {
    #[serde(rename = "messageType")]
    message_type: String,
    #[serde(rename = "runnerRequestId")]
    runner_request_id: i64,
    #[serde(rename = "jobId")]
    job_id: String,
    #[serde(rename = "ownerName")]
    owner_name: String,
    #[serde(rename = "repositoryName")]
    repository_name: String,
    #[serde(rename = "workflowRunId")]
    workflow_run_id: i64,
    #[serde(rename = "jobWorkflowRef")]
    job_workflow_ref: String,
    #[serde(rename = "jobDisplayName")]
    job_display_name: String,
    #[serde(rename = "eventName")]
    event_name: String,
    #[serde(rename = "requestLabels")]
    request_labels: Option<Vec<String>>,
    #[serde(rename = "queueTime")]
    queue_time: Option<String>,
    #[serde(rename = "scaleSetAssignTime")]
    scale_set_assign_time: Option<String>,
    #[serde(rename = "runnerAssignTime")]
    runner_assign_time: Option<String>,
    #[serde(rename = "finishTime")]
    finish_time: Option<String>,
    #[serde(rename = "runnerId")]
    runner_id: Option<i64>,
    #[serde(rename = "runnerName")]
    runner_name: Option<String>,
    result: Option<String>,
}

impl JobWire {
    fn info(&mut self) -> JobInfo {
        JobInfo {
            runner_request_id: self.runner_request_id,
            job_id: std::mem::take(&mut self.job_id),
            owner_name: std::mem::take(&mut self.owner_name),
            repository_name: std::mem::take(&mut self.repository_name),
            workflow_run_id: self.workflow_run_id,
            job_workflow_ref: std::mem::take(&mut self.job_workflow_ref),
            job_display_name: std::mem::take(&mut self.job_display_name),
            event_name: std::mem::take(&mut self.event_name),
            request_labels: self.request_labels.take().unwrap_or_default(),
            queue_time: time_of(self.queue_time.as_deref()),
            scale_set_assign_time: time_of(self.scale_set_assign_time.as_deref()),
            runner_assign_time: time_of(self.runner_assign_time.as_deref()),
            finish_time: time_of(self.finish_time.as_deref()),
        }
    }
}

/// Decodes the envelope's `body`: a JSON **string** holding a JSON array of job messages; `""`
/// (or an absent body) is none. Unknown inner types are skipped.
pub(crate) fn job_messages(body: Option<&str>) -> Result<Vec<JobMessage>, serde_json::Error> {
    let body = body.map(str::trim).unwrap_or("");
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<serde_json::Value> = serde_json::from_str(body)?;
    let mut jobs = Vec::with_capacity(raw.len());
    for value in raw {
        let mut w: JobWire = serde_json::from_value(value)?;
        let message = match w.message_type.as_str() {
            "JobAvailable" => JobMessage::Available(w.info()),
            "JobAssigned" => JobMessage::Assigned(w.info()),
            "JobStarted" => JobMessage::Started(JobStarted {
                job: w.info(),
                runner_id: w
                    .runner_id
                    .and_then(|id| u64::try_from(id).ok())
                    .unwrap_or(0),
                runner_name: w.runner_name.take().unwrap_or_default(),
            }),
            "JobCompleted" => JobMessage::Completed(JobCompleted {
                job: w.info(),
                result: match w.result.take().unwrap_or_default().as_str() {
                    "succeeded" => JobResult::Succeeded,
                    "failed" => JobResult::Failed,
                    "canceled" => JobResult::Canceled,
                    other => JobResult::Other(other.to_owned()),
                },
                runner_id: w
                    .runner_id
                    .and_then(|id| u64::try_from(id).ok())
                    .filter(|id| *id != 0),
                runner_name: w.runner_name.take().filter(|n| !n.is_empty()),
            }),
            other => {
                tracing::debug!(message_type = other, "skipping an unknown job message type");
                continue;
            }
        };
        jobs.push(message);
    }
    Ok(jobs)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RunnerWire {
    id: u64,
    name: String,
    #[serde(rename = "runnerScaleSetId")]
    runner_scale_set_id: u64,
}

impl From<RunnerWire> for ScaleSetRunner {
    fn from(w: RunnerWire) -> Self {
        ScaleSetRunner {
            id: w.id,
            name: w.name,
            scale_set_id: w.runner_scale_set_id,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct JitWire {
    pub(crate) runner: Option<RunnerWire>,
    #[serde(rename = "encodedJITConfig")]
    pub(crate) encoded_jit_config: Option<Secret>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct AdminConnectionWire {
    pub(crate) url: Option<String>,
    pub(crate) token: Option<Secret>,
}

/// An RFC 3339 time; absent, unparsable or Go's zero time is `None`.
pub(crate) fn time_of(value: Option<&str>) -> Option<OffsetDateTime> {
    let value = value?.trim();
    if value.is_empty() || value.starts_with("0001-01-01") {
        return None;
    }
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

/// `{"typeName","message"}` of an error body, keys matched ignoring case (as Go does). `None`
/// when the body is not a JSON object.
pub(crate) fn error_fields(body: &[u8]) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let field = |key: &str| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Some((field("typeName"), field("message")))
}

/// The numeric `exp` of a JWT's payload (not verified: the client only needs its lifetime).
pub(crate) fn jwt_exp(token: &str) -> Option<i64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = value.get("exp")?;
    exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))
}
