//! Exec with recorded output: the exit code, stdout and stderr of one command.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::client::{Client, OperationRef, Reply};
use crate::error::{Error, Result};
use crate::instances::instance_path;
use crate::names::validate_instance_name;

/// One command to run. Environment values and the standard input may be secrets: Debug shows
/// only the names and the length.
#[derive(Clone)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub user: Option<u32>,
    pub group: Option<u32>,
    /// Overrides the client's operation timeout (long commands).
    pub timeout: Option<Duration>,
    /// Fed to the command's standard input, then closed (needs [`Client::streams_stdin`]).
    /// Without it the command's standard input is empty.
    pub stdin: Option<Bytes>,
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
            .field("stdin", &self.stdin.as_ref().map(|b| b.len()))
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
            stdin: None,
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

    /// Feeds `input` to the command's standard input, then closes it.
    pub fn stdin(mut self, input: impl Into<Bytes>) -> Self {
        self.stdin = Some(input.into());
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
    /// [`ExecOutput::status`]. A stopped instance gives [`Error::NotRunning`], and so does a VM
    /// whose agent is not up yet: in both cases nothing ran.
    ///
    /// Without [`ExecRequest::stdin`], the output is recorded by the server into log files, read,
    /// then deleted. With it, the command's standard streams are the operation's websockets
    /// (unix socket only, see [`Client::streams_stdin`]): the input is sent and closed while
    /// the output is read, in the one operation.
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
        let socket = match (&req.stdin, self.socket()) {
            (None, _) => None,
            (Some(_), Some(socket)) => Some(socket.to_owned()),
            (Some(_), None) => {
                return Err(Error::Invalid {
                    what: "exec stdin",
                    message: "feeding a command's standard input needs the unix socket".into(),
                })
            }
        };
        let mut body = json!({
            "command": req.command,
            "environment": req.environment,
            "wait-for-websocket": socket.is_some(),
            "interactive": false,
            "record-output": socket.is_none(),
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
            Err(Error::Api { message, .. })
                if message.contains("not running") || message.contains("agent isn't") =>
            {
                return Err(Error::NotRunning {
                    instance: name.to_owned(),
                })
            }
            Err(e) => return Err(e),
        };
        let limit = req.timeout.unwrap_or(self.timeouts().operation);
        if let (Some(socket), Some(input)) = (socket, &req.stdin) {
            return self
                .streamed(&what, &op, &socket, input.clone(), limit)
                .await;
        }
        let op = self.wait(&what, &op, limit).await?;
        let status = exit_status(&what, &op)?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(output) = op.metadata.get("output").and_then(|v| v.as_object()) {
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

    /// The websocket half of [`Client::exec`]: dials the operation's stdin, stdout, stderr and
    /// control sockets, sends `input` in chunks and closes stdin, reads stdout and stderr, and
    /// waits for the operation. Output still arriving [`OUTPUT_GRACE`] after the command
    /// finished (a background child holding the streams) is cut off there.
    async fn streamed(
        &self,
        what: &str,
        op: &OperationRef,
        socket: &std::path::Path,
        input: Bytes,
        limit: Duration,
    ) -> Result<ExecOutput> {
        let fds = op
            .metadata
            .pointer("/metadata/fds")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Protocol {
                what: what.to_owned(),
                message: "exec operation without websocket fds".into(),
            })?;
        let secret = |fd: &str| {
            fds.get(fd)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Error::Protocol {
                    what: what.to_owned(),
                    message: format!("exec operation without a secret for fd {fd}"),
                })
        };
        let secrets = [secret("0")?, secret("1")?, secret("2")?, secret("control")?];
        let dial = |secret: String| self.dial(what, socket, op.path(), secret);
        let [s0, s1, s2, sc] = secrets;
        // The control socket is optional for a non-interactive exec: the command runs without it.
        let (required, control) = tokio::join!(
            futures::future::try_join3(dial(s0), dial(s1), dial(s2)),
            dial(sc)
        );
        let (mut stdin, stdout, stderr) = match required {
            Ok(sockets) => sockets,
            Err(e) => {
                // The server does not start the command without these: cancel the operation.
                let _ = self.raw(what, self.req(Method::DELETE, op.path())).await;
                return Err(Error::StreamsNotConnected {
                    what: what.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        if let Err(error) = &control {
            tracing::debug!(message = "Exec control socket not connected.", %what, %error);
        }
        let stdout = tokio::spawn(read_stream(stdout));
        let stderr = tokio::spawn(read_stream(stderr));
        let feed = async move {
            for chunk in input.chunks(STDIN_CHUNK) {
                if stdin
                    .send(Message::Binary(input.slice_ref(chunk)))
                    .await
                    .is_err()
                {
                    // The command stopped reading (it exited): its status tells the rest.
                    return;
                }
            }
            let _ = stdin.close(None).await;
        };
        let (_, finished) = tokio::join!(feed, self.wait(what, op, limit));
        drop(control);
        let finished = finished?;
        let status = exit_status(what, &finished)?;
        let take = async |task: tokio::task::JoinHandle<Vec<u8>>| {
            let abort = task.abort_handle();
            match tokio::time::timeout(OUTPUT_GRACE, task).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(_)) => Vec::new(),
                Err(_) => {
                    abort.abort();
                    tracing::debug!(message = "Exec output still open after the command ended.", %what);
                    Vec::new()
                }
            }
        };
        let stdout = take(stdout).await;
        let stderr = take(stderr).await;
        Ok(ExecOutput {
            status,
            stdout,
            stderr,
        })
    }

    /// Opens one of an operation's websockets over the unix socket.
    async fn dial(
        &self,
        what: &str,
        socket: &std::path::Path,
        op_path: &str,
        secret: String,
    ) -> Result<WebSocketStream<UnixStream>> {
        let timeouts = self.timeouts();
        // The server waits 10 s for the streams, then fails the operation.
        let handshake = timeouts.request.min(DIAL_TIMEOUT);
        let url = format!("ws://localhost{op_path}/websocket?secret={secret}");
        let failed = |message: String| Error::Protocol {
            what: format!("{what}: opening its websocket"),
            message,
        };
        let stream = tokio::time::timeout(timeouts.connect, UnixStream::connect(socket))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("{what}: connecting to {}", socket.display()),
                after: timeouts.connect,
            })?
            .map_err(|e| failed(e.to_string()))?;
        let (ws, _) = tokio::time::timeout(handshake, tokio_tungstenite::client_async(url, stream))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("{what}: opening its websocket"),
                after: handshake,
            })?
            .map_err(|e| failed(e.to_string()))?;
        Ok(ws)
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

