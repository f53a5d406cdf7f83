//! GitHub REST handlers: self-hosted runners at repo, org and enterprise scope, runner groups,
//! App installations and `/rate_limit`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, OriginalUri, Path, Query, State as AxState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use base64::Engine;
use serde_json::{json, Value};

use crate::auth::Identity;
use crate::http::{base_url, gh_error, json_response, not_found, validation_error};
use crate::server::AppState;
use crate::state::{
    random_string, rfc3339, LabelKind, NewRunner, RegisterError, State, TokenKind, ALNUM,
};
use crate::Scope;

const RUNNER_PREFIXES: [&str; 3] = [
    "/repos/{owner}/{repo}/actions/runners",
    "/orgs/{org}/actions/runners",
    "/enterprises/{enterprise}/actions/runners",
];

pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for prefix in RUNNER_PREFIXES {
        router = router
            .route(prefix, get(list_runners))
            .route(
                &format!("{prefix}/{{runner_id}}"),
                get(get_runner).delete(delete_runner),
            )
            .route(
                &format!("{prefix}/registration-token"),
                post(registration_token),
            )
            .route(&format!("{prefix}/remove-token"), post(remove_token))
            .route(&format!("{prefix}/downloads"), get(downloads))
            .route(
                &format!("{prefix}/generate-jitconfig"),
                post(generate_jitconfig),
            )
            .route(
                &format!("{prefix}/{{runner_id}}/labels"),
                get(list_labels)
                    .post(add_labels)
                    .put(set_labels)
                    .delete(remove_all_labels),
            )
            .route(
                &format!("{prefix}/{{runner_id}}/labels/{{label}}"),
                delete(remove_label),
            );
    }
    router
        .route("/orgs/{org}/actions/runner-groups", get(runner_groups))
        .route(
            "/enterprises/{enterprise}/actions/runner-groups",
            get(runner_groups),
        )
        .route(
            "/repos/{owner}/{repo}/installation",
            get(scope_installation),
        )
        .route("/orgs/{org}/installation", get(scope_installation))
        .route("/app", get(app))
        .route("/app/installations", get(app_installations))
        .route(
            "/app/installations/{installation_id}/access_tokens",
            post(access_token),
        )
        .route("/rate_limit", get(rate_limit))
}

/// The scope and optional ids from the path.
pub(crate) struct ScopeParams {
    scope: Scope,
    runner_id: Option<String>,
    label: Option<String>,
    installation_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ScopeParams {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(mut map) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found())?;
        let scope = if let (Some(owner), Some(repo)) = (map.get("owner"), map.get("repo")) {
            Scope::repo(owner.clone(), repo.clone())
        } else if let Some(org) = map.get("org") {
            Scope::org(org.clone())
        } else if let Some(enterprise) = map.get("enterprise") {
            Scope::enterprise(enterprise.clone())
        } else {
            Scope::org(String::new())
        };
        Ok(Self {
            scope,
            runner_id: map.remove("runner_id"),
            label: map.remove("label"),
            installation_id: map.remove("installation_id"),
        })
    }
}

fn forbidden_integration() -> Response {
    gh_error(
        StatusCode::FORBIDDEN,
        "Resource not accessible by integration",
    )
}

/// Resolves the scope and checks that `identity` may manage its runners.
fn authorize(state: &State, identity: &Identity, scope: &Scope) -> Result<Scope, Box<Response>> {
    let resolved = state.resolve_scope(scope).ok_or_else(boxed_not_found)?;
    match identity {
        Identity::Pat => Ok(resolved),
        Identity::Installation(id) => {
            let owner = match &resolved {
                Scope::Repo { owner, .. } => owner,
                Scope::Org(org) => org,
                Scope::Enterprise(_) => return Err(Box::new(forbidden_integration())),
            };
            if state.installation_for(owner) == Some(*id) {
                Ok(resolved)
            } else {
                Err(boxed_not_found())
            }
        }
        Identity::App | Identity::Anonymous => Err(Box::new(forbidden_integration())),
    }
}

/// Looks up a runner of `scope` by the id in the path.
fn scope_runner_id(
    state: &State,
    scope: &Scope,
    runner_id: Option<&str>,
) -> Result<u64, Box<Response>> {
    let id: u64 = runner_id
        .and_then(|id| id.parse().ok())
        .ok_or_else(boxed_not_found)?;
    match state.runner(id) {
        Some(runner) if runner.scope == *scope => Ok(id),
        _ => Err(boxed_not_found()),
    }
}

