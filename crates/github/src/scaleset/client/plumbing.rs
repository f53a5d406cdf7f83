//! The plumbing of [`ScaleSetClient`]: sending, admin and queue calls, the bootstrap, and the
//! checks and decoding of answers.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use super::{AdminCall, AdminConnection, Credential, Gone, ScaleSetClient, JOB_MESSAGES};
use crate::scaleset::config::{UserAgentInfo, SCALESET_API_VERSION};
use crate::scaleset::error::{ScaleSetError, ServiceError};
use crate::scaleset::http::{authorization, send, Answer, Request, RetryMode};
use crate::scaleset::types::{Message, Session, Statistics};
use crate::scaleset::wire::{
    job_messages, jwt_exp, AdminConnectionWire, EnvelopeWire, RegistrationOut, SessionWire,
    ZERO_UUID,
};
use crate::secret::Secret;

impl ScaleSetClient {
    fn user_agent(&self) -> Result<HeaderValue, ScaleSetError> {
        let id = self.inner.scale_set_id.load(Ordering::Relaxed);
        HeaderValue::from_str(&user_agent_json(&self.inner.user_agent, id)).map_err(|_| {
            ScaleSetError::Config {
                reason: "the user agent cannot go in a header".into(),
            }
        })
    }

    async fn send(&self, request: &Request) -> Result<Answer, ScaleSetError> {
        let user_agent = self.user_agent()?;
        send(&self.inner.http, &self.inner.retry, &user_agent, request).await
    }

    /// [`admin_call`](Self::admin_call), then the answer when its status is one of `ok`,
    /// otherwise the mapped error (a bare 404 as the call's [`Gone`] says).
    pub(super) async fn call(
        &self,
        call: AdminCall<'_>,
        ok: &[u16],
    ) -> Result<Answer, ScaleSetError> {
        let answer = self.admin_call(&call).await?;
        expect_gone(call.operation, answer, ok, call.gone)
    }

    /// [`call`](Self::call) for a 200, its JSON body decoded.
    pub(super) async fn call_json<T: DeserializeOwned>(
        &self,
        call: AdminCall<'_>,
    ) -> Result<T, ScaleSetError> {
        let operation = call.operation;
        decode(operation, self.call(call, &[200]).await?)
    }

    /// A call on the admin base: `api-version` added, query keys sorted (as Go does). With the
    /// admin token, a 401 re-bootstraps once and retries (the token may be revoked before its
    /// `exp`); with the queue token, the 401 is returned for the caller to refresh.
    pub(super) async fn admin_call(&self, call: &AdminCall<'_>) -> Result<Answer, ScaleSetError> {
        let operation = call.operation;
        let mut rejected: Option<Secret> = None;
        loop {
            let connection = self.admin_connection(rejected.as_ref()).await?;
            let url = admin_url(&connection.base, &call.path, &call.query)?;
            let authorization = match &call.credential {
                Credential::Admin => connection.authorization.clone(),
                Credential::Queue(session) => {
                    authorization("Bearer", session.queue_token.expose())?
                }
            };
            let request = Request {
                operation,
                method: call.method.clone(),
                url,
                authorization,
                body: call.body.clone(),
                json: true,
                accept: None,
                max_capacity: None,
                timeout: self.inner.timeout,
                retry: call.retry,
            };
            let answer = self.send(&request).await?;
            if answer.status == StatusCode::UNAUTHORIZED
                && matches!(call.credential, Credential::Admin)
                && rejected.is_none()
            {
                tracing::info!(
                    operation,
                    "the admin token was refused, bootstrapping again"
                );
                rejected = Some(connection.token);
                continue;
            }
            return Ok(answer);
        }
    }

    /// A queue call (GET or DELETE on the queue URL, with the queue token): a 401 refreshes the
    /// session and retries once; a second 401 is `Unauthorized`.
    pub(super) async fn queue_call(
        &self,
        session: &mut Session,
        build: impl Fn(&Session) -> Result<Request, ScaleSetError>,
    ) -> Result<Answer, ScaleSetError> {
        let answer = self.send(&build(session)?).await?;
        if answer.status != StatusCode::UNAUTHORIZED {
            return Ok(answer);
        }
        tracing::debug!(session = %session.id, "queue token refused, refreshing the session");
        self.refresh_session(session).await?;
        self.send(&build(session)?).await
    }

