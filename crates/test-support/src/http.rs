//! An HTTP service double on an ephemeral port.

use std::net::IpAddr;

/// Serves `app` on `ip` (an ephemeral port) until the test's runtime stops; its base URL,
/// `http://<ip>:<port>`.
pub async fn serve(ip: impl Into<IpAddr>, app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind((ip.into(), 0))
        .await
        .expect("the service double binds");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}