/// Handlers answer errors early with a ready response; boxed to keep `Result`s small.
fn boxed_not_found() -> Box<Response> {
    Box::new(not_found())
}

fn parse_json(body: &Bytes) -> Result<Value, Box<Response>> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|_| Box::new(gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON")))
}

fn with_accepted_permissions(mut response: Response, scope: &Scope) -> Response {
    let value = match scope {
        Scope::Repo { .. } => "administration=write",
        Scope::Org(_) => "organization_self_hosted_runners=write",
        Scope::Enterprise(_) => "manage_runners:enterprise",
    };
    response.headers_mut().insert(
        "x-accepted-github-permissions",
        HeaderValue::from_static(value),
    );
    response
}

/// `page` and `per_page` (default 30, at most 100).
fn paging(query: &HashMap<String, String>) -> (usize, usize) {
    let per_page = query
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(30, |v| v.clamp(1, 100));
    let page = query
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    (page, per_page)
}

/// The `Link` header for a page (absent when everything fits one page).
fn link_header(
    url: &str,
    extra: &[(&str, &str)],
    page: usize,
    per_page: usize,
    last: usize,
) -> Option<String> {
    if last <= 1 && page <= 1 {
        return None;
    }
    let make = |p: usize, rel: &str| {
        let mut query: Vec<String> = extra
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                )
            })
            .collect();
        query.push(format!("per_page={per_page}"));
        query.push(format!("page={p}"));
        format!("<{url}?{}>; rel=\"{rel}\"", query.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(make((page - 1).min(last), "prev"));
    }
    if page < last {
        links.push(make(page + 1, "next"));
        links.push(make(last, "last"));
    }
    if page > 1 {
        links.push(make(1, "first"));
    }
    (!links.is_empty()).then(|| links.join(", "))
}

async fn list_runners(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
    Query(query): Query<HashMap<String, String>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let (page, per_page) = paging(&query);
    let name = query.get("name");
    let mut state = shared.state.lock();
    let scope = match authorize(&state, &identity, &params.scope) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    let cache_key = format!(
        "{}?{}",
        scope.runners_path(),
        uri.query().unwrap_or_default()
    );
    let body = match state.cached_list(&cache_key) {
        Some(body) => body,
        None => {
            let now = state.clock.now();
            let matching: Vec<_> = state
                .scope_runners(&scope)
                .filter(|r| name.is_none_or(|n| r.name == *n))
                .collect();
            let total = matching.len();
            let runners: Vec<Value> = matching
                .iter()
                .skip((page - 1).saturating_mul(per_page))
                .take(per_page)
                .map(|r| state.runner_json(r, now))
                .collect();
            let body = json!({ "total_count": total, "runners": runners });
            state.cache_list(cache_key, body.clone());
            body
        }
    };
    drop(state);
    let total = body["total_count"].as_u64().unwrap_or_default() as usize;
    let mut response = json_response(StatusCode::OK, &body);
    let last = total.div_ceil(per_page).max(1);
    let url = format!("{}{}", base_url(None, &headers), uri.path());
    let extra: Vec<(&str, &str)> = name.map(|n| vec![("name", n.as_str())]).unwrap_or_default();
    if let Some(link) = link_header(&url, &extra, page, per_page, last) {
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert("link", value);
        }
    }
    with_accepted_permissions(response, &scope)
}

async fn get_runner(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
) -> Response {
    let state = shared.state.lock();
    let result = authorize(&state, &identity, &params.scope).and_then(|scope| {
        let id = scope_runner_id(&state, &scope, params.runner_id.as_deref())?;
        let runner = state.runner(id).ok_or_else(boxed_not_found)?;
        let body = state.runner_json(runner, state.clock.now());
        Ok(with_accepted_permissions(
            json_response(StatusCode::OK, &body),
            &scope,
        ))
    });
    result.unwrap_or_else(|response| *response)
}

async fn delete_runner(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
) -> Response {
    let mut state = shared.state.lock();
    let scope = match authorize(&state, &identity, &params.scope) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    let id = match scope_runner_id(&state, &scope, params.runner_id.as_deref()) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let name = state.runner(id).map(|r| r.name.clone()).unwrap_or_default();
    if let Some(hook) = state.assign_on_delete.clone() {
        if hook.as_ref().is_none_or(|n| *n == name) {
            state.assign_on_delete = None;
            state.force_assign(id);
        }
    }
    if state.runner(id).is_some_and(|r| r.job.is_some()) {
        // The busy-lie fault: GitHub says idle and lets the runner go, killing its job.
        if state.delete_busy_runner(id) {
            return StatusCode::NO_CONTENT.into_response();
        }
        let message = format!("Bad request - Runner \"{name}\" is still running a job");
        return validation_error(&message, &[]);
    }
    state.remove_runner(id);
    StatusCode::NO_CONTENT.into_response()
}