    /// The admin connection, bootstrapped when missing, when its token has less than the
    /// margin left, or when it is the `rejected` one (a caller got 401 with it; concurrent
    /// callers that got the same 401 share one new bootstrap).
    async fn admin_connection(
        &self,
        rejected: Option<&Secret>,
    ) -> Result<AdminConnection, ScaleSetError> {
        let mut admin = self.inner.admin.lock().await;
        if let Some(connection) = admin.as_ref() {
            let fresh = SystemTime::now() + self.inner.margin < connection.expires;
            if fresh && rejected != Some(&connection.token) {
                return Ok(connection.clone());
            }
        }
        let connection = self.bootstrap().await?;
        *admin = Some(connection.clone());
        Ok(connection)
    }

    /// Steps (1→)2→3: a registration token from GitHub's REST API, exchanged (`RemoteAuth`)
    /// for the Actions service's URL and an admin token.
    async fn bootstrap(&self) -> Result<AdminConnection, ScaleSetError> {
        const OP: &str = "runner registration";
        let registration = self
            .inner
            .github
            .create_registration_token()
            .await
            .map_err(|source| ScaleSetError::Bootstrap { source })?;
        let body = encode(
            OP,
            &RegistrationOut {
                url: self.inner.target.url.as_str(),
                runner_event: "register",
            },
        )?;
        let mut body = body;
        body.push(b'\n');
        let base = self.inner.target.rest_url.as_str().trim_end_matches('/');
        let url = Url::parse(&format!("{base}/actions/runner-registration")).map_err(|e| {
            ScaleSetError::Config {
                reason: format!("building the runner-registration url: {e}"),
            }
        })?;
        let request = Request {
            operation: OP,
            method: Method::POST,
            url,
            authorization: authorization("RemoteAuth", registration.token.expose())?,
            body: Some(body),
            json: true,
            accept: None,
            max_capacity: None,
            timeout: self.inner.timeout,
            retry: RetryMode::Bootstrap,
        };
        let answer = self.send(&request).await?;
        if matches!(answer.status.as_u16(), 401 | 403) {
            return Err(ScaleSetError::Unauthorized {
                source: answer.service_error(),
            });
        }
        if !answer.status.is_success() {
            return Err(answer.into_error(OP));
        }
        let wire: AdminConnectionWire = decode(OP, answer)?;
        let invalid = |reason: &str| ScaleSetError::InvalidResponse {
            operation: OP,
            reason: reason.to_owned(),
        };
        let service_url = wire
            .url
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| invalid("no service url"))?;
        Url::parse(&service_url)
            .map_err(|e| invalid(&format!("the service url is invalid: {e}")))?;
        let token = wire
            .token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("no admin token"))?;
        let exp = jwt_exp(token.expose()).ok_or_else(|| invalid("the admin token has no exp"))?;
        let expires = UNIX_EPOCH + Duration::from_secs(u64::try_from(exp).unwrap_or(0));
        tracing::info!(
            expires_in = ?expires.duration_since(SystemTime::now()).unwrap_or_default(),
            "connected to the actions service"
        );
        Ok(AdminConnection {
            base: service_url.trim_end_matches('/').to_owned(),
            authorization: authorization("Bearer", token.expose())?,
            token,
            expires,
        })
    }
}

/// The compact JSON `User-Agent`, keys in the Go client's order.
pub(crate) fn user_agent_json(info: &UserAgentInfo, scale_set_id: u64) -> String {
    #[derive(Serialize)]
    struct Agent<'a> {
        system: &'a str,
        version: &'a str,
        commit_sha: &'a str,
        scale_set_id: u64,
        subsystem: &'a str,
        build_version: &'a str,
        build_commit_sha: &'a str,
        kind: &'a str,
    }
    let agent = Agent {
        system: &info.system,
        version: &info.version,
        commit_sha: &info.commit_sha,
        scale_set_id,
        subsystem: &info.subsystem,
        build_version: env!("CARGO_PKG_VERSION"),
        build_commit_sha: option_env!("RUNNER_MANAGER_COMMIT").unwrap_or(""),
        kind: "scaleset",
    };
    serde_json::to_string(&agent).unwrap_or_else(|_| "runner-manager".to_owned())
}

