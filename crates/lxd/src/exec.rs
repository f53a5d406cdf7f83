//! Exec with recorded output: the exit code, stdout and stderr of one command.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::client::{Client, OperationRef, Reply};
use crate::error::{Error, Result};
use crate::instances::instance_path;
use crate::names::validate_instance_name;

/// One command to run. Environment values may be secrets: Debug shows only their names.
#[derive(Clone)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub user: Option<u32>,
    pub group: Option<u32>,
    /// Overrides the client's operation timeout (long commands).
    pub timeout: Option<Duration>,
}

impl fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecRequest")
            .field("command", &self.command)
            .field("environment", &self.environment.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("group", &self.group)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ExecRequest {
    pub fn new<S: Into<String>>(command: impl IntoIterator<Item = S>) -> Self {
        ExecRequest {
            command: command.into_iter().map(Into::into).collect(),
            environment: BTreeMap::new(),
            cwd: None,
            user: None,
            group: None,
            timeout: None,
        }
    }

    /// `sh -c <script>`.
    pub fn shell(script: impl Into<String>) -> Self {
        ExecRequest::new(["sh".to_owned(), "-c".to_owned(), script.into()])
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.environment.insert(key.into(), value.into());
        self
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    pub fn user(mut self, uid: u32) -> Self {
        self.user = Some(uid);
        self
    }

    pub fn group(mut self, gid: u32) -> Self {
        self.group = Some(gid);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStatus {
    /// It ran and exited with this code (which may be non-zero).
    Exited(i32),
    /// The command does not exist (exit 127).
    CommandNotFound,
    /// The command exists but cannot be executed (exit 126).
    NotExecutable,
}

impl ExecStatus {
    /// The shell-style exit code: 127 and 126 for the two failures to start.
    pub fn code(self) -> i32 {
        match self {
            ExecStatus::Exited(c) => c,
            ExecStatus::CommandNotFound => 127,
            ExecStatus::NotExecutable => 126,
        }
    }
}

/// The result of [`Client::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: ExecStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn exit_code(&self) -> i32 {
        self.status.code()
    }

    /// Exited with 0.
    pub fn success(&self) -> bool {
        self.status == ExecStatus::Exited(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl Client {
    /// Runs a command to completion in a running instance. A non-zero exit is not an error: look at
    /// [`ExecOutput::status`]. A stopped instance gives [`Error::NotRunning`].
    ///
    /// The output is recorded by the server into log files, read, then deleted.
    pub async fn exec(&self, name: &str, req: &ExecRequest) -> Result<ExecOutput> {
        validate_instance_name(name)?;
        if req.command.is_empty() {
            return Err(Error::Invalid {
                what: "exec command",
                message: "the command is empty".into(),
            });
        }
        let program = req.command.first().map(String::as_str).unwrap_or_default();
        let what = format!("exec {program:?} in {name}");
        let mut body = json!({
            "command": req.command,
            "environment": req.environment,
            "wait-for-websocket": false,
            "interactive": false,
            "record-output": true,
        });
        if let Some(cwd) = &req.cwd {
            body["cwd"] = json!(cwd);
        }
        if let Some(u) = req.user {
            body["user"] = json!(u);
        }
        if let Some(g) = req.group {
            body["group"] = json!(g);
        }
        let path = format!("{}/exec", instance_path(name));
        let op = match self
            .call(&what, self.scoped(Method::POST, &path).json(&body))
            .await
        {
            Ok(Reply::Async(op)) => op,
            Ok(Reply::Sync(_)) => {
                return Err(Error::Protocol {
                    what,
                    message: "exec answered without an operation".into(),
                })
            }
            Err(Error::Api { message, .. }) if message.contains("not running") => {
                return Err(Error::NotRunning {
                    instance: name.to_owned(),
                })
            }
            Err(e) => return Err(e),
        };
        let limit = req.timeout.unwrap_or(self.timeouts().operation);
        let op = self.wait(&what, &op, limit).await?;
        let meta = &op.metadata;
        let code = meta.get("return").and_then(|v| v.as_i64());
        let status = if op.status_code == 200 {
            let code = code.ok_or_else(|| Error::Protocol {
                what: what.clone(),
                message: "finished exec without a return code".into(),
            })?;
            ExecStatus::Exited(i32::try_from(code).unwrap_or(-1))
        } else if op.err.contains("not found") || code == Some(127) {
            ExecStatus::CommandNotFound
        } else if op.err.contains("not executable") || code == Some(126) {
            ExecStatus::NotExecutable
        } else {
            return Err(Error::OperationFailed {
                what,
                message: op.err,
            });
        };
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(output) = meta.get("output").and_then(|v| v.as_object()) {
            for (fd, buf) in [("1", &mut stdout), ("2", &mut stderr)] {
                if let Some(url) = output.get(fd).and_then(|v| v.as_str()) {
                    *buf = self.take_log(&what, url).await?;
                }
            }
        }
        Ok(ExecOutput {
            status,
            stdout,
            stderr,
        })
    }

    /// Reads one recorded log, then deletes it. The log URL lacks `?project=`: it is added here.
    async fn take_log(&self, what: &str, url: &str) -> Result<Vec<u8>> {
        let log = OperationRef::parse(url);
        let path = log.path();
        let (_, body) = self.raw(what, self.scoped(Method::GET, path)).await?;
        if let Err(e) = self.raw(what, self.scoped(Method::DELETE, path)).await {
            tracing::warn!(message = "Deleting an exec log failed.", log = %path, error = %e);
        }
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_request_debug_hides_env_values() {
        let r = ExecRequest::shell("run")
            .env("TOKEN", "s3cr3t")
            .cwd("/tmp")
            .user(1000);
        let dbg = format!("{r:?}");
        assert!(dbg.contains("TOKEN"));
        assert!(!dbg.contains("s3cr3t"));
        assert_eq!(r.command, vec!["sh", "-c", "run"]);
    }

    #[test]
    fn status_codes() {
        assert_eq!(ExecStatus::CommandNotFound.code(), 127);
        assert_eq!(ExecStatus::NotExecutable.code(), 126);
        assert_eq!(ExecStatus::Exited(3).code(), 3);
    }
}