/// `expires_at` of registration/remove tokens, e.g. `2026-01-22T12:13:35.123+00:00`.
fn token_time(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+00:00"
    );
    t.format(&format).unwrap_or_else(|_| rfc3339(t))
}

fn issue_token(shared: &AppState, identity: &Identity, scope: &Scope, kind: TokenKind) -> Response {
    let mut state = shared.state.lock();
    match authorize(&state, identity, scope) {
        Ok(scope) => {
            let (token, expires) = state.issue_token(kind, scope.clone());
            let body = json!({ "token": token, "expires_at": token_time(expires) });
            with_accepted_permissions(json_response(StatusCode::CREATED, &body), &scope)
        }
        Err(response) => *response,
    }
}

async fn registration_token(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
) -> Response {
    issue_token(&shared, &identity, &params.scope, TokenKind::Registration)
}

async fn remove_token(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
) -> Response {
    issue_token(&shared, &identity, &params.scope, TokenKind::Remove)
}

/// Asset file names of the runner tarball for a version.
pub(crate) fn asset_names(version: &str) -> Vec<(&'static str, &'static str, String)> {
    [
        ("linux", "x64"),
        ("linux", "arm64"),
        ("osx", "x64"),
        ("osx", "arm64"),
    ]
    .into_iter()
    .map(|(os, arch)| {
        (
            os,
            arch,
            format!("actions-runner-{os}-{arch}-{version}.tar.gz"),
        )
    })
    .collect()
}

async fn downloads(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
    headers: HeaderMap,
) -> Response {
    let (scope, version) = {
        let state = shared.state.lock();
        match authorize(&state, &identity, &params.scope) {
            Ok(scope) => (scope, state.config.runner_version.clone()),
            Err(response) => return *response,
        }
    };
    let base = base_url(shared.public_url.as_deref(), &headers);
    let body: Vec<Value> = match &shared.tarball {
        None => Vec::new(),
        Some(tarball) => asset_names(&version)
            .into_iter()
            .map(|(os, arch, filename)| {
                json!({
                    "os": os,
                    "architecture": arch,
                    "download_url": format!("{base}/actions/runner/releases/download/v{version}/{filename}"),
                    "filename": filename,
                    "temp_download_token": random_string(ALNUM, 40),
                    "sha256_checksum": tarball.sha256,
                })
            })
            .collect(),
    };
    with_accepted_permissions(json_response(StatusCode::OK, &Value::Array(body)), &scope)
}

