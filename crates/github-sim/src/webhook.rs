//! `workflow_job` webhook deliveries, signed with `X-Hub-Signature-256`, and the record of each
//! attempt (what was sent, what came back) for the deliveries API.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::server::AppState;
use crate::state::{AttemptOutcome, WebhookEvent};

/// The `User-Agent` of deliveries (GitHub's is `GitHub-Hookshot/<sha>`).
const USER_AGENT: &str = "GitHub-Hookshot/sim";

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
        .user_agent(USER_AGENT)
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
        let guid = event
            .guid
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let headers = request_headers(&event, &guid, &body);
        let fault = shared.state.lock().take_webhook_fault();
        let started = tokio::time::Instant::now();
        let mut outcome = match fault {
            Some(Some(status)) => answered(status, BTreeMap::new(), None),
            Some(None) => not_answered(CONNECT_FAILED, "injected connection failure".to_owned()),
            None => {
                let mut request = client.post(&event.target.url);
                for (name, value) in &headers {
                    request = request.header(name.as_str(), value.as_str());
                }
                send(request.body(body)).await
            }
        };
        outcome.duration = started.elapsed().as_secs_f64();
        shared
            .state
            .lock()
            .record_delivery(event, guid, headers, outcome);
    }
}

/// GitHub's `status` of an attempt the receiver never answered.
const CONNECT_FAILED: &str = "failed to connect to host";
/// Largest response body kept for the deliveries API.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The headers of a delivery, in GitHub's spelling (the deliveries API shows them as sent).
fn request_headers(event: &WebhookEvent, guid: &str, body: &str) -> Vec<(String, String)> {
    let hook_id = event.hook_ids.first().copied().unwrap_or(0);
    [
        ("Accept", "*/*".to_owned()),
        ("Content-Type", "application/json".to_owned()),
        ("User-Agent", USER_AGENT.to_owned()),
        ("X-GitHub-Delivery", guid.to_owned()),
        ("X-GitHub-Event", "workflow_job".to_owned()),
        ("X-GitHub-Hook-ID", hook_id.to_string()),
        (
            "X-GitHub-Hook-Installation-Target-ID",
            event.target_id.to_string(),
        ),
        (
            "X-GitHub-Hook-Installation-Target-Type",
            event.target_type.to_owned(),
        ),
        (
            "X-Hub-Signature-256",
            sign_webhook(event.target.secret.expose().as_bytes(), body.as_bytes()),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

fn answered(
    code: u16,
    response_headers: BTreeMap<String, String>,
    response_body: Option<String>,
) -> AttemptOutcome {
    let status = if (200..300).contains(&code) {
        "OK".to_owned()
    } else {
        format!("Invalid HTTP Response: {code}")
    };
    AttemptOutcome {
        status_code: code,
        status,
        answered: Some(code),
        error: None,
        response_headers,
        response_body,
        duration: 0.0,
    }
}

fn not_answered(status: &str, error: String) -> AttemptOutcome {
    AttemptOutcome {
        status_code: 0,
        status: status.to_owned(),
        answered: None,
        error: Some(error),
        response_headers: BTreeMap::new(),
        response_body: None,
        duration: 0.0,
    }
}

async fn send(request: reqwest::RequestBuilder) -> AttemptOutcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => return not_answered("timed out", error.to_string()),
        Err(error) => return not_answered(CONNECT_FAILED, error.to_string()),
    };
    let code = response.status().as_u16();
    let headers: BTreeMap<String, String> = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.bytes().await.ok().map(|b| {
        let b = &b[..b.len().min(MAX_RESPONSE_BODY)];
        String::from_utf8_lossy(b).into_owned()
    });
    answered(code, headers, body)
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
