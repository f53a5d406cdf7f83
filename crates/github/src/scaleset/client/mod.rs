//! [`ScaleSetClient`]: bootstrap, admin calls and the message queue.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::Serialize;

use super::config::{ConfigUrl, ScaleSetConfig, ScaleSetRetry, UserAgentInfo};
use super::error::ScaleSetError;
use super::http::{authorization, build_http, Request, RetryMode};
use super::types::{
    Message, NewScaleSet, RemoveRunner, ScaleSet, ScaleSetJit, ScaleSetPatch, ScaleSetRunner,
    Session,
};
use super::wire::{
    JitOut, JitWire, ListWire, RunnerGroupWire, RunnerWire, ScaleSetOut, ScaleSetWire, SessionOut,
    SessionWire, ZERO_UUID,
};
use crate::client::{Client, ClientConfig, RetryPolicy};
use crate::secret::Secret;

pub(super) mod plumbing;

use plumbing::{decode, encode, expect, parse_message, session_parts, user_agent_json};

/// The envelope type every queue message must have.
const JOB_MESSAGES: &str = "RunnerScaleSetJobMessages";
/// `Accept` of the queue poll.
const QUEUE_ACCEPT: &str = "application/json; api-version=6.0-preview";
const SCALE_SETS: &str = "_apis/runtime/runnerscalesets";
const AGENTS: &str = "_apis/distributedtask/pools/0/agents";

/// A client of the runner scale-set protocol for one registration target (config URL).
///
/// Cheap to clone (an `Arc` inside); clones share the admin connection. Calls run
/// concurrently: the long poll ([`get_message`](Self::get_message)) holds nothing that other
/// calls wait for (unlike the Go client's single mutex). Only a re-bootstrap of the admin
/// connection is serialised, so concurrent callers share one.
#[derive(Clone)]
pub struct ScaleSetClient {
    inner: Arc<Inner>,
}

struct Inner {
    target: ConfigUrl,
    github: Client,
    http: reqwest::Client,
    retry: ScaleSetRetry,
    user_agent: UserAgentInfo,
    scale_set_id: AtomicU64,
    timeout: Duration,
    poll_timeout: Duration,
    margin: Duration,
    admin: tokio::sync::Mutex<Option<AdminConnection>>,
}

/// The Actions service's base URL and admin token from the last bootstrap.
#[derive(Clone)]
struct AdminConnection {
    /// Without a trailing `/`.
    base: String,
    token: Secret,
    authorization: HeaderValue,
    expires: SystemTime,
}

impl fmt::Debug for ScaleSetClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScaleSetClient")
            .field("config_url", &self.inner.target.url.as_str())
            .field("scope", &self.inner.target.scope)
            .field("hosted", &self.inner.target.hosted)
            .finish_non_exhaustive()
    }
}

/// Which token authorises an admin-base call.
enum Credential<'a> {
    Admin,
    Queue(&'a Session),
}

/// One call on the admin base: idempotent, without a body, with the admin token and a bare
/// 404 as a plain `Status`, unless set otherwise.
struct AdminCall<'a> {
    operation: &'static str,
    method: Method,
    path: String,
    query: Vec<(&'a str, &'a str)>,
    body: Option<Vec<u8>>,
    retry: RetryMode,
    credential: Credential<'a>,
    gone: Gone,
}

impl<'a> AdminCall<'a> {
    fn new(operation: &'static str, method: Method, path: impl Into<String>) -> Self {
        Self {
            operation,
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            retry: RetryMode::Idempotent,
            credential: Credential::Admin,
            gone: Gone::Status,
        }
    }

    fn get(operation: &'static str, path: impl Into<String>) -> Self {
        Self::new(operation, Method::GET, path)
    }

    fn query(mut self, query: &[(&'a str, &'a str)]) -> Self {
        self.query = query.to_vec();
        self
    }

    /// `body` as the JSON body.
    fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Self, ScaleSetError> {
        self.body = Some(encode(self.operation, body)?);
        Ok(self)
    }

    /// Not retried after an ambiguous failure (the call creates something).
    fn unprocessed(mut self) -> Self {
        self.retry = RetryMode::Unprocessed;
        self
    }

