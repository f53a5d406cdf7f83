//! GitHub App endpoints (the app, installations, installation tokens) and `/rate_limit`.

use super::*;

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

pub(super) async fn scope_installation(
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

pub(super) async fn app(AxState(shared): AxState<AppState>) -> Response {
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

pub(super) async fn app_installations(
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

pub(super) async fn access_token(
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

pub(super) async fn rate_limit(
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
