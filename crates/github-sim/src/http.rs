//! Response helpers: GitHub-shaped JSON bodies and errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub(crate) const DOCS: &str = "https://docs.github.com/rest";
pub(crate) const RUNNER_DOCS: &str = "https://docs.github.com/rest/actions/self-hosted-runners";

/// A GitHub `basic-error` body: `{message, documentation_url, status}`.
pub(crate) fn gh_error(status: StatusCode, message: &str) -> Response {
    gh_error_doc(status, message, DOCS)
}

pub(crate) fn gh_error_doc(status: StatusCode, message: &str, docs: &str) -> Response {
    let body = json!({
        "message": message,
        "documentation_url": docs,
        "status": status.as_u16().to_string(),
    });
    json_response(status, &body)
}

/// A `validation-error-simple` body (422).
pub(crate) fn validation_error(message: &str, errors: &[&str]) -> Response {
    let body = json!({
        "message": message,
        "errors": errors,
        "documentation_url": RUNNER_DOCS,
        "status": "422",
    });
    json_response(StatusCode::UNPROCESSABLE_ENTITY, &body)
}

/// What a handler answers: `Err` is a refusal from a check (auth, a path parameter, the body)
/// that ends the handler early, answered as it is.
pub(crate) type Handled = Result<Response, Reject>;

/// A refusal as the answer; `?` turns the checks' `Box<Response>` into one.
pub(crate) struct Reject(pub(crate) Box<Response>);

impl From<Box<Response>> for Reject {
    fn from(response: Box<Response>) -> Self {
        Self(response)
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        *self.0
    }
}

pub(crate) fn not_found() -> Response {
    gh_error(StatusCode::NOT_FOUND, "Not Found")
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// A plain JSON error for the runner-side and admin protocols: `{message}`.
pub(crate) fn plain_error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "message": message }))
}

/// A test-hook body (admin API, scale-set hooks): JSON (an empty body reads as `{}`), refused
/// with 400 `invalid body: …`.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
        serde_json::from_slice(body).map(JsonBody).map_err(|error| {
            plain_error(StatusCode::BAD_REQUEST, &format!("invalid body: {error}"))
        })
    }
}

/// `http://HOST` from the `Host` header, or the configured public URL.
pub(crate) fn base_url(public_url: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(url) = public_url {
        return url.to_owned();
    }
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}
