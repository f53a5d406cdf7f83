//! JIT runners and agents.

use super::*;

#[derive(Default, Deserialize)]
#[serde(default)]
struct JitBody {
    name: Option<String>,
    #[serde(rename = "workFolder")]
    work_folder: Option<String>,
}

pub(super) async fn generate_jitconfig(req: Req, bytes: Bytes) -> Handled {
    let server_url = req.server();
    let id: u64 = req.id()?;
    let (mut state, scope) = req.admin()?;
    let body: JitBody = body(&bytes)?;
    let Some(name) = non_blank(body.name.as_deref()) else {
        return Ok(bad_request("The runner name is required."));
    };
    let Some(set) = state.ss_set(&scope, id) else {
        return Ok(set_not_found(id));
    };
    let (group_id, group_name) = (set.group_id, set.group_name.clone());
    let (runner_id, credential) = match state.ss_register_runner(id, name.clone()) {
        Ok(registered) => registered,
        Err(RegisterError::NameExists(_)) => {
            return Ok(service_error(
                StatusCode::CONFLICT,
                DISTRIBUTED_TASK,
                "AgentExistsException",
                &format!("A runner with the name {name} already exists in the pool."),
            ))
        }
        Err(_) => return Ok(set_not_found(id)),
    };
    let work_folder = body
        .work_folder
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "_work".to_owned());
    let encoded = encode_jit_config(&JitRunner {
        server_url: &server_url,
        scope: &scope,
        id: runner_id,
        name: &name,
        pool_id: group_id,
        pool_name: &group_name,
        work_folder: &work_folder,
        credential: &credential,
    });
    state.record_jit_config(&encoded);
    let runner = state
        .runner(runner_id)
        .map(|r| agent_json(&state, r))
        .unwrap_or(Value::Null);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "runner": runner, "encodedJITConfig": encoded }),
    ))
}

fn agent_json(state: &State, runner: &Runner) -> Value {
    let now = state.clock.now();
    let labels: Vec<Value> = runner
        .labels
        .iter()
        .map(|l| json!({ "id": l.id, "name": l.name, "type": "system" }))
        .collect();
    json!({
        "id": runner.id,
        "name": runner.name,
        "version": runner.version.clone().unwrap_or_default(),
        "enabled": true,
        "status": if state.runner_online(runner, now) { "online" } else { "offline" },
        "busy": runner.job.is_some(),
        "ephemeral": runner.ephemeral,
        "runnerScaleSetId": runner.scale_set.unwrap_or(0),
        "labels": labels,
    })
}

/// The runner of the path's `runner_id`, if the scope has it.
fn path_agent<'s>(state: &'s State, scope: &Scope, path: &Params) -> Option<&'s Runner> {
    path.get("runner_id")
        .and_then(|id| id.parse().ok())
        .and_then(|id| state.runner(id))
        .filter(|r| r.scope == *scope)
}

fn agent_not_found(id: &str) -> Response {
    service_error(
        StatusCode::NOT_FOUND,
        DISTRIBUTED_TASK,
        "AgentNotFoundException",
        &format!("No agent found in pool with id {id}."),
    )
}

pub(super) async fn get_agent(req: Req) -> Handled {
    let (state, scope) = req.admin()?;
    let runner = path_agent(&state, &scope, &req.path);
    Ok(match runner {
        Some(runner) => json_response(StatusCode::OK, &agent_json(&state, runner)),
        None => agent_not_found(&req.path["runner_id"]),
    })
}

pub(super) async fn agents_by_name(
    AxState(shared): AxState<AppState>,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Handled {
    let (state, scope) = admin(&shared, &headers)?;
    let name = query.get("agentName");
    let runners: Vec<Value> = state
        .scope_runners(&scope)
        .filter(|r| name.is_none_or(|n| r.name == *n))
        .map(|r| agent_json(&state, r))
        .collect();
    Ok(json_response(StatusCode::OK, &list(runners)))
}

/// RemoveRunner: 204 when removed or already absent; 400 `JobStillRunningException` while it
/// holds a job.
pub(super) async fn remove_agent(req: Req) -> Handled {
    let (mut state, scope) = req.admin()?;
    let Some(runner) = path_agent(&state, &scope, &req.path) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if runner.job.is_some() {
        let message = format!("Runner {} is still running a job.", runner.name);
        return Ok(service_error(
            StatusCode::BAD_REQUEST,
            DISTRIBUTED_TASK,
            "JobStillRunningException",
            &message,
        ));
    }
    let id = runner.id;
    state.remove_runner(id);
    state.ss_pump();
    Ok(StatusCode::NO_CONTENT.into_response())
}
