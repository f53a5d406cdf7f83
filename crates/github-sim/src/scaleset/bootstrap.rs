//! `POST [/api/v3]/actions/runner-registration`: a registration token (`RemoteAuth`) and a config
//! URL buy the Actions service's base URL and an admin JWT (reference §1, step 3).

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{invalid_token, service_error, DISTRIBUTED_TASK, SERVICES, TENANT_PATH};
use crate::http::{base_url, json_response};
use crate::server::AppState;
use crate::state::{random_string, State, TokenKind, ALNUM};
use crate::Scope;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/actions/runner-registration", post(runner_registration))
        .route(
            "/api/v3/actions/runner-registration",
            post(runner_registration),
        )
}

/// The scope of a config URL, as the client parses it: the path trimmed of `/` and split; one
/// segment is an organisation, `enterprises/<slug>` (any case) an enterprise, two other
/// segments a repository; anything else is no scope.
pub(super) fn config_scope(url: &str) -> Option<Scope> {
    let parsed = url::Url::parse(url).ok()?;
    let parts: Vec<&str> = parsed.path().trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [org] if !org.is_empty() => Some(Scope::org(*org)),
        [first, slug] if first.eq_ignore_ascii_case("enterprises") && !slug.is_empty() => {
            Some(Scope::enterprise(*slug))
        }
        [owner, repo] if !owner.is_empty() && !repo.is_empty() => Some(Scope::repo(*owner, *repo)),
        _ => None,
    }
}

#[derive(Deserialize)]
struct RegistrationBody {
    url: String,
    runner_event: Option<String>,
}

fn remote_auth(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("RemoteAuth")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn runner_registration(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = remote_auth(&headers) else {
        return invalid_token("Authorization: RemoteAuth <registration token> is required.");
    };
    let body: RegistrationBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => {
            return service_error(
                StatusCode::BAD_REQUEST,
                DISTRIBUTED_TASK,
                "ArgumentException",
                &format!("invalid body: {error}"),
            )
        }
    };
    if body
        .runner_event
        .as_deref()
        .is_some_and(|e| e != "register")
    {
        return service_error(
            StatusCode::BAD_REQUEST,
            DISTRIBUTED_TASK,
            "ArgumentException",
            "runner_event must be \"register\".",
        );
    }
    let server = base_url(shared.public_url.as_deref(), &headers);
    let mut state = shared.state.lock();
    let Some(token_scope) = state.check_token(TokenKind::Registration, token) else {
        return invalid_token("The registration token is not valid or has expired.");
    };
    let Some(scope) = config_scope(&body.url).and_then(|s| state.resolve_scope(&s)) else {
        return service_error(
            StatusCode::NOT_FOUND,
            DISTRIBUTED_TASK,
            "RunnerRegistrationNotFoundException",
            &format!("No repository, organization or enterprise at {}.", body.url),
        );
    };
    if scope != token_scope {
        return service_error(
            StatusCode::FORBIDDEN,
            SERVICES,
            "AccessDeniedException",
            "The registration token was issued for another scope.",
        );
    }
    match issue_admin_token(&mut state, &scope) {
        Some(jwt) => json_response(
            StatusCode::OK,
            &json!({
                "url": format!("{server}{TENANT_PATH}"),
                "token": jwt,
                "token_schema": "OAuthAccessToken",
            }),
        ),
        None => service_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            DISTRIBUTED_TASK,
            "InternalServerException",
            "could not sign the admin token",
        ),
    }
}

/// An HS256 admin JWT for `scope`, with `exp` after the configured lifetime.
pub(super) fn issue_admin_token(state: &mut State, scope: &Scope) -> Option<String> {
    let now = state.clock.epoch_secs(state.clock.now());
    let ttl = state.ss().cfg.admin_token_ttl.as_secs().max(1);
    let jti = random_string(ALNUM, 24);
    let claims = json!({
        "iss": "github-sim",
        "aud": "vso:actions",
        "sub": scope.path(),
        "scp": "Actions.Admin",
        "iat": now,
        "nbf": now,
        "exp": now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        "jti": jti,
    });
    let key = EncodingKey::from_secret(&state.ss().jwt_secret);
    let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).ok()?;
    state.ss_mut().admin_issued.push(jti);
    state.record_scaleset_token(true, &jwt);
    Some(jwt)
}

/// The scope of a valid admin JWT (`Authorization: Bearer`); `Err` is the 401.
pub(super) fn admin_scope(state: &State, headers: &HeaderMap) -> Result<Scope, Box<Response>> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| Box::new(invalid_token("The admin token is missing.")))?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let key = DecodingKey::from_secret(&state.ss().jwt_secret);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|_| Box::new(invalid_token("The admin token is not valid.")))?
        .claims;
    let now = state.clock.epoch_secs(state.clock.now());
    let expired = claims["exp"].as_i64().is_none_or(|exp| exp <= now);
    let revoked = claims["jti"]
        .as_str()
        .is_none_or(|jti| state.ss().admin_revoked.contains(jti));
    if expired || revoked {
        return Err(Box::new(invalid_token("The admin token has expired.")));
    }
    claims["sub"]
        .as_str()
        .and_then(Scope::parse)
        .ok_or_else(|| Box::new(invalid_token("The admin token is not valid.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_urls_parse_as_the_client_parses_them() {
        let cases = [
            ("http://h/octo-org", Some(Scope::org("octo-org"))),
            ("http://h/octo-org/", Some(Scope::org("octo-org"))),
            ("http://h/octo/app", Some(Scope::repo("octo", "app"))),
            ("http://h/Enterprises/acme", Some(Scope::enterprise("acme"))),
            (
                "http://h/enterprises/acme/",
                Some(Scope::enterprise("acme")),
            ),
            ("http://h/", None),
            ("http://h/a/b/c", None),
            ("not a url", None),
        ];
        for (url, want) in cases {
            assert_eq!(config_scope(url), want, "{url}");
        }
    }
}