/// How much of the standard input goes in one websocket message.
const STDIN_CHUNK: usize = 256 * 1024;
/// How long opening one of an exec's websockets may take: the server gives up on them after 10 s.
const DIAL_TIMEOUT: Duration = Duration::from_secs(12);
/// How long output may still arrive after the command ended.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// Everything one output websocket carries, until the server closes it.
async fn read_stream(mut ws: WebSocketStream<UnixStream>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Binary(b) => out.extend_from_slice(&b),
            Message::Text(t) => out.extend_from_slice(t.as_bytes()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    out
}

/// How a finished exec operation ended.
fn exit_status(what: &str, op: &crate::types::Operation) -> Result<ExecStatus> {
    let code = op.metadata.get("return").and_then(|v| v.as_i64());
    if op.status_code == 200 {
        let code = code.ok_or_else(|| Error::Protocol {
            what: what.to_owned(),
            message: "finished exec without a return code".into(),
        })?;
        Ok(ExecStatus::Exited(i32::try_from(code).unwrap_or(-1)))
    } else if op.err.contains("not found") || code == Some(127) {
        Ok(ExecStatus::CommandNotFound)
    } else if op.err.contains("not executable") || code == Some(126) {
        Ok(ExecStatus::NotExecutable)
    } else {
        Err(Error::OperationFailed {
            what: what.to_owned(),
            message: op.err.clone(),
        })
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
