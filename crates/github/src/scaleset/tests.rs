//! Unit tests of the scale-set client: config URLs, request encodings, error mapping, message
//! decoding, retries' rules, user agent, redaction.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use url::Url;

use super::client::plumbing::{admin_url, parse_message, user_agent_json};
use super::config::{ConfigUrl, UserAgentInfo};
use super::error::{ScaleSetError, ServiceError};
use super::http::{retry_after, status_retryable, Answer, RetryMode};
use super::types::*;
use super::wire::{error_fields, jwt_exp, time_of, JitOut, ScaleSetOut, SessionOut, ZERO_UUID};
use crate::scope::Scope;
use crate::secret::Secret;

fn url(s: &str) -> Url {
    Url::parse(s).expect("url")
}

#[test]
fn config_urls_give_scope_and_rest_base() {
    // (config url, force_ghes, scope path, hosted, rest base)
    let table: &[(&str, bool, &str, bool, &str)] = &[
        (
            "https://github.com/octo-org",
            false,
            "octo-org",
            true,
            "https://api.github.com/",
        ),
        (
            "https://github.com/octo-org/",
            false,
            "octo-org",
            true,
            "https://api.github.com/",
        ),
        (
            "https://github.com/octo/app",
            false,
            "octo/app",
            true,
            "https://api.github.com/",
        ),
        (
            "https://github.com/enterprises/acme",
            false,
            "enterprises/acme",
            true,
            "https://api.github.com/",
        ),
        (
            "https://github.com/Enterprises/acme",
            false,
            "enterprises/acme",
            true,
            "https://api.github.com/",
        ),
        (
            "https://www.github.com/octo-org",
            false,
            "octo-org",
            true,
            "https://api.github.com/",
        ),
        (
            "https://GitHub.com/octo-org",
            false,
            "octo-org",
            true,
            "https://api.github.com/",
        ),
        (
            "http://github.localhost/octo-org",
            false,
            "octo-org",
            true,
            "http://api.github.localhost/",
        ),
        (
            "https://tenant.ghe.com/octo-org",
            false,
            "octo-org",
            true,
            "https://api.tenant.ghe.com/",
        ),
        (
            "https://ghes.example.com/octo-org",
            false,
            "octo-org",
            false,
            "https://ghes.example.com/api/v3",
        ),
        (
            "https://ghes.example.com:8443/octo/app",
            false,
            "octo/app",
            false,
            "https://ghes.example.com:8443/api/v3",
        ),
        (
            "http://127.0.0.1:8080/my-org",
            false,
            "my-org",
            false,
            "http://127.0.0.1:8080/api/v3",
        ),
        (
            "https://github.com/octo-org",
            true,
            "octo-org",
            false,
            "https://github.com/api/v3",
        ),
    ];
    for (input, force, scope, hosted, rest) in table {
        let parsed =
            ConfigUrl::parse(&url(input), *force).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(parsed.scope, Scope::parse(scope).expect("scope"), "{input}");
        assert_eq!(parsed.hosted, *hosted, "{input}");
        assert_eq!(parsed.rest_url.as_str(), *rest, "{input}");
        assert_eq!(
            parsed.url.as_str(),
            url(input).as_str(),
            "{input}: sent as given"
        );
    }
}

#[test]
fn bad_config_urls_are_config_errors() {
    for input in [
        "https://github.com/",
        "https://github.com/a/b/c",
        "https://github.com/a//b",
        "ftp://github.com/octo",
        "https://github.com/octo_org",
    ] {
        let err = ConfigUrl::parse(&url(input), false).expect_err(input);
        assert!(
            matches!(err, ScaleSetError::Config { .. }),
            "{input}: {err:?}"
        );
        assert!(err.is_permanent());
    }
}

