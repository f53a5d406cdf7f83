//! `workflow_job` webhook deliveries, signed with `X-Hub-Signature-256`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::server::AppState;
use crate::state::{DeliveryRecord, WebhookEvent};

/// `sha256=<hex>`: HMAC-SHA256 of the raw body with the secret, as GitHub signs deliveries.
pub fn sign_webhook(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends queued events one at a time, in order, until shutdown.
pub(crate) async fn deliver(shared: AppState, mut events: mpsc::UnboundedReceiver<WebhookEvent>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .user_agent("GitHub-Hookshot/sim")
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(message = "cannot build the webhook client", %error);
            return;
        }
    };
    let mut stop = shared.shutdown.clone();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.wait_for(|stopped| *stopped) => None,
        };
        let Some(event) = event else { return };
        let body = event.payload.to_string();
        let delivery_id = uuid::Uuid::new_v4().to_string();
        let installation = event.payload["installation"]["id"].as_u64();
        let mut request = client
            .post(&event.target.url)
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", &delivery_id)
            .header("x-github-hook-id", "1")
            .header(
                "x-hub-signature-256",
                sign_webhook(event.target.secret.expose().as_bytes(), body.as_bytes()),
            );
        if let Some(id) = installation {
            request = request
                .header("x-github-hook-installation-target-id", id.to_string())
                .header("x-github-hook-installation-target-type", "integration");
        } else {
            request = request
                .header("x-github-hook-installation-target-id", "1")
                .header("x-github-hook-installation-target-type", "repository");
        }
        let result = request.body(body).send().await;
        let (status, error) = match result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(error) => (None, Some(error.to_string())),
        };
        shared.state.lock().record_delivery(DeliveryRecord {
            delivery_id,
            action: event.action,
            job_id: event.job_id,
            status,
            error,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_test_vector() {
        assert_eq!(
            sign_webhook(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
