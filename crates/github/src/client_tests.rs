//! Tests of the client: retries, ETags, proxies.
use super::*;

#[test]
fn link_next() {
    let h = r#"<https://api.github.com/repositories/1/actions/runners?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/actions/runners?per_page=100&page=5>; rel="last""#;
    assert_eq!(
        next_link(h).as_deref(),
        Some("https://api.github.com/repositories/1/actions/runners?per_page=100&page=2")
    );
    let last_page = r#"<https://x/a?page=1>; rel="prev", <https://x/a?page=1>; rel="first""#;
    assert_eq!(next_link(last_page), None);
    assert_eq!(next_link("garbage"), None);
}

#[test]
fn status_mapping() {
    use EndpointKind::{DeleteRunner, GetRunner, JitConfig};
    let busy = "Bad request - Runner \"x\" is still running a job";
    /// The endpoint, the status and GitHub's message, and whether the error is the right one.
    type Case<'a> = (EndpointKind, u16, &'a str, fn(&Error) -> bool);
    let cases: [Case; 8] = [
        (GetRunner, 401, "Bad credentials", |e| {
            matches!(e, Error::Unauthorized { .. })
        }),
        (GetRunner, 403, "no", |e| {
            matches!(e, Error::Forbidden { .. })
        }),
        (GetRunner, 404, "Not Found", |e| {
            matches!(e, Error::NotFound { .. })
        }),
        (JitConfig, 409, "Already exists", |e| {
            matches!(e, Error::Conflict { .. })
        }),
        (DeleteRunner, 422, busy, |e| {
            matches!(e, Error::RunnerBusy { .. })
        }),
        (JitConfig, 422, "Invalid input", |e| {
            matches!(e, Error::Validation { .. })
        }),
        (GetRunner, 502, "bad gateway", |e| {
            matches!(e, Error::Server { status: 502, .. })
        }),
        (GetRunner, 410, "gone", |e| {
            matches!(e, Error::Unexpected { status: 410, .. })
        }),
    ];
    for (kind, code, msg, expected) in cases {
        let status = StatusCode::from_u16(code).expect("valid");
        let error = map_status(kind, status, msg.to_owned(), vec![]);
        assert!(expected(&error), "{kind:?} {code} {msg:?}: {error:?}");
    }
}

#[test]
fn proxy_credentials_never_show_in_debug() {
    let config = ProxyConfig {
        http: Some("http://user:s3cr3t@proxy:3128".into()),
        https: Some("http://tokenonly@proxy:3128".into()),
        no_proxy: Some("localhost".into()),
    };
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("tokenonly"),
        "{shown}"
    );
    assert!(
        shown.contains("proxy:3128") && shown.contains("localhost"),
        "{shown}"
    );
}
