//! Repository and organisation webhooks and their deliveries: list hooks, get one, list
//! deliveries (newest first, cursor paging), get a delivery with its request and response, and
//! redeliver one (`POST …/attempts`, 202). The model is in `state/webhooks.rs`.

use super::*;
use crate::state::{HookDelivery, HookInfo};

/// Path ids of the hook endpoints.
fn path_id(map: &HashMap<String, String>, key: &str) -> Result<u64, Box<Response>> {
    map.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(boxed_not_found)
}

/// The hook `hook_id` of the scope in the path, after the usual scope authorization.
fn find_hook(
    caller: &Caller,
    state: &State,
    map: &HashMap<String, String>,
) -> Result<HookInfo, Box<Response>> {
    let scope = caller.scope(state)?;
    let hook_id = path_id(map, "hook_id")?;
    state
        .hooks_of(&scope)
        .into_iter()
        .find(|h| h.id == hook_id)
        .ok_or_else(boxed_not_found)
}

fn with_hook_permissions(mut response: Response, scope: &Scope, write: bool) -> Response {
    let value = match (scope, write) {
        (Scope::Org(_), false) => "organization_hooks=read",
        (Scope::Org(_), true) => "organization_hooks=write",
        (_, false) => "repository_hooks=read",
        (_, true) => "repository_hooks=write",
    };
    response.headers_mut().insert(
        "x-accepted-github-permissions",
        HeaderValue::from_static(value),
    );
    response
}

/// `http://HOST[/api/v3]/repos/o/r/hooks` or `…/orgs/o/hooks`.
fn hooks_base(api: &str, scope: &Scope) -> String {
    match scope {
        Scope::Repo { owner, repo } => format!("{api}/repos/{owner}/{repo}/hooks"),
        other => format!("{api}/orgs/{}/hooks", other.path()),
    }
}

fn hook_json(state: &State, hook: &HookInfo, api: &str) -> Value {
    let url = format!("{}/{}", hooks_base(api, &hook.scope), hook.id);
    let created = rfc3339(state.clock.started());
    let target = state.webhook.as_ref().map(|t| t.url.clone());
    let last_response = match state.last_hook_delivery(hook.id) {
        None => json!({"code": null, "status": "unused", "message": null}),
        Some(d) => json!({
            "code": d.status_code,
            "status": if (200..300).contains(&d.status_code) { "active" } else { "failed" },
            "message": d.status,
        }),
    };
    let mut body = json!({
        "type": if matches!(hook.scope, Scope::Org(_)) { "Organization" } else { "Repository" },
        "id": hook.id,
        "name": "web",
        "active": true,
        "events": ["workflow_job"],
        "config": {
            "content_type": "json",
            "insecure_ssl": "0",
            "secret": "********",
            "url": target,
        },
        "updated_at": created,
        "created_at": created,
        "url": url,
        "ping_url": format!("{url}/pings"),
        "deliveries_url": format!("{url}/deliveries"),
        "last_response": last_response,
    });
    if !matches!(hook.scope, Scope::Org(_)) {
        body["test_url"] = json!(format!("{url}/test"));
    }
    body
}

/// GitHub's `hook-delivery-item`.
fn delivery_item(d: &HookDelivery) -> Value {
    json!({
        "id": d.id,
        "guid": d.guid,
        "delivered_at": rfc3339(d.delivered_at),
        "redelivery": d.redelivery,
        "duration": d.duration,
        "status": d.status,
        "status_code": d.status_code,
        "event": d.event,
        "action": d.action,
        "installation_id": d.installation_id,
        "repository_id": d.repository_id,
        "throttled_at": null,
    })
}

/// GitHub's `hook-delivery`: the item plus `url`, `request` and `response`.
fn delivery_json(d: &HookDelivery) -> Value {
    let mut body = delivery_item(d);
    let headers: serde_json::Map<String, Value> = d
        .request_headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    body["url"] = json!(d.url);
    body["request"] = json!({ "headers": headers, "payload": d.payload });
    body["response"] = json!({ "headers": d.response_headers, "payload": d.response_body });
    body
}