    fn gone(mut self, gone: Gone) -> Self {
        self.gone = gone;
        self
    }
}

/// What a bare 404 of a call means.
#[derive(Clone, Copy)]
enum Gone {
    /// Nothing more than its status.
    Status,
    /// The scale set is gone (`ScaleSetNotFound`), unless the service names an agent.
    ScaleSet,
    /// The session is gone, evicted on the service side (`SessionExpired`).
    Session,
}

/// The path of the session's resource.
fn session_path(session: &Session) -> String {
    format!(
        "{SCALE_SETS}/{}/sessions/{}",
        session.scale_set.id, session.id
    )
}

/// The only item of a lookup by name, if any; more than one is `InvalidResponse`.
fn at_most_one<W, T: From<W>>(
    operation: &'static str,
    list: ListWire<W>,
    what: &str,
    name: &str,
) -> Result<Option<T>, ScaleSetError> {
    let mut items = list.value.into_iter();
    match (items.next(), items.next()) {
        (None, _) => Ok(None),
        (Some(item), None) => Ok(Some(item.into())),
        (Some(_), Some(_)) => Err(ScaleSetError::InvalidResponse {
            operation,
            reason: format!("more than one {what} is named {name:?}"),
        }),
    }
}

impl ScaleSetClient {
    /// Builds the client; makes no request. Fails on an unusable config URL, proxy or
    /// credentials (a GitHub App cannot register enterprise runners).
    pub fn new(config: ScaleSetConfig) -> Result<Self, ScaleSetError> {
        let target = ConfigUrl::parse(&config.config_url, config.force_ghes)?;
        let user_agent = user_agent_json(&config.user_agent, 0);
        let mut github_config = ClientConfig::new(
            target.rest_url.clone(),
            target.web_url(),
            target.scope.clone(),
            config.auth.clone(),
        );
        github_config.user_agent = user_agent;
        github_config.timeout = config.timeout;
        github_config.proxy = config.proxy.clone();
        github_config.retry = RetryPolicy {
            max_retries: config.retry.max_retries,
            min_delay: config.retry.base_delay,
            max_delay: config.retry.max_delay,
        };
        github_config.max_rate_limit_wait = config.retry.max_retry_after;
        let github =
            Client::new(github_config).map_err(|source| ScaleSetError::Bootstrap { source })?;
        let http = build_http(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                github,
                http,
                retry: config.retry,
                user_agent: config.user_agent,
                scale_set_id: AtomicU64::new(0),
                timeout: config.timeout,
                poll_timeout: config.poll_timeout,
                margin: config.admin_token_margin,
                admin: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The parsed config URL: scope, hosted or GHES, REST base.
    pub fn config_url(&self) -> &ConfigUrl {
        &self.inner.target
    }

    /// Sets the `scale_set_id` reported in the `User-Agent` of later calls (0: none yet).
    pub fn set_scale_set_id(&self, id: u64) {
        self.inner.scale_set_id.store(id, Ordering::Relaxed);
    }

    /// The id of the runner group `name`. `default` (any case) or an empty name is id 1
    /// without a call, as the Go example and ARC do; otherwise the group must match exactly
    /// once (`RunnerGroupNotFound` when none does).
    pub async fn runner_group_id(&self, name: &str) -> Result<u64, ScaleSetError> {
        const OP: &str = "runner group lookup";
        if name.is_empty() || name.eq_ignore_ascii_case("default") {
            return Ok(crate::DEFAULT_RUNNER_GROUP_ID);
        }
        let call = AdminCall::get(OP, "_apis/runtime/runnergroups/").query(&[("groupName", name)]);
        let list: ListWire<RunnerGroupWire> = self.call_json(call).await?;
        match list.value.as_slice() {
            [] => Err(ScaleSetError::RunnerGroupNotFound {
                name: name.to_owned(),
            }),
            [group] => Ok(group.id),
            many => Err(ScaleSetError::InvalidResponse {
                operation: OP,
                reason: format!("{} runner groups are named {name:?}", many.len()),
            }),
        }
    }

    /// The scale set named `name` in the group, if any (more than one is an error).
    pub async fn scale_set_by_name(
        &self,
        group_id: u64,
        name: &str,
    ) -> Result<Option<ScaleSet>, ScaleSetError> {
        const OP: &str = "scale set lookup";
        let group = group_id.to_string();
        let call =
            AdminCall::get(OP, SCALE_SETS).query(&[("runnerGroupId", &group), ("name", name)]);
        let list: ListWire<ScaleSetWire> = self.call_json(call).await?;
        at_most_one(OP, list, "scale set", name)
    }

    /// The scale set with this id (`ScaleSetNotFound` when it is gone).
    pub async fn scale_set(&self, id: u64) -> Result<ScaleSet, ScaleSetError> {
        let call =
            AdminCall::get("get scale set", format!("{SCALE_SETS}/{id}")).gone(Gone::ScaleSet);
        Ok(self.call_json::<ScaleSetWire>(call).await?.into())
    }

    /// Creates a scale set (only a 200 is success). Labels default to the name; every label is
    /// sent as `System`. Not retried after an ambiguous failure: look the set up by name
    /// before creating it again.
    pub async fn create_scale_set(&self, new: &NewScaleSet) -> Result<ScaleSet, ScaleSetError> {
        let call = AdminCall::new("create scale set", Method::POST, SCALE_SETS)
            .json(&ScaleSetOut::create(new))?
            .unprocessed();
        Ok(self.call_json::<ScaleSetWire>(call).await?.into())
    }

    /// Changes the fields set in `patch` (the service merges them) and returns the set.
    pub async fn update_scale_set(
        &self,
        id: u64,
        patch: &ScaleSetPatch,
    ) -> Result<ScaleSet, ScaleSetError> {
        let call = AdminCall::new(
            "update scale set",
            Method::PATCH,
            format!("{SCALE_SETS}/{id}"),
        )
        .json(&ScaleSetOut::patch(patch))?
        .gone(Gone::ScaleSet);
        Ok(self.call_json::<ScaleSetWire>(call).await?.into())
    }

    /// Deletes a scale set (204). The service refuses while one of its runners runs a job
    /// (`JobStillRunning`).
    pub async fn delete_scale_set(&self, id: u64) -> Result<(), ScaleSetError> {
        let call = AdminCall::new(
            "delete scale set",
            Method::DELETE,
            format!("{SCALE_SETS}/{id}"),
        )
        .gone(Gone::ScaleSet);
        self.call(call, &[204]).await?;
        Ok(())
    }

    /// Opens the set's message session (only a 200 is success). A second session gets
    /// `SessionConflict` until the first is deleted or expires: retry that with a backoff of
    /// 30 s or more, and always [`delete_session`](Self::delete_session) on shutdown.
    pub async fn create_session(
        &self,
        scale_set_id: u64,
        owner: &str,
    ) -> Result<Session, ScaleSetError> {
        const OP: &str = "create session";
        let call = AdminCall::new(
            OP,
            Method::POST,
            format!("{SCALE_SETS}/{scale_set_id}/sessions"),
        )
        .json(&SessionOut {
            session_id: ZERO_UUID,
            owner_name: owner,
        })?
        .unprocessed();
        let mut wire: SessionWire = self.call_json(call).await?;
        let scale_set = match wire.runner_scale_set.take() {
            Some(set) => set.into(),
            None => self.scale_set(scale_set_id).await?,
        };
        let parts = session_parts(OP, wire, None)?;
        Ok(Session {
            id: parts.id,
            owner_name: parts.owner_name.unwrap_or_else(|| owner.to_owned()),
            scale_set,
            statistics: parts
                .statistics
                .ok_or_else(|| ScaleSetError::InvalidResponse {
                    operation: OP,
                    reason: "the session has no statistics".into(),
                })?,
            queue_url: parts.queue_url,
            queue_token: parts.queue_token,
        })
    }

    /// Refreshes the session (`PATCH`): a new queue token (and URL). The queue calls do this
    /// by themselves after a 401; a session evicted on the service side gives
    /// `SessionExpired`: create a new one.
    pub async fn refresh_session(&self, session: &mut Session) -> Result<(), ScaleSetError> {
        const OP: &str = "refresh session";
        let call = AdminCall::new(OP, Method::PATCH, session_path(session)).gone(Gone::Session);
        let mut wire: SessionWire = self.call_json(call).await?;
        let scale_set = wire.runner_scale_set.take();
        let parts = session_parts(OP, wire, Some(&session.id))?;
        session.id = parts.id;
        if let Some(owner) = parts.owner_name {
            session.owner_name = owner;
        }
        if let Some(set) = scale_set {
            session.scale_set = set.into();
        }
        if let Some(statistics) = parts.statistics {
            session.statistics = statistics;
        }
        session.queue_url = parts.queue_url;
        session.queue_token = parts.queue_token;
        tracing::debug!(session = %session.id, "refreshed the message session");
        Ok(())
    }

    /// Closes the session (204). A session the service no longer knows counts as closed.
    pub async fn delete_session(&self, session: &Session) -> Result<(), ScaleSetError> {
        let call = AdminCall::new("delete session", Method::DELETE, session_path(session))
            .gone(Gone::Session);
        match self.call(call, &[204]).await {
            Ok(_) | Err(ScaleSetError::SessionExpired { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The long poll: the oldest message not yet deleted with an id above `last_message_id`
    /// (the service holds the request up to ~50 s), or `Ok(None)` on 202 (nothing came).
    /// `max_capacity` is the most runners the caller will run (`X-ScaleSetMaxCapacity`): the
    /// service assigns jobs only while the set's assigned jobs are below it.
    ///
    /// A 401 refreshes the session's queue token and retries once. Other calls on the client
    /// run meanwhile. An envelope of another type than `RunnerScaleSetJobMessages`, or without
    /// statistics, is `InvalidResponse`; a 200 with an empty body is `Decode`.
    pub async fn get_message(
        &self,
        session: &mut Session,
        last_message_id: i64,
        max_capacity: u32,
    ) -> Result<Option<Message>, ScaleSetError> {
        const OP: &str = "get message";
        let build = |session: &Session| -> Result<Request, ScaleSetError> {
            let mut url = session.queue_url.clone();
            if last_message_id > 0 {
                url.query_pairs_mut()
                    .append_pair("lastMessageId", &last_message_id.to_string());
            }
            Ok(Request {
                operation: OP,
                method: Method::GET,
                url,
                authorization: authorization("Bearer", session.queue_token.expose())?,
                body: None,
                json: false,
                accept: Some(QUEUE_ACCEPT),
                max_capacity: Some(max_capacity),
                timeout: self.inner.poll_timeout,
                retry: RetryMode::Idempotent,
            })
        };
        let answer = self.queue_call(session, build).await?;
        match answer.status {
            StatusCode::ACCEPTED => Ok(None),
            StatusCode::OK => parse_message(&answer.body).map(Some),
            _ => Err(answer.into_error(OP)),
        }
    }

    /// Acknowledges (deletes) a message (204), so it is not delivered again. A 401 refreshes
    /// the session and retries once.
    pub async fn delete_message(
        &self,
        session: &mut Session,
        message_id: i64,
    ) -> Result<(), ScaleSetError> {
        const OP: &str = "delete message";
        let build = |session: &Session| -> Result<Request, ScaleSetError> {
            let mut url = session.queue_url.clone();
            let path = format!("{}/{message_id}", url.path().trim_end_matches('/'));
            url.set_path(&path);
            Ok(Request {
                operation: OP,
                method: Method::DELETE,
                url,
                authorization: authorization("Bearer", session.queue_token.expose())?,
                body: None,
                json: true,
                accept: None,
                max_capacity: None,
                timeout: self.inner.timeout,
                retry: RetryMode::Idempotent,
            })
        };
        let answer = self.queue_call(session, build).await?;
        expect(OP, answer, &[204])?;
        Ok(())
    }

    /// GHES flow: acquires the jobs of `JobAvailable` messages by `runner_request_id`, with the
    /// queue token, and returns the ids actually won. A 401 refreshes the session and retries
    /// once. An empty list makes no call. (github.com assigns jobs itself and answers 404.)
    pub async fn acquire_jobs(
        &self,
        session: &mut Session,
        request_ids: &[i64],
    ) -> Result<Vec<i64>, ScaleSetError> {
        const OP: &str = "acquire jobs";
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let body = encode(OP, &request_ids)?;
        let path = format!("{SCALE_SETS}/{}/acquirejobs", session.scale_set.id);
        let mut refreshed = false;
        loop {
            let mut call = AdminCall::new(OP, Method::POST, path.clone());
            call.body = Some(body.clone());
            call.credential = Credential::Queue(session);
            let answer = self.admin_call(&call).await?;
            if answer.status == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                self.refresh_session(session).await?;
                continue;
            }
            let list: ListWire<i64> = decode(OP, expect(OP, answer, &[200])?)?;
            return Ok(list.value);
        }
    }

    /// Registers a runner in the set and returns its single-use JIT config. The runner exists
    /// at once (offline), so a lost answer leaves it behind: the call is not retried after an
    /// ambiguous failure. A taken name is `RunnerExists`, with the runner that has it when the
    /// lookup succeeds (same set: remove it and retry; other set: choose another name).
    pub async fn generate_jit_config(
        &self,
        scale_set_id: u64,
        runner_name: &str,
    ) -> Result<ScaleSetJit, ScaleSetError> {
        const OP: &str = "generate jit config";
        let path = format!("{SCALE_SETS}/{scale_set_id}/generatejitconfig");
        let call = AdminCall::new(OP, Method::POST, path)
            .json(&JitOut {
                name: runner_name,
                work_folder: "",
            })?
            .unprocessed();
        let answer = match self.call(call, &[200]).await {
            Ok(answer) => answer,
            Err(ScaleSetError::RunnerExists { source, .. }) => {
                let existing = match self.runner_by_name(runner_name).await {
                    Ok(found) => found.map(Box::new),
                    Err(error) => {
                        tracing::debug!(%error, "looking up the runner that has the name failed");
                        None
                    }
                };
                return Err(ScaleSetError::RunnerExists { existing, source });
            }
            Err(error) => return Err(error),
        };
        let wire: JitWire = decode(OP, answer)?;
        let invalid = |reason: &str| ScaleSetError::InvalidResponse {
            operation: OP,
            reason: reason.to_owned(),
        };
        let runner = wire.runner.ok_or_else(|| invalid("no runner"))?;
        let encoded = wire
            .encoded_jit_config
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("no encodedJITConfig"))?;
        Ok(ScaleSetJit {
            runner: runner.into(),
            encoded,
        })
    }

    /// The runner with this id, or `None` when it is gone.
    pub async fn runner_by_id(&self, id: u64) -> Result<Option<ScaleSetRunner>, ScaleSetError> {
        const OP: &str = "get runner";
        match self
            .call(AdminCall::get(OP, format!("{AGENTS}/{id}")), &[200])
            .await
        {
            Ok(answer) => Ok(Some(decode::<RunnerWire>(OP, answer)?.into())),
            Err(ScaleSetError::RunnerNotFound { .. }) => Ok(None),
            Err(ScaleSetError::Status { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The runner with this exact name, if any (more than one is an error).
    pub async fn runner_by_name(
        &self,
        name: &str,
    ) -> Result<Option<ScaleSetRunner>, ScaleSetError> {
        const OP: &str = "find runner";
        let call = AdminCall::get(OP, AGENTS).query(&[("agentName", name)]);
        let list: ListWire<RunnerWire> = self.call_json(call).await?;
        at_most_one(OP, list, "runner", name)
    }

    /// Deregisters a runner (204, also when it is already gone). A runner running a job is
    /// left alone: `Ok(RemoveRunner::JobStillRunning)` (the service answers
    /// `JobStillRunningException`, 400 per the ADR).
    pub async fn remove_runner(&self, id: u64) -> Result<RemoveRunner, ScaleSetError> {
        let call = AdminCall::new("remove runner", Method::DELETE, format!("{AGENTS}/{id}"));
        match self.call(call, &[204]).await {
            Ok(_) => Ok(RemoveRunner::Removed),
            Err(ScaleSetError::JobStillRunning { .. }) => Ok(RemoveRunner::JobStillRunning),
            Err(ScaleSetError::RunnerNotFound { .. })
            | Err(ScaleSetError::Status { status: 404, .. }) => Ok(RemoveRunner::Removed),
            Err(error) => Err(error),
        }
    }
}
