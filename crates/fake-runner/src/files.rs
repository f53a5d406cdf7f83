//! The files in the runner root: `.runner`, `.credentials`, `.credentials_rsaparams` and `.env`.
//!
//! JSON keys are camelCase as actions/runner's `ConfigurationStore` writes them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};

use secrecy::{ExposeSecret, SecretString};

pub const RUNNER_FILE: &str = ".runner";
pub const CREDENTIALS_FILE: &str = ".credentials";
pub const RSA_PARAMS_FILE: &str = ".credentials_rsaparams";
/// The files a configured runner has, and `remove`/an ephemeral exit deletes.
pub const CONFIG_FILES: [&str; 3] = [RUNNER_FILE, CREDENTIALS_FILE, RSA_PARAMS_FILE];

/// `.runner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerSettings {
    #[serde(deserialize_with = "number_or_string")]
    pub agent_id: u64,
    pub agent_name: String,
    #[serde(default, deserialize_with = "number_or_string")]
    pub pool_id: u64,
    #[serde(default)]
    pub pool_name: String,
    pub server_url: String,
    #[serde(default)]
    pub git_hub_url: String,
    #[serde(default = "default_work")]
    pub work_folder: String,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub disable_update: bool,
    #[serde(default)]
    pub use_v2_flow: bool,
    #[serde(default)]
    pub server_url_v2: String,
}

fn default_work() -> String {
    "_work".to_string()
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        N(u64),
        S(String),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// `.credentials`: `{"scheme":"OAuth","data":{"clientId": <credential>, ...}}`.
#[derive(Serialize, Deserialize)]
struct CredentialsFile {
    scheme: String,
    data: BTreeMap<String, String>,
}

#[derive(Debug)]
pub enum FilesError {
    Io(PathBuf, io::Error),
    Json(PathBuf, serde_json::Error),
    NotConfigured,
    BadJitConfig(&'static str),
}

impl std::error::Error for FilesError {}

impl std::fmt::Display for FilesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilesError::Io(p, e) => write!(f, "accessing {}: {e}", p.display()),
            FilesError::Json(p, e) => write!(f, "parsing {}: {e}", p.display()),
            FilesError::NotConfigured => {
                f.write_str("Not configured. Run config.sh to configure the runner.")
            }
            FilesError::BadJitConfig(why) => write!(f, "invalid JIT configuration: {why}"),
        }
    }
}

/// The runner root (the directory holding `bin/`, `config.sh` and `.runner`).
#[derive(Debug, Clone)]
pub struct RunnerRoot(PathBuf);

impl RunnerRoot {
    #[cfg(test)]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The parent of the directory of the running executable (`<root>/bin/Runner.Listener`),
    /// else the current directory (the scripts `cd` there).
    pub fn discover() -> Self {
        let from_exe = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
            .filter(|root| root.join("bin").is_dir());
        match from_exe {
            Some(root) => Self(root),
            None => Self(std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn is_configured(&self) -> bool {
        self.join(RUNNER_FILE).exists()
    }

    /// The JSON file `name` (a leading byte-order mark allowed); [`FilesError::NotConfigured`]
    /// when it does not exist.
    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, FilesError> {
        let path = self.join(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FilesError::NotConfigured),
            Err(e) => return Err(FilesError::Io(path, e)),
        };
        serde_json::from_str(text.trim_start_matches('\u{feff}'))
            .map_err(|e| FilesError::Json(path, e))
    }

    pub fn read_settings(&self) -> Result<RunnerSettings, FilesError> {
        self.read_json(RUNNER_FILE)
    }

    pub fn read_credential(&self) -> Result<SecretString, FilesError> {
        let file: CredentialsFile = self.read_json(CREDENTIALS_FILE)?;
        let path = self.join(CREDENTIALS_FILE);
        file.data
            .get("clientId")
            .filter(|c| !c.is_empty())
            .map(|c| SecretString::from(c.clone()))
            .ok_or_else(|| {
                FilesError::Json(path, serde::de::Error::custom("data.clientId is missing"))
            })
    }

    /// Writes `.runner`, `.credentials` (0600) and `.credentials_rsaparams` (0600).
    pub fn write_config(
        &self,
        settings: &RunnerSettings,
        credential: &SecretString,
    ) -> Result<(), FilesError> {
        let runner = serde_json::to_vec_pretty(settings)
            .map_err(|e| FilesError::Json(self.join(RUNNER_FILE), e))?;
        let mut data = BTreeMap::new();
        data.insert(
            "clientId".to_string(),
            credential.expose_secret().to_string(),
        );
        data.insert(
            "authorizationUrl".to_string(),
            format!(
                "{}/_runner/token",
                settings.server_url.trim_end_matches('/')
            ),
        );
        data.insert("requireFipsCryptography".to_string(), "False".to_string());
        let credentials = serde_json::to_vec_pretty(&CredentialsFile {
            scheme: "OAuth".to_string(),
            data,
        })
        .map_err(|e| FilesError::Json(self.join(CREDENTIALS_FILE), e))?;
        // The simulator authenticates with the credential alone; the RSA file keeps the layout.
        let rsa = br#"{"note":"the github simulator does not use RSA keys"}"#;
        self.write_file(RSA_PARAMS_FILE, rsa, 0o600)?;
        self.write_file(CREDENTIALS_FILE, &credentials, 0o600)?;
        self.write_file(RUNNER_FILE, &runner, 0o644)
    }

    /// Decodes `--jitconfig` and writes each of its files into the root.
    pub fn write_jit_config(&self, encoded: &SecretString) -> Result<(), FilesError> {
        let files = decode_jit_config(encoded)?;
        for (name, content) in &files {
            let mode = if name == RUNNER_FILE { 0o644 } else { 0o600 };
            self.write_file(name, content, mode)?;
        }
        Ok(())
    }

    /// Atomically replaces `name` (write to a temporary file, then rename).
    fn write_file(&self, name: &str, content: &[u8], mode: u32) -> Result<(), FilesError> {
        let path = self.join(name);
        let tmp = self.join(&format!("{name}.tmp"));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(content)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            FilesError::Io(path, e)
        })
    }

