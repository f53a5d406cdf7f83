//! The transport: one `reqwest::Client` (proxy, timeouts), one request with its retries (§2),
//! and the service's error body.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode};
use url::Url;

use super::config::{ScaleSetConfig, ScaleSetRetry};
use super::error::{ScaleSetError, ServiceError};
use super::wire::error_fields;
use crate::client::with_proxy;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// A plain-text error body is kept up to this many bytes.
const MAX_ERROR_TEXT: usize = 2048;

/// When a failed attempt is repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryMode {
    /// Transport errors, timeouts, 429, 5xx except 501 (the Go client's rule).
    Idempotent,
    /// Only failures the service cannot have processed: connection failures and 429. For
    /// creating calls, whose lost success would come back as a conflict.
    Unprocessed,
    /// `Idempotent` plus 401 and 403 (a fresh registration token may not be valid yet).
    Bootstrap,
}

/// One request, before retries.
pub(crate) struct Request {
    pub(crate) operation: &'static str,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) authorization: HeaderValue,
    pub(crate) body: Option<Vec<u8>>,
    /// `Content-Type: application/json` (sent on admin GETs and DELETEs too, as Go does).
    pub(crate) json: bool,
    pub(crate) accept: Option<&'static str>,
    pub(crate) max_capacity: Option<u32>,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryMode,
}

/// A response the retries did not swallow, with the UTF-8 BOM stripped from its body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    /// The service's `{"typeName","message"}` (or plain text) and its ids.
    pub(crate) fn service_error(&self) -> ServiceError {
        let header = |name: &str| {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (type_name, message) = error_fields(&self.body).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&self.body);
            let mut text = text.trim().to_owned();
            if text.len() > MAX_ERROR_TEXT {
                let mut cut = MAX_ERROR_TEXT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            (String::new(), text)
        });
        let message = if message.is_empty() {
            self.status.canonical_reason().unwrap_or("").to_owned()
        } else {
            message
        };
        ServiceError {
            status: self.status.as_u16(),
            type_name,
            message,
            activity_id: header("activityid"),
            request_id: header("x-github-request-id"),
        }
    }

    /// The service's refusal as a typed error.
    pub(crate) fn into_error(self, operation: &'static str) -> ScaleSetError {
        ScaleSetError::from_service(operation, self.service_error())
    }
}

pub(crate) fn build_http(config: &ScaleSetConfig) -> Result<reqwest::Client, ScaleSetError> {
    let builder = reqwest::Client::builder()
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::limited(10));
    let builder =
        with_proxy(builder, config.proxy.as_ref()).map_err(|which| ScaleSetError::Config {
            reason: format!("invalid {which} proxy url"),
        })?;
    builder.build().map_err(|e| ScaleSetError::Config {
        reason: format!("building the http client: {e}"),
    })
}

/// A sensitive `Authorization` value (`Bearer …`, `RemoteAuth …`).
pub(crate) fn authorization(scheme: &str, token: &str) -> Result<HeaderValue, ScaleSetError> {
    let mut value =
        HeaderValue::from_str(&format!("{scheme} {token}")).map_err(|_| ScaleSetError::Config {
            reason: "a token contains characters that cannot go in a header".into(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Sends `request`, retrying per its mode. Returns the first answer that is not retried (or the
/// last one when retries ran out); transport failures become errors.
pub(crate) async fn send(
    http: &reqwest::Client,
    retry: &ScaleSetRetry,
    user_agent: &HeaderValue,
    request: &Request,
) -> Result<Answer, ScaleSetError> {
    let mut backoff = ExponentialBuilder::default()
        .with_factor(2.0)
        .with_min_delay(retry.base_delay)
        .with_max_delay(retry.max_delay)
        .with_max_times(retry.max_retries)
        .build();
    loop {
        let mut builder = http
            .request(request.method.clone(), request.url.clone())
            .header(AUTHORIZATION, request.authorization.clone())
            .header(USER_AGENT, user_agent.clone())
            .timeout(request.timeout);
        if request.json {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(accept) = request.accept {
            builder = builder.header(ACCEPT, HeaderValue::from_static(accept));
        }
        if let Some(capacity) = request.max_capacity {
            builder = builder.header("X-ScaleSetMaxCapacity", capacity.to_string());
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let outcome = match builder.send().await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                match response.bytes().await {
                    Ok(body) => Ok((status, headers, body)),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        let (status, headers, body) = match outcome {
            Ok(parts) => parts,
            Err(error) => {
                // The URL may be the queue's: keep it out of logs and errors.
                let error = error.without_url();
                if transport_retryable(request.retry, &error) {
                    if let Some(delay) = backoff.next() {
                        tracing::warn!(
                            operation = request.operation,
                            error = %error,
                            ?delay,
                            "actions service call failed, retrying"
                        );
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
                return Err(if error.is_timeout() {
                    ScaleSetError::Timeout {
                        operation: request.operation,
                        after: request.timeout,
                    }
                } else {
                    ScaleSetError::Transport {
                        operation: request.operation,
                        source: error,
                    }
                });
            }
        };
        tracing::debug!(
            operation = request.operation,
            method = %request.method,
            status = status.as_u16(),
            "actions service call"
        );
        if status_retryable(request.retry, status) {
            if let Some(delay) = backoff.next() {
                let delay = retry_after(status, &headers, SystemTime::now())
                    .map(|d| d.min(retry.max_retry_after))
                    .unwrap_or(delay);
                tracing::warn!(
                    operation = request.operation,
                    status = status.as_u16(),
                    ?delay,
                    "actions service refused the call, retrying"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        let body = match body.strip_prefix(UTF8_BOM) {
            Some(rest) => body.slice(body.len() - rest.len()..),
            None => body,
        };
        return Ok(Answer {
            status,
            headers,
            body,
        });
    }
}

fn transport_retryable(mode: RetryMode, error: &reqwest::Error) -> bool {
    if error.is_builder() || error.is_redirect() {
        return false;
    }
    match mode {
        RetryMode::Idempotent | RetryMode::Bootstrap => true,
        RetryMode::Unprocessed => error.is_connect(),
    }
}

pub(crate) fn status_retryable(mode: RetryMode, status: StatusCode) -> bool {
    let code = status.as_u16();
    let server = code == 429 || (code >= 500 && code != 501) || code == 0;
    match mode {
        RetryMode::Idempotent => server,
        RetryMode::Unprocessed => code == 429,
        RetryMode::Bootstrap => server || code == 401 || code == 403,
    }
}

/// `Retry-After` (seconds or an HTTP date) on 429 and 503.
pub(crate) fn retry_after(
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if !matches!(status.as_u16(), 429 | 503) {
        return None;
    }
    crate::rate_limit::parse_retry_after(headers, now)
}