#[test]
fn create_body_is_what_go_sends() {
    let new = NewScaleSet::new("lxd-amd64");
    let body = serde_json::to_string(&ScaleSetOut::create(&new)).expect("json");
    assert_eq!(
        body,
        r#"{"name":"lxd-amd64","runnerGroupId":1,"labels":[{"type":"System","name":"lxd-amd64"}],"RunnerSetting":{"disableUpdate":true},"createdOn":"0001-01-01T00:00:00Z"}"#
    );
    let new = NewScaleSet {
        name: "gpu".into(),
        runner_group_id: 3,
        labels: vec!["gpu".into(), "cuda".into()],
        disable_update: false,
    };
    let body = serde_json::to_string(&ScaleSetOut::create(&new)).expect("json");
    assert_eq!(
        body,
        r#"{"name":"gpu","runnerGroupId":3,"labels":[{"type":"System","name":"gpu"},{"type":"System","name":"cuda"}],"RunnerSetting":{},"createdOn":"0001-01-01T00:00:00Z"}"#
    );
}

#[test]
fn patch_body_sends_only_what_changes() {
    let table: &[(ScaleSetPatch, &str)] = &[
        (
            ScaleSetPatch::default(),
            r#"{"RunnerSetting":{},"createdOn":"0001-01-01T00:00:00Z"}"#,
        ),
        (
            ScaleSetPatch {
                runner_group_id: Some(4),
                ..Default::default()
            },
            r#"{"runnerGroupId":4,"RunnerSetting":{},"createdOn":"0001-01-01T00:00:00Z"}"#,
        ),
        (
            ScaleSetPatch {
                name: Some("renamed".into()),
                labels: Some(vec!["x".into()]),
                disable_update: Some(true),
                ..Default::default()
            },
            r#"{"name":"renamed","labels":[{"type":"System","name":"x"}],"RunnerSetting":{"disableUpdate":true},"createdOn":"0001-01-01T00:00:00Z"}"#,
        ),
    ];
    for (patch, want) in table {
        assert_eq!(
            &serde_json::to_string(&ScaleSetOut::patch(patch)).expect("json"),
            want
        );
    }
}

#[test]
fn session_and_jit_bodies() {
    let body = serde_json::to_string(&SessionOut {
        session_id: ZERO_UUID,
        owner_name: "host-1",
    })
    .expect("json");
    assert_eq!(
        body,
        r#"{"sessionId":"00000000-0000-0000-0000-000000000000","ownerName":"host-1"}"#
    );
    let body = serde_json::to_string(&JitOut {
        name: "rm-1-abc",
        work_folder: "",
    })
    .expect("json");
    assert_eq!(body, r#"{"name":"rm-1-abc","workFolder":""}"#);
}

#[test]
fn admin_urls_sort_the_query_and_add_the_api_version() {
    let u = admin_url(
        "http://sim/tenant/1",
        "_apis/runtime/runnerscalesets",
        &[("runnerGroupId", "1"), ("name", "a b&c")],
    )
    .expect("url");
    assert_eq!(
        u.as_str(),
        "http://sim/tenant/1/_apis/runtime/runnerscalesets?api-version=6.0-preview&name=a+b%26c&runnerGroupId=1"
    );
    let u = admin_url(
        "http://sim/t",
        "_apis/runtime/runnergroups/",
        &[("groupName", "gpu")],
    )
    .expect("url");
    assert_eq!(
        u.as_str(),
        "http://sim/t/_apis/runtime/runnergroups/?api-version=6.0-preview&groupName=gpu"
    );
    let u = admin_url("http://sim/t", "x", &[("api-version", "7.0")]).expect("url");
    assert_eq!(
        u.as_str(),
        "http://sim/t/x?api-version=7.0",
        "a path's own version wins"
    );
}

fn service(status: u16, type_name: &str) -> ServiceError {
    ServiceError {
        status,
        type_name: type_name.into(),
        message: "m".into(),
        activity_id: Some("act-1".into()),
        request_id: None,
    }
}

#[test]
fn errors_map_by_type_name_substring_whatever_the_status() {
    let q =
        |name: &str| format!("GitHub.Actions.Runtime.WebApi.{name}, GitHub.Actions.Runtime.WebApi");
    let cases: Vec<(u16, String, &str, bool)> = vec![
        (
            409,
            q("RunnerScaleSetSessionConflictException"),
            "SessionConflict",
            false,
        ),
        (
            400,
            q("RunnerScaleSetSessionExpiredException"),
            "SessionExpired",
            false,
        ),
        (
            404,
            q("RunnerScaleSetNotFoundException"),
            "ScaleSetNotFound",
            true,
        ),
        (409, q("AgentExistsException"), "RunnerExists", true),
        (400, q("AgentExistsException"), "RunnerExists", true),
        (404, q("AgentNotFoundException"), "RunnerNotFound", true),
        (400, q("JobStillRunningException"), "JobStillRunning", false),
        (409, q("JobStillRunningException"), "JobStillRunning", false),
        (401, q("InvalidTokenException"), "Unauthorized", true),
        (401, String::new(), "Unauthorized", true),
        (404, q("RunnerAdminException"), "Status", true),
        (400, "Whatever".into(), "Status", true),
        (429, String::new(), "Status", false),
        (500, String::new(), "Status", false),
        (503, q("ServiceUnavailableException"), "Status", false),
    ];
    for (status, type_name, want, permanent) in cases {
        let err = ScaleSetError::from_service("op", service(status, &type_name));
        let got = format!("{err:?}");
        assert!(got.starts_with(want), "{status} {type_name}: {got}");
        assert_eq!(err.is_permanent(), permanent, "{status} {type_name}");
    }
}

fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    Answer {
        status: StatusCode::from_u16(status).expect("status"),
        headers: map,
        body: bytes::Bytes::copy_from_slice(body),
    }
}