    /// Deletes the configuration files; returns the names that existed.
    pub fn delete_config(&self) -> Result<Vec<&'static str>, FilesError> {
        let mut deleted = Vec::new();
        for name in CONFIG_FILES {
            let path = self.join(name);
            match fs::remove_file(&path) {
                Ok(()) => deleted.push(name),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FilesError::Io(path, e)),
            }
        }
        Ok(deleted)
    }
}

/// base64 of `{"<file name>": "<base64 content>", ...}`; only plain file names are accepted.
pub fn decode_jit_config(encoded: &SecretString) -> Result<Vec<(String, Vec<u8>)>, FilesError> {
    let json = decode_base64(encoded.expose_secret().trim())
        .ok_or(FilesError::BadJitConfig("not base64"))?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&json)
        .map_err(|_| FilesError::BadJitConfig("not a JSON object of strings"))?;
    let mut files = Vec::new();
    for (name, content) in map {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(FilesError::BadJitConfig("a file name is not a plain name"));
        }
        let bytes =
            decode_base64(&content).ok_or(FilesError::BadJitConfig("a file is not base64"))?;
        files.push((name, bytes));
    }
    for required in [RUNNER_FILE, CREDENTIALS_FILE] {
        if !files.iter().any(|(n, _)| n == required) {
            return Err(FilesError::BadJitConfig("it lacks .runner or .credentials"));
        }
    }
    Ok(files)
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(s).ok())
}

/// Parses `.env` like actions/runner's `LoadAndSetEnv`: `KEY=VALUE` per line, split at the first
/// `=`; lines without a key are skipped (and so are `#` comments).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            if line.trim_start().starts_with('#') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn settings() -> RunnerSettings {
        RunnerSettings {
            agent_id: 7,
            agent_name: "r1".into(),
            pool_id: 1,
            pool_name: "Default".into(),
            server_url: "http://127.0.0.1:9".into(),
            git_hub_url: "http://127.0.0.1:9/o/r".into(),
            work_folder: "_work".into(),
            ephemeral: true,
            disable_update: false,
            use_v2_flow: false,
            server_url_v2: String::new(),
        }
    }

    #[test]
    fn config_round_trips_with_camel_case_keys_and_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = RunnerRoot::new(dir.path());
        root.write_config(&settings(), &SecretString::from("cred"))
            .expect("write");
        let raw: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join(RUNNER_FILE)).expect("read")).expect("json");
        assert_eq!(raw["agentId"], 7);
        assert_eq!(raw["gitHubUrl"], "http://127.0.0.1:9/o/r");
        assert_eq!(raw["disableUpdate"], false);
        assert_eq!(root.read_settings().expect("settings"), settings());
        assert_eq!(
            root.read_credential().expect("cred").expose_secret(),
            "cred"
        );
        let mode = fs::metadata(root.join(CREDENTIALS_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(root.delete_config().expect("delete").len(), 3);
        assert!(matches!(
            root.read_settings(),
            Err(FilesError::NotConfigured)
        ));
    }

    #[test]
    fn jit_config_writes_its_files() {
        let runner = r#"{"agentId":"12","agentName":"jit-1","poolId":1,"poolName":"Default","serverUrl":"http://10.1.1.1:8080","gitHubUrl":"http://10.1.1.1:8080/o","workFolder":"_work","ephemeral":true,"disableUpdate":true}"#;
        let creds = r#"{"scheme":"OAuth","data":{"clientId":"c-123"}}"#;
        let map = serde_json::json!({
            ".runner": STANDARD.encode(runner),
            ".credentials": STANDARD.encode(creds),
            ".credentials_rsaparams": STANDARD.encode("{}"),
        });
        let encoded = SecretString::from(STANDARD.encode(map.to_string()));
        let dir = tempfile::tempdir().expect("tempdir");
        let root = RunnerRoot::new(dir.path());
        root.write_jit_config(&encoded).expect("write");
        let s = root.read_settings().expect("settings");
        assert_eq!(
            (s.agent_id, s.agent_name.as_str(), s.ephemeral),
            (12, "jit-1", true)
        );
        assert_eq!(
            root.read_credential().expect("cred").expose_secret(),
            "c-123"
        );
    }

    #[test]
    fn bad_jit_configs_are_refused() {
        let bad = |s: &str| decode_jit_config(&SecretString::from(s)).is_err();
        assert!(bad("%%%"));
        assert!(bad(&STANDARD.encode("[1,2]")));
        assert!(bad(&STANDARD.encode(r#"{".runner":"e30="}"#)));
        assert!(bad(&STANDARD.encode(
            r#"{"../x":"e30=",".runner":"e30=",".credentials":"e30="}"#
        )));
    }

    #[test]
    fn env_file_lines() {
        let parsed = parse_env_file("A=1\n\n# c\nB= two=2 \r\n=x\nnoequals\nC=\n");
        assert_eq!(
            parsed,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), " two=2 ".to_string()),
                ("C".to_string(), String::new())
            ]
        );
    }
}
