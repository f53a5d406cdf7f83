//! The runner agents behind `manager::sim_provider::SimProvider` (SIMULATION).
//!
//! `config.sh` registers with the sim's runner protocol (`POST /_runner/register`); `run.sh`
//! makes one heartbeat poll and then hands the agent to the outside-world child, which keeps it
//! long-polling (see [`crate::outside`]). A JIT config is decoded for its agent id and credential.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use manager::sim_provider::SimRunnerHooks;
use parking_lot::Mutex;

use crate::outside::Outside;

/// Registered agents, by runner name.
pub struct SimAgents {
    outside: Arc<Outside>,
    http: reqwest::Client,
    /// `config.sh --url`, e.g. `http://127.0.0.1:PORT/octo/app`.
    scope_url: String,
    agents: Mutex<HashMap<String, (u64, String)>>,
}

impl SimAgents {
    pub fn new(outside: Arc<Outside>, scope_path: &str) -> anyhow::Result<Self> {
        let scope_url = format!("{}/{scope_path}", outside.base_url());
        Ok(Self {
            outside,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            scope_url,
            agents: Mutex::default(),
        })
    }

    /// `config.sh`: registers `name` with the sim and keeps its agent id and credential.
    pub(crate) async fn register(
        &self,
        name: &str,
        labels: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "url": self.scope_url,
            "name": name,
            "labels": [labels],
            "ephemeral": true,
        });
        let response = self
            .http
            .post(format!("{}/_runner/register", self.outside.base_url()))
            .header("authorization", format!("RemoteAuth {}", token.trim()))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        let answer: serde_json::Value = response.json().await?;
        let id = answer["agent_id"].as_u64().unwrap_or_default();
        let credential = answer["credential"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(id > 0 && !credential.is_empty(), "bad register answer");
        self.agents.lock().insert(name.to_owned(), (id, credential));
        Ok(())
    }

    /// `run.sh`: one heartbeat, then the agent keeps long-polling in the outside child.
    pub(crate) async fn run(&self, name: &str, jit: Option<&str>) -> anyhow::Result<()> {
        let (id, credential) = match jit {
            Some(jit) => decode_jit(jit)?,
            None => self
                .agents
                .lock()
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("{name} was never configured"))?,
        };
        // One heartbeat so that the runner is online when run.sh "starts"; then long polls.
        self.http
            .get(format!(
                "{}/_runner/poll?agent_id={id}&wait=0",
                self.outside.base_url()
            ))
            .header("authorization", format!("Bearer {credential}"))
            .send()
            .await?
            .error_for_status()?;
        self.outside.keep_polling(id, &credential).await?;
        self.agents.lock().insert(name.to_owned(), (id, credential));
        Ok(())
    }
}

impl SimAgents {
    /// The credential of a registered agent (to complete its jobs).
    pub fn credential(&self, name: &str) -> Option<String> {
        self.agents.lock().get(name).map(|(_, c)| c.clone())
    }

    /// The agent stops: no more polls, and the sim is told it went offline.
    pub(crate) async fn stop_agent(&self, name: &str) {
        let agent = self.agents.lock().get(name).cloned();
        if let Some((id, credential)) = agent {
            let _ = self.outside.stop_polling(id).await;
            let _ = self
                .http
                .post(format!("{}/_runner/offline", self.outside.base_url()))
                .header("authorization", format!("Bearer {credential}"))
                .json(&serde_json::json!({ "agent_id": id }))
                .send()
                .await;
        }
    }
}

/// The agent id and credential inside an encoded JIT config (see docs/sim-protocol.md).
pub fn decode_jit(encoded: &str) -> anyhow::Result<(u64, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let outer: serde_json::Value = serde_json::from_slice(&b64.decode(encoded.trim())?)?;
    let file = |key: &str| -> anyhow::Result<serde_json::Value> {
        let raw = outer[key]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("jit config without {key}"))?;
        Ok(serde_json::from_slice(&b64.decode(raw)?)?)
    };
    let id = file(".runner")?["agentId"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("jit .runner without agentId"))?;
    let credential = file(".credentials")?["data"]["clientId"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("jit .credentials without clientId"))?
        .to_owned();
    Ok((id, credential))
}

#[async_trait]
impl SimRunnerHooks for SimAgents {
    async fn configure(&self, name: &str, labels: &str, token: &str) -> bool {
        match self.register(name, labels, token).await {
            Ok(()) => true,
            Err(error) => {
                eprintln!("agent {name}: config.sh failed: {error:#}");
                false
            }
        }
    }

    async fn start(&self, name: &str, jit: Option<&str>) -> bool {
        match self.run(name, jit).await {
            Ok(()) => true,
            Err(error) => {
                eprintln!("agent {name}: run.sh failed: {error:#}");
                false
            }
        }
    }

    async fn stop(&self, name: &str) {
        self.stop_agent(name).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_jit_config() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let runner = b64.encode(r#"{"agentId": 42, "agentName": "r"}"#);
        let creds = b64.encode(r#"{"scheme":"OAuth","data":{"clientId":"simcred_x"}}"#);
        let outer = serde_json::json!({".runner": runner, ".credentials": creds});
        let encoded = b64.encode(outer.to_string());
        let (id, credential) = decode_jit(&encoded).expect("decodes");
        assert_eq!((id, credential.as_str()), (42, "simcred_x"));
        assert!(decode_jit("bm90IGpzb24=").is_err());
    }
}
