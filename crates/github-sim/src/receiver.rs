//! A webhook receiver for tests: `POST /hook` answers 200 `ok` and keeps every request's headers
//! and body, so a test can check what the sim (or anything else) delivered.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// The requests a receiver got, in arrival order: `(headers, body)`.
pub type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// Serves a webhook receiver on `listener` (`POST /hook`, answering 200 `ok`) in a spawned task
/// and returns the record of what it receives. The task lives as long as the runtime.
pub fn serve_webhook_receiver(listener: TcpListener) -> Received {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().push((headers, body));
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "webhook receiver stopped");
        }
    });
    received
}