/// `base/path?…&api-version=6.0-preview`, query keys sorted.
pub(crate) fn admin_url(
    base: &str,
    path: &str,
    query: &[(&str, &str)],
) -> Result<Url, ScaleSetError> {
    let mut url = Url::parse(&format!("{base}/{}", path.trim_start_matches('/'))).map_err(|e| {
        ScaleSetError::Config {
            reason: format!("building the url of {path}: {e}"),
        }
    })?;
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.extend(
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    if !pairs.iter().any(|(k, _)| k == "api-version") {
        pairs.push(("api-version".to_owned(), SCALESET_API_VERSION.to_owned()));
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    url.query_pairs_mut().clear().extend_pairs(pairs);
    Ok(url)
}

pub(super) fn encode<T: Serialize + ?Sized>(
    operation: &'static str,
    body: &T,
) -> Result<Vec<u8>, ScaleSetError> {
    serde_json::to_vec(body).map_err(|source| ScaleSetError::Decode { operation, source })
}

pub(super) fn decode<T: DeserializeOwned>(
    operation: &'static str,
    answer: Answer,
) -> Result<T, ScaleSetError> {
    serde_json::from_slice(&answer.body)
        .map_err(|source| ScaleSetError::Decode { operation, source })
}

/// The answer when its status is one of `ok`; otherwise the mapped error (a success status
/// other than those is an error too: the Go client accepts only the documented one).
pub(super) fn expect(
    operation: &'static str,
    answer: Answer,
    ok: &[u16],
) -> Result<Answer, ScaleSetError> {
    if ok.contains(&answer.status.as_u16()) {
        Ok(answer)
    } else {
        Err(answer.into_error(operation))
    }
}

/// `expect` where a bare 404 means what `gone` says.
pub(super) fn expect_gone(
    operation: &'static str,
    answer: Answer,
    ok: &[u16],
    gone: Gone,
) -> Result<Answer, ScaleSetError> {
    match (gone, expect(operation, answer, ok)) {
        (
            Gone::ScaleSet | Gone::Session,
            Err(ScaleSetError::Status {
                status: 404,
                type_name,
                message,
                activity_id,
                ..
            }),
        ) if !(matches!(gone, Gone::ScaleSet) && type_name.contains("Agent")) => {
            let source = ServiceError {
                status: 404,
                type_name,
                message,
                activity_id,
                request_id: None,
            };
            Err(match gone {
                Gone::Session => ScaleSetError::SessionExpired { source },
                Gone::ScaleSet | Gone::Status => ScaleSetError::ScaleSetNotFound { source },
            })
        }
        (_, other) => other,
    }
}

pub(super) struct SessionParts {
    pub(super) id: String,
    pub(super) owner_name: Option<String>,
    pub(super) statistics: Option<Statistics>,
    pub(super) queue_url: Url,
    pub(super) queue_token: Secret,
}

/// The session fields every create or refresh answer must carry.
pub(super) fn session_parts(
    operation: &'static str,
    wire: SessionWire,
    current_id: Option<&str>,
) -> Result<SessionParts, ScaleSetError> {
    let invalid = |reason: &str| ScaleSetError::InvalidResponse {
        operation,
        reason: reason.to_owned(),
    };
    let id = wire
        .session_id
        .filter(|id| !id.is_empty() && id != ZERO_UUID)
        .or_else(|| current_id.map(str::to_owned))
        .ok_or_else(|| invalid("no sessionId"))?;
    let queue_url = wire
        .message_queue_url
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| invalid("no messageQueueUrl"))?;
    let queue_url = Url::parse(&queue_url)
        .map_err(|e| invalid(&format!("the messageQueueUrl is invalid: {e}")))?;
    let queue_token = wire
        .message_queue_access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("no messageQueueAccessToken"))?;
    Ok(SessionParts {
        id,
        owner_name: Some(wire.owner_name).filter(|o| !o.is_empty()),
        statistics: wire.statistics.map(Into::into),
        queue_url,
        queue_token,
    })
}

/// A 200 of the queue poll: the envelope, its statistics and its job messages.
pub(crate) fn parse_message(body: &[u8]) -> Result<Message, ScaleSetError> {
    const OP: &str = "get message";
    let envelope: EnvelopeWire =
        serde_json::from_slice(body).map_err(|source| ScaleSetError::Decode {
            operation: OP,
            source,
        })?;
    if envelope.message_type != JOB_MESSAGES {
        return Err(ScaleSetError::InvalidResponse {
            operation: OP,
            reason: format!("unexpected message type {:?}", envelope.message_type),
        });
    }
    let statistics = envelope
        .statistics
        .ok_or_else(|| ScaleSetError::InvalidResponse {
            operation: OP,
            reason: format!("message {} has no statistics", envelope.message_id),
        })?;
    let jobs = job_messages(envelope.body.as_deref()).map_err(|source| ScaleSetError::Decode {
        operation: OP,
        source,
    })?;
    Ok(Message {
        id: envelope.message_id,
        statistics: statistics.into(),
        jobs,
    })
}