fn missing_key(key: &str) -> Response {
    validation_error(
        &format!("Invalid input: object is missing required key: {key}."),
        &[],
    )
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

async fn generate_jitconfig(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match parse_json(&body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let Some(name) = body.get("name").and_then(Value::as_str).map(str::to_owned) else {
        return missing_key("name");
    };
    let Some(group_id) = body.get("runner_group_id").and_then(Value::as_u64) else {
        return missing_key("runner_group_id");
    };
    let Some(labels) = string_list(body.get("labels")) else {
        return missing_key("labels");
    };
    if labels.is_empty() || labels.len() > 100 {
        return validation_error(
            "Invalid input: labels must have between 1 and 100 items.",
            &[],
        );
    }
    let work_folder = body
        .get("work_folder")
        .and_then(Value::as_str)
        .unwrap_or("_work")
        .to_owned();
    let server_url = base_url(shared.public_url.as_deref(), &headers);
    let mut state = shared.state.lock();
    let scope = match authorize(&state, &identity, &params.scope) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    let Some(group) = state.group(&scope, group_id) else {
        return not_found();
    };
    let labels = state.make_labels(&labels, true);
    let new = NewRunner {
        scope: scope.clone(),
        name: name.clone(),
        group_id,
        labels,
        ephemeral: true,
        jit: true,
    };
    let (id, credential) = match state.register(new, false) {
        Ok(registered) => registered,
        Err(RegisterError::NameExists(_)) => {
            let message = format!("Already exists - A runner with the name {name} already exists.");
            return gh_error(StatusCode::CONFLICT, &message);
        }
        Err(_) => return not_found(),
    };
    let Some(runner) = state.runner(id) else {
        return not_found();
    };
    let runner_json = state.runner_json(runner, state.clock.now());
    drop(state);
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let runner_file = json!({
        "agentId": id,
        "agentName": name,
        "poolId": group.id,
        "poolName": group.name,
        "serverUrl": server_url,
        "gitHubUrl": format!("{server_url}/{}", scope.path()),
        "workFolder": work_folder,
        "ephemeral": true,
        "disableUpdate": true,
        "useV2Flow": false,
        "serverUrlV2": "",
    });
    let credentials = json!({
        "scheme": "OAuth",
        "data": {
            "clientId": credential.expose(),
            "authorizationUrl": format!("{server_url}/_runner/oauth2/token"),
            "requireFipsCryptography": "False",
        },
    });
    let rsa_part = |n| base64::engine::general_purpose::STANDARD.encode(random_string(ALNUM, n));
    let rsa = json!({
        "d": rsa_part(256), "dp": rsa_part(128), "dq": rsa_part(128), "exponent": "AQAB",
        "inverseQ": rsa_part(128), "modulus": rsa_part(256), "p": rsa_part(128), "q": rsa_part(128),
    });
    let encoded = b64(&json!({
        ".runner": b64(&runner_file),
        ".credentials": b64(&credentials),
        ".credentials_rsaparams": b64(&rsa),
    }));
    shared.state.lock().record_jit_config(&encoded);
    let body = json!({ "runner": runner_json, "encoded_jit_config": encoded });
    with_accepted_permissions(json_response(StatusCode::CREATED, &body), &scope)
}

fn labels_body(labels: &[crate::Label]) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "total_count": labels.len(), "labels": labels }),
    )
}

/// Runs `f` on the runner named by the path, after authorization.
fn with_runner(
    shared: &AppState,
    identity: &Identity,
    params: &ScopeParams,
    f: impl FnOnce(&mut State, u64) -> Response,
) -> Response {
    let mut state = shared.state.lock();
    let result = authorize(&state, identity, &params.scope)
        .and_then(|scope| scope_runner_id(&state, &scope, params.runner_id.as_deref()));
    match result {
        Ok(id) => f(&mut state, id),
        Err(response) => *response,
    }
}

