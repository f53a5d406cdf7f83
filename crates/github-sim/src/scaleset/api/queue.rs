//! The message queue (queue token): long poll, ack, `acquirejobs`, `acquirablejobs`.

use super::*;

/// The queue token of `Authorization: Bearer`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("Bearer").then(|| token.trim())
}

/// The `(session, set)` of the queue token, for the set of the path; `Err` is the 401.
fn queue_session(
    state: &mut State,
    headers: &HeaderMap,
    set_id: u64,
) -> Result<String, Box<Response>> {
    let Some(token) = bearer(headers) else {
        return Err(Box::new(invalid_token(
            "The message queue token is missing.",
        )));
    };
    match state.ss_check_queue_token(token) {
        Ok((session, set)) if set == set_id => Ok(session),
        Ok(_) | Err(QueueAuthError::Unknown) => Err(Box::new(invalid_token(
            "The message queue token is not valid.",
        ))),
        Err(QueueAuthError::Expired) => Err(Box::new(invalid_token(
            "The message queue token has expired.",
        ))),
    }
}

/// Ends a session's long poll when dropped (finished or abandoned by the client).
struct PollGuard {
    shared: AppState,
    session: String,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.shared.state.lock().ss_poll_ended(&self.session);
    }
}

/// The queue long poll: the oldest un-acked message above `lastMessageId` at once, else wait
/// up to the configured time for one, else 202 with no body.
pub(super) async fn get_message(req: Req, Query(query): Query<Params>) -> Handled {
    let set_id: u64 = req.id()?;
    let last: i64 = match query.get("lastMessageId") {
        None => 0,
        Some(v) => match v.parse() {
            Ok(v) => v,
            Err(_) => return Ok(bad_request("lastMessageId is not valid.")),
        },
    };
    let capacity: i64 = match req.headers.get("x-scalesetmaxcapacity") {
        None => i64::from(i32::MAX),
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(c) if c >= 0 => c,
            _ => return Ok(bad_request("X-ScaleSetMaxCapacity is not valid.")),
        },
    };
    let (session, wait) = {
        let mut state = req.shared.state.lock();
        let session = queue_session(&mut state, &req.headers, set_id)?;
        if state.ss().faults.empty_body > 0 {
            state.ss_mut().faults.empty_body -= 1;
            return Ok(StatusCode::OK.into_response());
        }
        state.ss_poll_started(&session, set_id, capacity);
        (session, state.ss().cfg.poll_wait)
    };
    let _guard = PollGuard {
        shared: req.shared.clone(),
        session: session.clone(),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut stop = req.shared.shutdown.clone();
    loop {
        let Some(notify) = req.shared.state.lock().ss_notify(set_id) else {
            return Ok(set_not_found(set_id));
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = req.shared.state.lock();
            queue_session(&mut state, &req.headers, set_id)?;
            if let Some(envelope) = state.ss_next_message(set_id, last) {
                return Ok(json_response(StatusCode::OK, &envelope));
            }
        }
        let timed_out = tokio::select! {
            _ = notified => false,
            _ = tokio::time::sleep_until(deadline) => true,
            _ = stop.wait_for(|stopped| *stopped) => true,
        };
        if timed_out {
            return Ok(StatusCode::ACCEPTED.into_response());
        }
    }
}

pub(super) async fn ack_message(req: Req) -> Handled {
    let set_id: u64 = req.id()?;
    let message_id: i64 = number(&req.path, "message_id")?;
    let mut state = req.shared.state.lock();
    queue_session(&mut state, &req.headers, set_id)?;
    state.ss_ack(set_id, message_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `acquirejobs` (GHES flow, queue token): the offered jobs won, as `{count, value}`; 404 in
/// hosted mode, as on github.com.
pub(super) async fn acquire_jobs(req: Req, bytes: Bytes) -> Handled {
    let set_id: u64 = req.id()?;
    let mut state = req.shared.state.lock();
    if state.ss().cfg.mode == crate::scaleset::AcquireMode::Hosted {
        return Ok(plain_error(StatusCode::NOT_FOUND, "Not Found"));
    }
    queue_session(&mut state, &req.headers, set_id)?;
    let ids: Vec<i64> = match serde_json::from_slice(&bytes) {
        Ok(ids) => ids,
        Err(e) => return Ok(bad_request(&format!("invalid body: {e}"))),
    };
    let won = state.ss_acquire(set_id, &ids);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "count": won.len(), "value": won }),
    ))
}

/// The legacy `acquirablejobs`: the offered jobs (GHES), 204 when none.
pub(super) async fn acquirable_jobs(req: Req) -> Handled {
    let set_id: u64 = req.id()?;
    let (state, scope) = req.admin()?;
    set_exists(&state, &scope, set_id)?;
    let offered = state.ss_offered_messages(set_id);
    if offered.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(json_response(StatusCode::OK, &list(offered)))
}
