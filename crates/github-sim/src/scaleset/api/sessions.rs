//! Message sessions: create, refresh, delete.

use super::*;
use sets::set_json;

#[derive(Default, Deserialize)]
#[serde(default)]
struct SessionBody {
    #[serde(rename = "ownerName")]
    owner_name: Option<String>,
}

/// The session answer: the whole client session (create and refresh alike).
fn session_json(
    state: &mut State,
    set_id: u64,
    session_id: &str,
    token: &str,
    base: &str,
) -> Value {
    let owner = state
        .ss()
        .sessions
        .get(session_id)
        .map(|s| s.owner.clone())
        .unwrap_or_default();
    let queue_url = if state.ss().faults.empty_queue_url > 0 {
        state.ss_mut().faults.empty_queue_url -= 1;
        String::new()
    } else {
        format!("{base}_apis/runtime/runnerscalesets/{set_id}/messages?sessionId={session_id}")
    };
    json!({
        "sessionId": session_id,
        "ownerName": owner,
        "runnerScaleSet": set_json(state, set_id, base),
        "messageQueueUrl": queue_url,
        "messageQueueAccessToken": token,
        "statistics": state.ss_statistics(set_id),
    })
}

pub(super) async fn create_session(req: Req, bytes: Bytes) -> Handled {
    let base = req.tenant_base();
    let id: u64 = req.id()?;
    let (mut state, scope) = req.admin()?;
    let body: SessionBody = body(&bytes)?;
    let owner = body
        .owner_name
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    Ok(match state.ss_create_session(&scope, id, owner) {
        Ok((session_id, token)) => {
            let answer = session_json(&mut state, id, &session_id, &token, &base);
            json_response(StatusCode::OK, &answer)
        }
        Err(SessionError::NoSet) => set_not_found(id),
        Err(SessionError::Conflict(name)) => service_error(
            StatusCode::CONFLICT,
            RUNTIME,
            "RunnerScaleSetSessionConflictException",
            &format!("The actions runner scaleset {name} already has an active session."),
        ),
    })
}

pub(super) async fn refresh_session(req: Req) -> Handled {
    let base = req.tenant_base();
    let id: u64 = req.id()?;
    let session_id = req.path["session_id"].clone();
    let (mut state, scope) = req.admin()?;
    set_exists(&state, &scope, id)?;
    Ok(match state.ss_refresh_session(id, &session_id) {
        Some(token) => {
            let answer = session_json(&mut state, id, &session_id, &token, &base);
            json_response(StatusCode::OK, &answer)
        }
        None => service_error(
            StatusCode::NOT_FOUND,
            RUNTIME,
            "RunnerAdminException",
            &format!("Failed to refresh the session: session ID {session_id} that doesn't exist in redis."),
        ),
    })
}

pub(super) async fn delete_session(req: Req) -> Handled {
    let id: u64 = req.id()?;
    let session_id = req.path["session_id"].clone();
    let (mut state, scope) = req.admin()?;
    set_exists(&state, &scope, id)?;
    let known = state
        .ss()
        .sessions
        .get(&session_id)
        .is_some_and(|s| s.set_id == id);
    if known && state.ss_drop_session(&session_id) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(service_error(
        StatusCode::BAD_REQUEST,
        RUNTIME,
        "RunnerScaleSetSessionExpiredException",
        &format!("The session identifier {session_id} is not valid."),
    ))
}
