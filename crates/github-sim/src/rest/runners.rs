//! Runner registrations: list, get and delete, and the runner groups of a scope.

use super::*;

pub(super) async fn list_runners(caller: Caller, listing: Listing) -> Handled {
    let name = listing.query.get("name");
    let (mut state, scope) = caller.authorized()?;
    let cache_key = format!("{}?{}", scope.runners_path(), listing.query_string());
    let body = match state.cached_list(&cache_key) {
        Some(body) => body,
        None => {
            let now = state.clock.now();
            let matching: Vec<_> = state
                .scope_runners(&scope)
                .filter(|r| name.is_none_or(|n| r.name == *n))
                .collect();
            let total = matching.len();
            let runners: Vec<Value> = listing
                .page_of(matching.iter())
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
    let last = total.div_ceil(listing.per_page).max(1);
    let extra: Vec<(&str, &str)> = name.map(|n| vec![("name", n.as_str())]).unwrap_or_default();
    listing.link_pages(&mut response, &extra, last);
    Ok(with_accepted_permissions(response, &scope))
}

pub(super) async fn get_runner(caller: Caller) -> Handled {
    let (state, scope) = caller.authorized()?;
    let id = caller.runner_id(&state, &scope)?;
    let runner = state.runner(id).ok_or_else(boxed_not_found)?;
    let body = state.runner_json(runner, state.clock.now());
    Ok(with_accepted_permissions(
        json_response(StatusCode::OK, &body),
        &scope,
    ))
}

pub(super) async fn delete_runner(caller: Caller) -> Handled {
    let (mut state, scope) = caller.authorized()?;
    let id = caller.runner_id(&state, &scope)?;
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
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let message = format!("Bad request - Runner \"{name}\" is still running a job");
        return Ok(validation_error(&message, &[]));
    }
    state.remove_runner(id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn runner_groups(caller: Caller, listing: Listing) -> Handled {
    let (state, scope) = caller.authorized()?;
    let api = listing.api_base();
    let prefix = match &scope {
        Scope::Enterprise(e) => format!("{api}/enterprises/{e}/actions/runner-groups"),
        other => format!("{api}/orgs/{}/actions/runner-groups", other.path()),
    };
    let groups = state.groups(&scope);
    let total = groups.len();
    let list: Vec<Value> = listing
        .page_of(groups.into_iter())
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
    Ok(json_response(
        StatusCode::OK,
        &json!({ "total_count": total, "runner_groups": list }),
    ))
}
