//! Runner labels.

use super::*;

fn labels_body(labels: &[crate::Label]) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "total_count": labels.len(), "labels": labels }),
    )
}

/// Runs `f` on the runner named by the path, after authorization.
fn with_runner(caller: &Caller, f: impl FnOnce(&mut State, u64) -> Response) -> Handled {
    let (mut state, scope) = caller.authorized()?;
    let id = caller.runner_id(&state, &scope)?;
    Ok(f(&mut state, id))
}

/// Every label of the runner.
fn runner_labels(state: &State, id: u64) -> Vec<crate::Label> {
    state
        .runner(id)
        .map(|r| r.labels.clone())
        .unwrap_or_default()
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

pub(super) async fn list_labels(caller: Caller) -> Handled {
    with_runner(&caller, |state, id| labels_body(&runner_labels(state, id)))
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

pub(super) async fn add_labels(caller: Caller, body: Bytes) -> Handled {
    let labels = labels_from_body(&body, 1)?;
    with_runner(&caller, |state, id| {
        let mut custom = custom_labels(state, id);
        custom.extend(labels);
        labels_body(&state.set_custom_labels(id, custom).unwrap_or_default())
    })
}

pub(super) async fn set_labels(caller: Caller, body: Bytes) -> Handled {
    let labels = labels_from_body(&body, 0)?;
    with_runner(&caller, |state, id| {
        labels_body(&state.set_custom_labels(id, labels).unwrap_or_default())
    })
}

pub(super) async fn remove_all_labels(caller: Caller) -> Handled {
    with_runner(&caller, |state, id| {
        labels_body(&state.set_custom_labels(id, Vec::new()).unwrap_or_default())
    })
}

pub(super) async fn remove_label(caller: Caller) -> Handled {
    let wanted = caller.params.label.clone().unwrap_or_default();
    with_runner(&caller, |state, id| {
        let labels = runner_labels(state, id);
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
