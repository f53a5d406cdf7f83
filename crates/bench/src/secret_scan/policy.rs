//! The policy service double.

use super::*;

/// A policy service on the bridge: `/one-time-token` (Bearer service token) issues `ott-…`
/// tokens (recorded), `/{event}/check-run` allows a known one after 2 s (so the hook's request
/// is alive while the "job running" snapshots are taken).
pub(super) async fn policy_service(
    service_token: String,
) -> anyhow::Result<(String, Arc<parking_lot::Mutex<Vec<String>>>)> {
    use axum::http::{HeaderMap, StatusCode};
    let issued = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let app = axum::Router::new()
        .route(
            "/one-time-token",
            axum::routing::get({
                let issued = issued.clone();
                let expected = format!("Bearer {service_token}");
                move |headers: HeaderMap| {
                    let issued = issued.clone();
                    let expected = expected.clone();
                    async move {
                        if headers.get("authorization").and_then(|v| v.to_str().ok())
                            != Some(expected.as_str())
                        {
                            return (StatusCode::UNAUTHORIZED, String::new());
                        }
                        let token = format!("ott-{:032x}", rand::rng().random::<u128>());
                        issued.lock().push(token.clone());
                        (StatusCode::OK, token)
                    }
                }
            }),
        )
        .route(
            "/{event}/check-run",
            axum::routing::post({
                let issued = issued.clone();
                move |headers: HeaderMap| {
                    let issued = issued.clone();
                    async move {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .unwrap_or_default()
                            .to_owned();
                        if issued.lock().contains(&auth) {
                            StatusCode::NO_CONTENT
                        } else {
                            StatusCode::FORBIDDEN
                        }
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(format!("{BRIDGE_IP}:0"))
        .await
        .context("binding the policy double on the Incus bridge")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), issued))
}
