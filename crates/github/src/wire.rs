//! GitHub's JSON shapes. Unknown fields are ignored; conversion to public types is by hand.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::secret::Secret;
use crate::types::{
    JitConfig, RegistrationToken, Runner, RunnerApplication, RunnerGroup, RunnerId, RunnerStatus,
};

#[derive(Debug, Deserialize)]
pub(crate) struct RunnerWire {
    id: u64,
    name: String,
    #[serde(default)]
    os: Option<String>,
    status: String,
    #[serde(default)]
    busy: bool,
    #[serde(default)]
    ephemeral: Option<bool>,
    #[serde(default)]
    labels: Vec<LabelWire>,
    #[serde(default)]
    runner_group_id: Option<u64>,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LabelWire {
    name: String,
}

impl From<RunnerWire> for Runner {
    fn from(w: RunnerWire) -> Self {
        let status = if w.status.eq_ignore_ascii_case("online") {
            RunnerStatus::Online
        } else {
            RunnerStatus::Offline
        };
        Runner {
            id: RunnerId(w.id),
            name: w.name,
            os: w.os.unwrap_or_default(),
            status,
            busy: w.busy,
            ephemeral: w.ephemeral.unwrap_or(false),
            labels: w.labels.into_iter().map(|l| l.name).collect(),
            runner_group_id: w.runner_group_id,
            version: w.version,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunnerListWire {
    #[serde(default)]
    pub(crate) runners: Vec<RunnerWire>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LabelListWire {
    #[serde(default)]
    pub(crate) labels: Vec<LabelWire>,
}

impl LabelListWire {
    pub(crate) fn names(self) -> Vec<String> {
        self.labels.into_iter().map(|l| l.name).collect()
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct LabelsBody<'a> {
    pub(crate) labels: &'a [String],
}

#[derive(Deserialize)]
pub(crate) struct TokenWire {
    token: Secret,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

impl From<TokenWire> for RegistrationToken {
    fn from(w: TokenWire) -> Self {
        RegistrationToken {
            token: w.token,
            expires_at: w.expires_at,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct ApplicationWire {
    os: String,
    architecture: String,
    download_url: String,
    filename: String,
    #[serde(default)]
    sha256_checksum: Option<String>,
    #[serde(default)]
    temp_download_token: Option<Secret>,
}

impl From<ApplicationWire> for RunnerApplication {
    fn from(w: ApplicationWire) -> Self {
        RunnerApplication {
            os: w.os,
            architecture: w.architecture,
            download_url: w.download_url,
            filename: w.filename,
            sha256_checksum: w.sha256_checksum,
            temp_download_token: w.temp_download_token,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct JitRequestWire<'a> {
    pub(crate) name: &'a str,
    pub(crate) runner_group_id: u64,
    pub(crate) labels: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) work_folder: Option<&'a str>,
}

#[derive(Deserialize)]
pub(crate) struct JitConfigWire {
    runner: RunnerWire,
    encoded_jit_config: Secret,
}

impl From<JitConfigWire> for JitConfig {
    fn from(w: JitConfigWire) -> Self {
        JitConfig {
            runner: w.runner.into(),
            encoded_jit_config: w.encoded_jit_config,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunnerGroupWire {
    id: u64,
    name: String,
    #[serde(default)]
    default: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunnerGroupListWire {
    #[serde(default)]
    pub(crate) runner_groups: Vec<RunnerGroupWire>,
}

impl From<RunnerGroupWire> for RunnerGroup {
    fn from(w: RunnerGroupWire) -> Self {
        RunnerGroup {
            id: w.id,
            name: w.name,
            default: w.default,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct InstallationWire {
    pub(crate) id: u64,
}

#[derive(Deserialize)]
pub(crate) struct AccessTokenWire {
    pub(crate) token: Secret,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) expires_at: OffsetDateTime,
}

/// `basic-error` and `validation-error(-simple)`: `errors` holds strings or objects.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBodyWire {
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) errors: Vec<serde_json::Value>,
}

impl ErrorBodyWire {
    pub(crate) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    pub(crate) fn error_strings(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|e| match e {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => o
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| e.to_string()),
                other => other.to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_runner_list_with_extra_fields() {
        let body = r#"{ "total_count": 1, "extra": {"x": 1},
          "runners": [ { "id": 23, "runner_group_id": 1, "name": "gh-runner-0-5f2c", "os": "linux",
                 "status": "online", "busy": false, "ephemeral": true, "version": "2.329.0",
                 "future_field": [1,2],
                 "labels": [ {"id": 5, "name": "self-hosted", "type": "read-only"},
                             {"id": 11, "name": "jammy", "type": "custom"} ] } ] }"#;
        let list: RunnerListWire = serde_json::from_str(body).expect("parses");
        let runners: Vec<Runner> = list.runners.into_iter().map(Runner::from).collect();
        assert_eq!(
            runners,
            vec![Runner {
                id: RunnerId(23),
                name: "gh-runner-0-5f2c".into(),
                os: "linux".into(),
                status: RunnerStatus::Online,
                busy: false,
                ephemeral: true,
                labels: vec!["self-hosted".into(), "jammy".into()],
                runner_group_id: Some(1),
                version: Some("2.329.0".into()),
            }]
        );
    }

    #[test]
    fn documented_token() {
        let body = r#"{ "token": "LLBF3JGZDX3P5PMEXLND6TS6FCWO6", "expires_at": "2026-01-22T12:13:35.123-08:00", "x": null }"#;
        let t: RegistrationToken = serde_json::from_str::<TokenWire>(body)
            .expect("parses")
            .into();
        assert_eq!(t.token.expose(), "LLBF3JGZDX3P5PMEXLND6TS6FCWO6");
        assert_eq!(t.expires_at.unix_timestamp(), 1_769_112_815);
        assert!(!format!("{t:?}").contains("LLBF3"));
    }

    #[test]
    fn documented_jit_response_without_os() {
        let body = r#"{ "runner": { "id": 23, "name": "gh-runner-0-5f2c", "status": "offline", "busy": false, "labels": [] },
          "encoded_jit_config": "eyIucnVubmVyIjoi..." }"#;
        let j: JitConfig = serde_json::from_str::<JitConfigWire>(body)
            .expect("parses")
            .into();
        assert_eq!(j.runner.id, RunnerId(23));
        assert_eq!(j.runner.status, RunnerStatus::Offline);
        assert_eq!(j.runner.os, "");
        assert_eq!(j.runner.version, None);
        assert_eq!(j.encoded_jit_config.expose(), "eyIucnVubmVyIjoi...");
    }

    #[test]
    fn jit_request_shape() {
        let labels = vec!["self-hosted".to_owned(), "jammy".to_owned()];
        let body = JitRequestWire {
            name: "gh-runner-0-5f2c",
            runner_group_id: 1,
            labels: &labels,
            work_folder: None,
        };
        assert_eq!(
            serde_json::to_value(&body).expect("serializes"),
            serde_json::json!({ "name": "gh-runner-0-5f2c", "runner_group_id": 1, "labels": ["self-hosted", "jammy"] })
        );
    }

    #[test]
    fn downloads_with_optional_fields() {
        let body = r#"[{"os":"linux","architecture":"x64","download_url":"https://x/r.tar.gz","filename":"r.tar.gz",
           "sha256_checksum":"abc","temp_download_token":"tdt","new":1},
           {"os":"osx","architecture":"arm64","download_url":"https://x/o.tar.gz","filename":"o.tar.gz"}]"#;
        let apps: Vec<ApplicationWire> = serde_json::from_str(body).expect("parses");
        let apps: Vec<RunnerApplication> = apps.into_iter().map(Into::into).collect();
        assert_eq!(apps[0].sha256_checksum.as_deref(), Some("abc"));
        assert_eq!(
            apps[0].temp_download_token.as_ref().map(Secret::expose),
            Some("tdt")
        );
        assert!(apps[1].temp_download_token.is_none());
        assert!(apps[1].sha256_checksum.is_none());
    }

    #[test]
    fn error_bodies() {
        let simple = ErrorBodyWire::parse(
            br#"{"message":"Validation Failed","errors":["bad label"],"documentation_url":"x"}"#,
        );
        assert_eq!(simple.message.as_deref(), Some("Validation Failed"));
        assert_eq!(simple.error_strings(), vec!["bad label".to_owned()]);
        let rich = ErrorBodyWire::parse(br#"{"message":"Validation Failed","errors":[{"resource":"Label","code":"invalid","message":"too long"}]}"#);
        assert_eq!(rich.error_strings(), vec!["too long".to_owned()]);
        let junk = ErrorBodyWire::parse(b"<html>");
        assert!(junk.message.is_none());
    }
}
