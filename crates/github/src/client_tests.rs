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
    let m = |kind, code: u16, msg: &str| {
        map_status(
            kind,
            StatusCode::from_u16(code).expect("valid"),
            msg.to_owned(),
            vec![],
        )
    };
    assert!(matches!(
        m(EndpointKind::GetRunner, 401, "Bad credentials"),
        Error::Unauthorized { .. }
    ));
    assert!(matches!(
        m(EndpointKind::GetRunner, 403, "no"),
        Error::Forbidden { .. }
    ));
    assert!(matches!(
        m(EndpointKind::GetRunner, 404, "Not Found"),
        Error::NotFound { .. }
    ));
    assert!(matches!(
        m(EndpointKind::JitConfig, 409, "Already exists"),
        Error::Conflict { .. }
    ));
    assert!(matches!(
        m(
            EndpointKind::DeleteRunner,
            422,
            "Bad request - Runner \"x\" is still running a job"
        ),
        Error::RunnerBusy { .. }
    ));
    assert!(matches!(
        m(EndpointKind::JitConfig, 422, "Invalid input"),
        Error::Validation { .. }
    ));
    assert!(matches!(
        m(EndpointKind::GetRunner, 502, "bad gateway"),
        Error::Server { status: 502, .. }
    ));
    assert!(matches!(
        m(EndpointKind::GetRunner, 410, "gone"),
        Error::Unexpected { status: 410, .. }
    ));
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