#[test]
fn error_bodies_json_plain_and_ids() {
    let a = answer(
        409,
        &[("ActivityId", "a-1"), ("X-GitHub-Request-Id", "r-2")],
        br#"{"$id":"1","innerException":null,"message":"The actions runner scaleset x already has an active session.","typeName":"GitHub.Actions.Runtime.WebApi.RunnerScaleSetSessionConflictException, GitHub.Actions.Runtime.WebApi","typeKey":"X","errorCode":0}"#,
    );
    let e = a.service_error();
    assert_eq!(e.status, 409);
    assert!(e.type_name.contains("SessionConflict"));
    assert!(e.message.contains("already has an active session"));
    assert_eq!(e.activity_id.as_deref(), Some("a-1"));
    assert_eq!(e.request_id.as_deref(), Some("r-2"));
    let shown = e.to_string();
    assert!(
        shown.contains("a-1") && shown.contains("r-2") && shown.contains("409"),
        "{shown}"
    );
    assert!(matches!(
        a.into_error("create session"),
        ScaleSetError::SessionConflict { .. }
    ));

    let plain = answer(502, &[], b"upstream connect error\n").service_error();
    assert_eq!(plain.type_name, "");
    assert_eq!(plain.message, "upstream connect error");
    let empty = answer(500, &[], b"").service_error();
    assert_eq!(empty.message, "Internal Server Error");
    // Go matches keys ignoring case.
    assert_eq!(
        error_fields(br#"{"TypeName":"T","Message":"M"}"#),
        Some(("T".to_owned(), "M".to_owned()))
    );
}

fn envelope(message_type: &str, body: &str) -> String {
    serde_json::json!({
        "messageId": 100000002,
        "messageType": message_type,
        "statistics": {"totalAvailableJobs": 1, "totalAcquiredJobs": 0, "totalAssignedJobs": 2,
                        "totalRunningJobs": 1, "totalRegisteredRunners": 2, "totalBusyRunners": 1,
                        "totalIdleRunners": 1, "futureCounter": 9},
        "body": body,
        "futureField": true,
    })
    .to_string()
}

#[test]
fn messages_decode_the_body_string() {
    let jobs = serde_json::json!([
        {"messageType":"JobAvailable","runnerRequestId":10234,"jobId":"j0","requestLabels":["a"],"acquireJobUrl":"x"},
        {"messageType":"JobAssigned","repositoryName":"r","ownerName":"o","workflowRunId":30225287326i64,
         "jobDisplayName":"probe-fast","eventName":"workflow_dispatch",
         "jobWorkflowRef":"o/r/.github/workflows/p.yml@refs/heads/main","requestLabels":["gag-probe-scaleset"],
         "scaleSetAssignTime":"2026-07-26T23:29:36Z","jobId":"bd59f43d-2e1a-567a-b5a4-c147b94d0766","runnerRequestId":0},
        {"messageType":"JobSomethingNew","jobId":"j9"},
        {"messageType":"JobStarted","jobId":"j1","runnerId":7,"runnerName":"rm-1-aa","runnerAssignTime":"2026-07-26T23:30:00Z"},
        {"messageType":"JobCompleted","jobId":"j1","runnerId":7,"runnerName":"rm-1-aa","result":"succeeded","finishTime":"2026-07-26T23:31:00Z"},
        {"messageType":"JobCompleted","jobId":"j2","result":"canceled","runnerAssignTime":"0001-01-01T00:00:00Z"}
    ])
    .to_string();
    let raw = envelope("RunnerScaleSetJobMessages", &jobs);
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(raw.as_bytes());
    // The BOM is stripped by the transport; the decoder sees the rest.
    let message = parse_message(raw.as_bytes()).expect("message");
    assert_eq!(message.id, 100000002);
    assert_eq!(message.statistics.total_assigned_jobs, 2);
    assert_eq!(message.statistics.total_idle_runners, 1);
    assert_eq!(message.jobs.len(), 5, "the unknown type is skipped");
    let JobMessage::Available(available) = &message.jobs[0] else {
        panic!("{:?}", message.jobs[0])
    };
    assert_eq!(available.runner_request_id, 10234);
    let JobMessage::Assigned(assigned) = &message.jobs[1] else {
        panic!("{:?}", message.jobs[1])
    };
    assert_eq!(assigned.job_id, "bd59f43d-2e1a-567a-b5a4-c147b94d0766");
    assert_eq!(assigned.workflow_run_id, 30225287326);
    assert_eq!(assigned.request_labels, vec!["gag-probe-scaleset"]);
    assert!(assigned.scale_set_assign_time.is_some() && assigned.runner_assign_time.is_none());
    assert_eq!(
        message.jobs[2],
        JobMessage::Started(JobStarted {
            job: JobInfo {
                job_id: "j1".into(),
                runner_assign_time: time_of(Some("2026-07-26T23:30:00Z")),
                ..Default::default()
            },
            runner_id: 7,
            runner_name: "rm-1-aa".into(),
        })
    );
    let JobMessage::Completed(done) = &message.jobs[3] else {
        panic!("{:?}", message.jobs[3])
    };
    assert_eq!(
        (done.result.clone(), done.runner_id),
        (JobResult::Succeeded, Some(7))
    );
    let JobMessage::Completed(canceled) = &message.jobs[4] else {
        panic!("{:?}", message.jobs[4])
    };
    assert_eq!(canceled.result, JobResult::Canceled);
    assert_eq!(
        (canceled.runner_id, canceled.runner_name.as_deref()),
        (None, None)
    );
    assert_eq!(
        canceled.job.runner_assign_time, None,
        "Go's zero time is absent"
    );
}

#[test]
fn message_envelopes_that_break_the_protocol() {
    let empty = parse_message(envelope("RunnerScaleSetJobMessages", "").as_bytes()).expect("ok");
    assert!(
        empty.jobs.is_empty(),
        "an empty body string is no job message"
    );
    let err = parse_message(envelope("RunnerScaleSetSomethingElse", "").as_bytes())
        .expect_err("other type");
    assert!(
        matches!(err, ScaleSetError::InvalidResponse { .. }),
        "{err:?}"
    );
    let err =
        parse_message(br#"{"messageId":1,"messageType":"RunnerScaleSetJobMessages","body":""}"#)
            .expect_err("no statistics");
    assert!(
        matches!(err, ScaleSetError::InvalidResponse { .. }),
        "{err:?}"
    );
    let err = parse_message(b"").expect_err("empty 200");
    assert!(
        matches!(err, ScaleSetError::Decode { .. }) && !err.is_permanent(),
        "{err:?}"
    );
    let err = parse_message(envelope("RunnerScaleSetJobMessages", "[{").as_bytes())
        .expect_err("bad body");
    assert!(matches!(err, ScaleSetError::Decode { .. }), "{err:?}");
    let err = parse_message(
        br#"{"messageId":1,"messageType":"RunnerScaleSetJobMessages","statistics":{},"body":[{"messageType":"JobAssigned"}]}"#,
    )
    .expect_err("body must be a string");
    assert!(matches!(err, ScaleSetError::Decode { .. }), "{err:?}");
}

#[test]
fn jwt_exp_is_read_without_verification() {
    use base64::Engine as _;
    let enc = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let header = enc(serde_json::json!({"alg":"HS256","typ":"JWT"}));
    let token = |payload: serde_json::Value| format!("{header}.{}.sig", enc(payload));
    assert_eq!(
        jwt_exp(&token(serde_json::json!({"exp": 1_900_000_000}))),
        Some(1_900_000_000)
    );
    assert_eq!(
        jwt_exp(&token(serde_json::json!({"exp": 1.9e9}))),
        Some(1_900_000_000)
    );
    assert_eq!(jwt_exp(&token(serde_json::json!({"nbf": 1}))), None);
    assert_eq!(jwt_exp("not-a-jwt"), None);
    assert_eq!(jwt_exp("a.!!!.c"), None);
}

#[test]
fn user_agent_is_compact_json_in_go_order() {
    let info = UserAgentInfo {
        system: "runner-manager".into(),
        version: "1.2.3".into(),
        commit_sha: "abc".into(),
        subsystem: "listener".into(),
    };
    let ua = user_agent_json(&info, 7);
    let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&ua)
        .expect("json")
        .keys()
        .cloned()
        .collect();
    assert!(ua.starts_with(r#"{"system":"runner-manager","version":"1.2.3","commit_sha":"abc","scale_set_id":7,"subsystem":"listener","build_version":""#), "{ua}");
    assert!(ua.ends_with(r#","kind":"scaleset"}"#), "{ua}");
    assert_eq!(keys.len(), 8, "{ua}");
}

#[test]
fn retry_rules_per_mode() {
    let s = |c: u16| StatusCode::from_u16(c).expect("status");
    for (code, idempotent, unprocessed, bootstrap) in [
        (429, true, true, true),
        (500, true, false, true),
        (501, false, false, false),
        (502, true, false, true),
        (503, true, false, true),
        (400, false, false, false),
        (401, false, false, true),
        (403, false, false, true),
        (404, false, false, false),
        (409, false, false, false),
    ] {
        assert_eq!(
            status_retryable(RetryMode::Idempotent, s(code)),
            idempotent,
            "{code}"
        );
        assert_eq!(
            status_retryable(RetryMode::Unprocessed, s(code)),
            unprocessed,
            "{code}"
        );
        assert_eq!(
            status_retryable(RetryMode::Bootstrap, s(code)),
            bootstrap,
            "{code}"
        );
    }
}

#[test]
fn retry_after_in_seconds_or_a_date_on_429_and_503_only() {
    let now = SystemTime::now();
    let h = |v: &str| {
        let mut map = HeaderMap::new();
        map.insert("retry-after", HeaderValue::from_str(v).expect("value"));
        map
    };
    let s = |c: u16| StatusCode::from_u16(c).expect("status");
    assert_eq!(
        retry_after(s(429), &h("3"), now),
        Some(Duration::from_secs(3))
    );
    assert_eq!(retry_after(s(503), &h("0"), now), Some(Duration::ZERO));
    assert_eq!(retry_after(s(500), &h("3"), now), None);
    let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
    let wait = retry_after(s(429), &h(&later), now).expect("date");
    assert!(
        wait <= Duration::from_secs(120) && wait >= Duration::from_secs(118),
        "{wait:?}"
    );
    let past = httpdate::fmt_http_date(now - Duration::from_secs(120));
    assert_eq!(retry_after(s(429), &h(&past), now), Some(Duration::ZERO));
    assert_eq!(retry_after(s(429), &h("soon"), now), None);
}

#[test]
fn secrets_never_show_in_debug() {
    let session = Session {
        id: "s-1".into(),
        owner_name: "host".into(),
        scale_set: ScaleSet {
            id: 1,
            name: "n".into(),
            runner_group_id: 1,
            runner_group_name: "Default".into(),
            labels: vec![],
            disable_update: true,
            created_on: None,
            statistics: None,
        },
        statistics: Statistics::default(),
        queue_url: url("http://sim/queue"),
        queue_token: Secret::new("queue-token-SECRET"),
    };
    let jit = ScaleSetJit {
        runner: ScaleSetRunner {
            id: 1,
            name: "r".into(),
            scale_set_id: 1,
        },
        encoded: Secret::new("jit-SECRET"),
    };
    let shown = format!("{session:?} {jit:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(shown.contains("s-1"), "{shown}");
}
