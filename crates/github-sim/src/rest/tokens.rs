//! Registration and remove tokens, and JIT configs.

use super::*;

/// `expires_at` of registration/remove tokens, e.g. `2026-01-22T12:13:35.123+00:00`.
fn token_time(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+00:00"
    );
    t.format(&format).unwrap_or_else(|_| rfc3339(t))
}

fn issue_token(caller: &Caller, kind: TokenKind) -> Handled {
    let (mut state, scope) = caller.authorized()?;
    let (token, expires) = state.issue_token(kind, scope.clone());
    let body = json!({ "token": token, "expires_at": token_time(expires) });
    Ok(with_accepted_permissions(
        json_response(StatusCode::CREATED, &body),
        &scope,
    ))
}

pub(super) async fn registration_token(caller: Caller) -> Handled {
    issue_token(&caller, TokenKind::Registration)
}

pub(super) async fn remove_token(caller: Caller) -> Handled {
    issue_token(&caller, TokenKind::Remove)
}

pub(super) async fn generate_jitconfig(caller: Caller, headers: HeaderMap, body: Bytes) -> Handled {
    let body = parse_json(&body)?;
    let Some(name) = body.get("name").and_then(Value::as_str).map(str::to_owned) else {
        return Ok(missing_key("name"));
    };
    let Some(group_id) = body.get("runner_group_id").and_then(Value::as_u64) else {
        return Ok(missing_key("runner_group_id"));
    };
    let Some(labels) = string_list(body.get("labels")) else {
        return Ok(missing_key("labels"));
    };
    if labels.is_empty() || labels.len() > 100 {
        return Ok(validation_error(
            "Invalid input: labels must have between 1 and 100 items.",
            &[],
        ));
    }
    let work_folder = body
        .get("work_folder")
        .and_then(Value::as_str)
        .unwrap_or("_work")
        .to_owned();
    let server_url = base_url(caller.shared.public_url.as_deref(), &headers);
    let (mut state, scope) = caller.authorized()?;
    let Some(group) = state.group(&scope, group_id) else {
        return Ok(not_found());
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
            return Ok(gh_error(StatusCode::CONFLICT, &message));
        }
        Err(_) => return Ok(not_found()),
    };
    let Some(runner) = state.runner(id) else {
        return Ok(not_found());
    };
    let runner_json = state.runner_json(runner, state.clock.now());
    drop(state);
    let encoded = encode_jit_config(&JitRunner {
        server_url: &server_url,
        scope: &scope,
        id,
        name: &name,
        pool_id: group.id,
        pool_name: &group.name,
        work_folder: &work_folder,
        credential: &credential,
    });
    caller.shared.state.lock().record_jit_config(&encoded);
    let body = json!({ "runner": runner_json, "encoded_jit_config": encoded });
    Ok(with_accepted_permissions(
        json_response(StatusCode::CREATED, &body),
        &scope,
    ))
}

/// What a JIT config describes.
pub(crate) struct JitRunner<'a> {
    /// The sim's base URL (`serverUrl`): where the runner polls.
    pub server_url: &'a str,
    pub scope: &'a Scope,
    pub id: u64,
    pub name: &'a str,
    pub pool_id: u64,
    pub pool_name: &'a str,
    pub work_folder: &'a str,
    pub credential: &'a crate::secret::Secret,
}

/// An `encoded_jit_config`: base64 of `{".runner", ".credentials", ".credentials_rsaparams"}`,
/// each itself base64 JSON (`docs/sim-protocol.md` "JIT config"). Shared by the REST
/// `generate-jitconfig` and the scale sets' `generatejitconfig`.
pub(crate) fn encode_jit_config(runner: &JitRunner<'_>) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let server_url = runner.server_url;
    let runner_file = json!({
        "agentId": runner.id,
        "agentName": runner.name,
        "poolId": runner.pool_id,
        "poolName": runner.pool_name,
        "serverUrl": server_url,
        "gitHubUrl": format!("{server_url}/{}", runner.scope.path()),
        "workFolder": runner.work_folder,
        "ephemeral": true,
        "disableUpdate": true,
        "useV2Flow": false,
        "serverUrlV2": "",
    });
    let credentials = json!({
        "scheme": "OAuth",
        "data": {
            "clientId": runner.credential.expose(),
            "authorizationUrl": format!("{server_url}/_runner/oauth2/token"),
            "requireFipsCryptography": "False",
        },
    });
    let rsa_part = |n| base64::engine::general_purpose::STANDARD.encode(random_string(ALNUM, n));
    let rsa = json!({
        "d": rsa_part(256), "dp": rsa_part(128), "dq": rsa_part(128), "exponent": "AQAB",
        "inverseQ": rsa_part(128), "modulus": rsa_part(256), "p": rsa_part(128), "q": rsa_part(128),
    });
    b64(&json!({
        ".runner": b64(&runner_file),
        ".credentials": b64(&credentials),
        ".credentials_rsaparams": b64(&rsa),
    }))
}