/// The opaque cursor of the page after the delivery `id`.
fn encode_cursor(id: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{id}"))
}

fn decode_cursor(cursor: &str) -> Option<u64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("v1:")?
        .parse()
        .ok()
}

pub(super) async fn list_hooks(caller: Caller, listing: Listing) -> Handled {
    let (state, scope) = caller.authorized()?;
    let api = listing.api_base();
    let hooks = state.hooks_of(&scope);
    let last = hooks.len().div_ceil(listing.per_page).max(1);
    let list: Vec<Value> = listing
        .page_of(hooks.iter())
        .map(|h| hook_json(&state, h, &api))
        .collect();
    drop(state);
    let mut response = json_response(StatusCode::OK, &Value::Array(list));
    listing.link_pages(&mut response, &[], last);
    Ok(with_hook_permissions(response, &scope, false))
}

pub(super) async fn get_hook(
    caller: Caller,
    Path(map): Path<HashMap<String, String>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Handled {
    let state = caller.shared.state.lock();
    let hook = find_hook(&caller, &state, &map)?;
    let body = hook_json(&state, &hook, &api_base(&headers, &uri));
    Ok(with_hook_permissions(
        json_response(StatusCode::OK, &body),
        &hook.scope,
        false,
    ))
}

pub(super) async fn list_deliveries(
    caller: Caller,
    Path(map): Path<HashMap<String, String>>,
    listing: Listing,
) -> Handled {
    let (query, per_page) = (&listing.query, listing.per_page);
    let before = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(cursor) => match decode_cursor(cursor) {
            Some(id) => Some(id),
            None => return Ok(gh_error(StatusCode::BAD_REQUEST, "Invalid cursor")),
        },
    };
    let redelivery = match query.get("redelivery").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Ok(validation_error("Invalid value for redelivery", &[])),
    };
    let state = caller.shared.state.lock();
    let hook = find_hook(&caller, &state, &map)?;
    let mut page: Vec<&HookDelivery> = state
        .hook_deliveries(hook.id, before, redelivery)
        .take(per_page + 1)
        .collect();
    let more = page.len() > per_page;
    page.truncate(per_page);
    let items: Vec<Value> = page.iter().map(|d| delivery_item(d)).collect();
    let next = page.last().filter(|_| more).map(|d| encode_cursor(d.id));
    drop(state);
    let mut response = json_response(StatusCode::OK, &Value::Array(items));
    if let Some(cursor) = next {
        let url = listing.url();
        let mut extra = format!("per_page={per_page}");
        if let Some(r) = redelivery {
            extra = format!("{extra}&redelivery={r}");
        }
        let link = format!("<{url}?{extra}&cursor={cursor}>; rel=\"next\"");
        Listing::set_link(&mut response, &link);
    }
    Ok(with_hook_permissions(response, &hook.scope, false))
}

pub(super) async fn get_delivery(
    caller: Caller,
    Path(map): Path<HashMap<String, String>>,
) -> Handled {
    let state = caller.shared.state.lock();
    let hook = find_hook(&caller, &state, &map)?;
    let id = path_id(&map, "delivery_id")?;
    let delivery = state
        .hook_delivery(hook.id, id)
        .ok_or_else(boxed_not_found)?;
    Ok(with_hook_permissions(
        json_response(StatusCode::OK, &delivery_json(delivery)),
        &hook.scope,
        false,
    ))
}

pub(super) async fn redeliver(caller: Caller, Path(map): Path<HashMap<String, String>>) -> Handled {
    let mut state = caller.shared.state.lock();
    let hook = find_hook(&caller, &state, &map)?;
    let queued = path_id(&map, "delivery_id")
        .ok()
        .is_some_and(|id| state.redeliver(hook.id, id));
    if !queued {
        return Ok(not_found());
    }
    Ok(with_hook_permissions(
        json_response(StatusCode::ACCEPTED, &json!({})),
        &hook.scope,
        true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for id in [0, 1, 42, u64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        }
        assert_eq!(decode_cursor("42"), None);
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(
            decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v2:1")),
            None
        );
    }
}
