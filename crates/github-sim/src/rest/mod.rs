//! GitHub REST handlers: self-hosted runners at repo, org and enterprise scope, runner groups,
//! repository and organisation webhooks and their deliveries, App installations and
//! `/rate_limit`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, OriginalUri, Path, Query, State as AxState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use base64::Engine;
use parking_lot::MutexGuard;
use serde_json::{json, Value};

use crate::auth::Identity;
use crate::http::{base_url, gh_error, json_response, not_found, validation_error, Handled};
use crate::server::AppState;
use crate::state::{
    random_string, rfc3339, LabelKind, NewRunner, RegisterError, State, TokenKind, ALNUM,
};
use crate::Scope;

mod apps;
mod downloads;
mod helpers;
mod hooks;
mod labels;
mod runners;
mod tokens;

use apps::*;
pub(crate) use downloads::asset_names;
use downloads::*;
use helpers::*;
use hooks::*;
use labels::*;
use runners::*;
use tokens::*;
pub(crate) use tokens::{encode_jit_config, JitRunner};

const HOOK_PREFIXES: [&str; 2] = ["/repos/{owner}/{repo}/hooks", "/orgs/{org}/hooks"];

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
    for prefix in HOOK_PREFIXES {
        router = router
            .route(prefix, get(list_hooks))
            .route(&format!("{prefix}/{{hook_id}}"), get(get_hook))
            .route(
                &format!("{prefix}/{{hook_id}}/deliveries"),
                get(list_deliveries),
            )
            .route(
                &format!("{prefix}/{{hook_id}}/deliveries/{{delivery_id}}"),
                get(get_delivery),
            )
            .route(
                &format!("{prefix}/{{hook_id}}/deliveries/{{delivery_id}}/attempts"),
                post(redeliver),
            );
    }
    for prefix in ["/orgs/{org}", "/enterprises/{enterprise}"] {
        router = router.route(
            &format!("{prefix}/actions/runner-groups"),
            get(runner_groups),
        );
    }
    for prefix in ["/repos/{owner}/{repo}", "/orgs/{org}"] {
        router = router.route(&format!("{prefix}/installation"), get(scope_installation));
    }
    router
        .route("/app", get(app))
        .route("/app/installations", get(app_installations))
        .route(
            "/app/installations/{installation_id}/access_tokens",
            post(access_token),
        )
        .route("/rate_limit", get(rate_limit))
}
