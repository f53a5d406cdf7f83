//! Scale sets: list, create, get, update, delete.

use super::*;

#[derive(Default, Deserialize)]
#[serde(default)]
struct LabelBody {
    name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RunnerSettingBody {
    #[serde(rename = "disableUpdate")]
    disable_update: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct SetBody {
    name: Option<String>,
    #[serde(rename = "runnerGroupId")]
    runner_group_id: Option<u64>,
    #[serde(rename = "runnerGroupName")]
    runner_group_name: Option<String>,
    labels: Option<Vec<LabelBody>>,
    #[serde(rename = "RunnerSetting")]
    runner_setting: Option<RunnerSettingBody>,
}

impl SetBody {
    fn name(&self) -> Option<String> {
        non_blank(self.name.as_deref())
    }

    /// The labels' names, without duplicates (ignoring case); `None` when none are given.
    fn labels(&self) -> Option<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for label in self.labels.iter().flatten() {
            let Some(name) = label.name.as_deref().map(str::trim) else {
                continue;
            };
            if !name.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name.to_owned());
            }
        }
        (!names.is_empty()).then_some(names)
    }

    /// The group it names (by id, then by name), the scope's default one when neither.
    fn group(&self, state: &State, scope: &Scope) -> Result<Option<GroupConfig>, Box<Response>> {
        let by_name = self.runner_group_name.as_deref().filter(|n| !n.is_empty());
        let group = match (self.runner_group_id.filter(|id| *id != 0), by_name) {
            (Some(id), _) => state.group(scope, id),
            (None, Some(name)) => state
                .groups(scope)
                .into_iter()
                .find(|g| g.name.eq_ignore_ascii_case(name)),
            (None, None) => return Ok(None),
        };
        group.map(Some).ok_or_else(|| {
            Box::new(service_error(
                StatusCode::NOT_FOUND,
                DISTRIBUTED_TASK,
                "RunnerGroupNotFoundException",
                "The runner group does not exist.",
            ))
        })
    }
}

pub(super) fn set_json(state: &State, id: u64, tenant_base: &str) -> Value {
    let Some(set) = state.ss().sets.get(&id) else {
        return Value::Null;
    };
    let labels: Vec<Value> = set
        .labels
        .iter()
        .map(|name| json!({ "type": "System", "name": name }))
        .collect();
    json!({
        "id": set.id,
        "name": set.name,
        "runnerGroupId": set.group_id,
        "runnerGroupName": set.group_name,
        "labels": labels,
        "RunnerSetting": { "disableUpdate": set.disable_update, "ephemeral": true, "isElastic": true },
        "createdOn": rfc3339(set.created_on),
        "runnerJitConfigUrl": format!("{tenant_base}_apis/runtime/runnerscalesets/{id}/generatejitconfig"),
        "statistics": state.ss_statistics(set.id),
    })
}

pub(super) async fn list_sets(req: Req, Query(query): Query<Params>) -> Handled {
    let base = req.tenant_base();
    let (state, scope) = req.admin()?;
    let group: Option<u64> = query
        .get("runnerGroupId")
        .and_then(|g| g.parse().ok())
        .filter(|g| *g != 0);
    let name = query.get("name").filter(|n| !n.is_empty());
    let sets: Vec<Value> = state
        .ss()
        .sets
        .values()
        .filter(|s| s.scope == scope)
        .filter(|s| group.is_none_or(|g| s.group_id == g))
        .filter(|s| name.is_none_or(|n| s.name.eq_ignore_ascii_case(n)))
        .map(|s| set_json(&state, s.id, &base))
        .collect();
    Ok(json_response(StatusCode::OK, &list(sets)))
}

pub(super) async fn create_set(req: Req, bytes: Bytes) -> Handled {
    let base = req.tenant_base();
    let (mut state, scope) = req.admin()?;
    let body: SetBody = body(&bytes)?;
    let Some(name) = body.name() else {
        return Ok(bad_request("The scale set name is required."));
    };
    let group = match body.group(&state, &scope)? {
        Some(group) => group,
        None => match state.group_by_name(&scope, None) {
            Some(group) => group,
            None => return Ok(bad_request("The scope has no default runner group.")),
        },
    };
    let labels = body.labels().unwrap_or_else(|| vec![name.clone()]);
    let disable_update = body
        .runner_setting
        .as_ref()
        .and_then(|s| s.disable_update)
        .unwrap_or(false);
    Ok(
        match state.ss_create_set(&scope, name.clone(), &group, labels, disable_update) {
            Ok(id) => json_response(StatusCode::OK, &set_json(&state, id, &base)),
            Err(_) => service_error(
                StatusCode::CONFLICT,
                RUNTIME,
                "RunnerScaleSetExistsException",
                &format!(
                    "A runner scale set named {name} already exists in the runner group {}.",
                    group.name
                ),
            ),
        },
    )
}

pub(super) async fn get_set(req: Req) -> Handled {
    let base = req.tenant_base();
    let id: u64 = req.id()?;
    let (state, scope) = req.admin()?;
    set_exists(&state, &scope, id)?;
    Ok(json_response(StatusCode::OK, &set_json(&state, id, &base)))
}

pub(super) async fn update_set(req: Req, bytes: Bytes) -> Handled {
    let base = req.tenant_base();
    let id: u64 = req.id()?;
    let (mut state, scope) = req.admin()?;
    let body: SetBody = body(&bytes)?;
    let Some(current) = state.ss_set(&scope, id) else {
        return Ok(set_not_found(id));
    };
    let group = body.group(&state, &scope)?;
    let name = body.name().unwrap_or_else(|| current.name.clone());
    let group_id = group.as_ref().map_or(current.group_id, |g| g.id);
    let clash = state.ss().sets.values().any(|s| {
        s.id != id
            && s.scope == scope
            && s.group_id == group_id
            && s.name.eq_ignore_ascii_case(&name)
    });
    if clash {
        return Ok(service_error(
            StatusCode::CONFLICT,
            RUNTIME,
            "RunnerScaleSetExistsException",
            &format!("A runner scale set named {name} already exists in that runner group."),
        ));
    }
    let labels = body.labels();
    let disable_update = body.runner_setting.as_ref().and_then(|s| s.disable_update);
    if let Some(set) = state.ss_mut().sets.get_mut(&id) {
        set.name = name;
        if let Some(group) = group {
            set.group_id = group.id;
            set.group_name = group.name;
        }
        if let Some(labels) = labels {
            set.labels = labels;
        }
        if let Some(disable_update) = disable_update {
            set.disable_update = disable_update;
        }
    }
    state.ss_pump();
    Ok(json_response(StatusCode::OK, &set_json(&state, id, &base)))
}

pub(super) async fn delete_set(req: Req) -> Handled {
    let id: u64 = req.id()?;
    let (mut state, scope) = req.admin()?;
    Ok(match state.ss_delete_set(&scope, id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(DeleteSetError::NoSet) => set_not_found(id),
        Err(DeleteSetError::Busy(runner)) => service_error(
            StatusCode::BAD_REQUEST,
            DISTRIBUTED_TASK,
            "JobStillRunningException",
            &format!("The runner scale set {id} has a runner running a job ({runner})."),
        ),
    })
}