fn custom_labels(state: &State, id: u64) -> Vec<String> {
    state
        .runner(id)
        .map(|r| {
            r.labels
                .iter()
                .filter(|l| l.kind == LabelKind::Custom)
                .map(|l| l.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

async fn list_labels(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
) -> Response {
    with_runner(&shared, &identity, &params, |state, id| {
        labels_body(
            &state
                .runner(id)
                .map(|r| r.labels.clone())
                .unwrap_or_default(),
        )
    })
}

fn labels_from_body(body: &Bytes, min: usize) -> Result<Vec<String>, Box<Response>> {
    let value = parse_json(body)?;
    let labels = string_list(value.get("labels")).ok_or_else(|| Box::new(missing_key("labels")))?;
    if labels.len() < min || labels.len() > 100 {
        return Err(Box::new(validation_error(
            &format!("Invalid input: labels must have between {min} and 100 items."),
            &[],
        )));
    }
    Ok(labels)
}

async fn add_labels(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
    body: Bytes,
) -> Response {
    let labels = match labels_from_body(&body, 1) {
        Ok(labels) => labels,
        Err(response) => return *response,
    };
    with_runner(&shared, &identity, &params, |state, id| {
        let mut custom = custom_labels(state, id);
        custom.extend(labels);
        labels_body(&state.set_custom_labels(id, custom).unwrap_or_default())
    })
}

async fn set_labels(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
    body: Bytes,
) -> Response {
    let labels = match labels_from_body(&body, 0) {
        Ok(labels) => labels,
        Err(response) => return *response,
    };
    with_runner(&shared, &identity, &params, |state, id| {
        labels_body(&state.set_custom_labels(id, labels).unwrap_or_default())
    })
}

async fn remove_all_labels(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
) -> Response {
    with_runner(&shared, &identity, &params, |state, id| {
        labels_body(&state.set_custom_labels(id, Vec::new()).unwrap_or_default())
    })
}

async fn remove_label(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
) -> Response {
    let wanted = params.label.clone().unwrap_or_default();
    with_runner(&shared, &identity, &params, |state, id| {
        let labels = state
            .runner(id)
            .map(|r| r.labels.clone())
            .unwrap_or_default();
        match labels.iter().find(|l| l.name.eq_ignore_ascii_case(&wanted)) {
            None => not_found(),
            Some(label) if label.kind == LabelKind::ReadOnly => validation_error(
                &format!("Cannot remove read-only label {}.", label.name),
                &[],
            ),
            Some(_) => {
                let custom: Vec<String> = custom_labels(state, id)
                    .into_iter()
                    .filter(|l| !l.eq_ignore_ascii_case(&wanted))
                    .collect();
                labels_body(&state.set_custom_labels(id, custom).unwrap_or_default())
            }
        }
    })
}

/// `http://HOST[/api/v3]`: the API base the client used.
fn api_base(headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let base = base_url(None, headers);
    if uri.path().starts_with("/api/v3/") {
        format!("{base}/api/v3")
    } else {
        base
    }
}

async fn runner_groups(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
    params: ScopeParams,
    Query(query): Query<HashMap<String, String>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let (page, per_page) = paging(&query);
    let state = shared.state.lock();
    let scope = match authorize(&state, &identity, &params.scope) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    let api = api_base(&headers, &uri);
    let prefix = match &scope {
        Scope::Enterprise(e) => format!("{api}/enterprises/{e}/actions/runner-groups"),
        other => format!("{api}/orgs/{}/actions/runner-groups", other.path()),
    };
    let groups = state.groups(&scope);
    let total = groups.len();
    let list: Vec<Value> = groups
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|g| {
            let mut group = json!({
                "id": g.id,
                "name": g.name,
                "visibility": if g.selected_repositories.is_some() { "selected" } else { "all" },
                "default": g.default,
                "runners_url": format!("{prefix}/{}/runners", g.id),
                "hosted_runners_url": format!("{prefix}/{}/hosted-runners", g.id),
                "network_configuration_id": null,
                "inherited": false,
                "allows_public_repositories": false,
                "restricted_to_workflows": false,
                "selected_workflows": [],
                "workflow_restrictions_read_only": false,
            });
            if g.selected_repositories.is_some() {
                group["selected_repositories_url"] =
                    json!(format!("{prefix}/{}/repositories", g.id));
            }
            group
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "total_count": total, "runner_groups": list }),
    )
}

fn installation_json(state: &State, id: u64, account: &str, api: &str) -> Value {
    let is_org = state.config.orgs.iter().any(|o| o.name == account);
    let app = state.config.app.as_ref();
    json!({
        "id": id,
        "account": { "login": account, "id": 1000 + id, "type": if is_org { "Organization" } else { "User" } },
        "app_id": app.map(|a| a.app_id),
        "app_slug": "runner-manager-sim",
        "client_id": app.map(|a| a.client_id.clone()),
        "target_id": 1000 + id,
        "target_type": if is_org { "Organization" } else { "User" },
        "repository_selection": "all",
        "access_tokens_url": format!("{api}/app/installations/{id}/access_tokens"),
        "repositories_url": format!("{api}/installation/repositories"),
        "html_url": format!("https://github.com/settings/installations/{id}"),
        "permissions": {
            "administration": "write",
            "organization_self_hosted_runners": "write",
            "metadata": "read",
        },
        "events": ["workflow_job"],
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "single_file_name": null,
        "suspended_at": null,
        "suspended_by": null,
    })
}

async fn scope_installation(
    AxState(shared): AxState<AppState>,
    params: ScopeParams,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let state = shared.state.lock();
    let Some(scope) = state.resolve_scope(&params.scope) else {
        return not_found();
    };
    let account = match &scope {
        Scope::Repo { owner, .. } => owner.clone(),
        other => other.path(),
    };
    match state.installation_for(&account) {
        Some(id) => {
            let api = api_base(&headers, &uri);
            json_response(
                StatusCode::OK,
                &installation_json(&state, id, &account, &api),
            )
        }
        None => not_found(),
    }
}

async fn app(AxState(shared): AxState<AppState>) -> Response {
    let state = shared.state.lock();
    let Some(app) = state.config.app.as_ref() else {
        return not_found();
    };
    let body = json!({
        "id": app.app_id,
        "slug": "runner-manager-sim",
        "client_id": app.client_id,
        "name": "runner-manager (sim)",
        "owner": { "login": "octo-org", "type": "Organization" },
        "permissions": { "administration": "write", "organization_self_hosted_runners": "write" },
        "events": ["workflow_job"],
        "installations_count": app.installations.len(),
    });
    json_response(StatusCode::OK, &body)
}

async fn app_installations(
    AxState(shared): AxState<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let state = shared.state.lock();
    let api = api_base(&headers, &uri);
    let list: Vec<Value> = state
        .config
        .app
        .iter()
        .flat_map(|a| a.installations.iter())
        .map(|i| installation_json(&state, i.id, &i.account, &api))
        .collect();
    json_response(StatusCode::OK, &Value::Array(list))
}

async fn access_token(
    AxState(shared): AxState<AppState>,
    params: ScopeParams,
    body: Bytes,
) -> Response {
    let body = match parse_json(&body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let repos = body
        .get("repositories")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let repo_ids = body
        .get("repository_ids")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if repos > 500 || repo_ids > 500 {
        return validation_error(
            "Validation Failed",
            &["Too many repositories (at most 500)"],
        );
    }
    let mut state = shared.state.lock();
    let Some(app) = state.config.app.clone() else {
        return not_found();
    };
    let id: Option<u64> = params
        .installation_id
        .as_deref()
        .and_then(|id| id.parse().ok());
    let Some(id) = id.filter(|id| app.installations.iter().any(|i| i.id == *id)) else {
        return not_found();
    };
    let (token, expires) = state.issue_installation_token(id, app.token_lifetime);
    let permissions = body.get("permissions").cloned().unwrap_or_else(|| {
        json!({ "administration": "write", "organization_self_hosted_runners": "write", "metadata": "read" })
    });
    let body = json!({
        "token": token,
        "expires_at": rfc3339(expires),
        "permissions": permissions,
        "repository_selection": if repos + repo_ids > 0 { "selected" } else { "all" },
    });
    json_response(StatusCode::CREATED, &body)
}

async fn rate_limit(
    AxState(shared): AxState<AppState>,
    Extension(identity): Extension<Identity>,
) -> Response {
    let (core, reset_anon) = {
        let mut state = shared.state.lock();
        let info = state.rate_info(&identity.bucket());
        (info, state.clock.epoch_secs(state.clock.now()) + 3600)
    };
    let core = if identity == Identity::Anonymous {
        json!({ "limit": 60, "used": 0, "remaining": 60, "reset": reset_anon })
    } else {
        json!({ "limit": core.limit, "used": core.used, "remaining": core.remaining, "reset": core.reset })
    };
    let other =
        |limit: u32| json!({ "limit": limit, "used": 0, "remaining": limit, "reset": reset_anon });
    let body = json!({
        "resources": {
            "core": core,
            "search": other(30),
            "graphql": other(5000),
            "integration_manifest": other(5000),
            "code_scanning_upload": other(1000),
            "actions_runner_registration": other(10000),
            "scim": other(15000),
            "dependency_snapshots": other(100),
            "code_search": other(10),
        },
        "rate": core,
    });
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_table() {
        let url = "http://h/orgs/o/actions/runners";
        let check = |page, last, expected: Option<&str>| {
            assert_eq!(
                link_header(url, &[], page, 100, last).as_deref(),
                expected,
                "page {page} of {last}"
            );
        };
        check(1, 1, None);
        check(
            1,
            3,
            Some(&format!(
                "<{url}?per_page=100&page=2>; rel=\"next\", <{url}?per_page=100&page=3>; rel=\"last\""
            )),
        );
        check(
            3,
            3,
            Some(&format!(
                "<{url}?per_page=100&page=2>; rel=\"prev\", <{url}?per_page=100&page=1>; rel=\"first\""
            )),
        );
        check(
            5,
            3,
            Some(&format!(
                "<{url}?per_page=100&page=3>; rel=\"prev\", <{url}?per_page=100&page=1>; rel=\"first\""
            )),
        );
        let named = link_header(url, &[("name", "a b&c")], 1, 1, 2).expect("link");
        assert!(
            named.starts_with(&format!("<{url}?name=a+b%26c&per_page=1&page=2>")),
            "{named}"
        );
    }

    #[test]
    fn paging_bounds() {
        let query = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(paging(&query(&[])), (1, 30));
        assert_eq!(
            paging(&query(&[("per_page", "500"), ("page", "3")])),
            (3, 100)
        );
        assert_eq!(paging(&query(&[("per_page", "0"), ("page", "0")])), (1, 1));
        assert_eq!(
            paging(&query(&[("per_page", "x"), ("page", "-1")])),
            (1, 30)
        );
    }
}
