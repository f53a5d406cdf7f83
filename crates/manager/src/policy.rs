//! The repo-policy service client: one single-use token per runner, fetched with the service token.

use std::time::Duration;

use crate::model::Secret;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("fetching a one-time token from {url}: {message}")]
    Token { url: String, message: String },
}

/// Where the policy service is, for the manager and for the runners.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// As the manager reaches it, e.g. `http://127.0.0.1:8080`.
    pub manager_url: String,
    /// As runners reach it, e.g. `http://10.1.2.1:8080` (added to the runners' `no_proxy`).
    pub runner_url: String,
    pub service_token: Secret,
}

#[derive(Debug, Clone)]
pub struct PolicyClient {
    config: PolicyConfig,
    http: reqwest::Client,
}

impl PolicyClient {
    pub fn new(config: PolicyConfig) -> Result<Self, PolicyError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| PolicyError::Token {
                url: config.manager_url.clone(),
                message: e.to_string(),
            })?;
        Ok(Self { config, http })
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// `GET /one-time-token` with `Bearer <service_token>`; up to 3 attempts on 5xx or transport errors.
    pub async fn one_time_token(&self) -> Result<Secret, PolicyError> {
        let url = format!(
            "{}/one-time-token",
            self.config.manager_url.trim_end_matches('/')
        );
        let err = |message: String| PolicyError::Token {
            url: url.clone(),
            message,
        };
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let response = self
                .http
                .get(&url)
                .bearer_auth(self.config.service_token.expose())
                .send()
                .await;
            match response {
                Ok(r) if r.status().is_success() => {
                    let body = r.text().await.map_err(|e| err(e.to_string()))?;
                    let token = body.trim();
                    if token.is_empty() {
                        return Err(err("empty token".into()));
                    }
                    return Ok(Secret::new(token));
                }
                Ok(r) if r.status().is_server_error() => {
                    last = format!("http status {}", r.status())
                }
                Ok(r) => return Err(err(format!("http status {}", r.status()))),
                Err(e) => last = e.to_string(),
            }
        }
        Err(err(last))
    }
}
