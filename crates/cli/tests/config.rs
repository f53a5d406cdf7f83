//! The config contract: defaults, every key's errors (the matrix), unknown keys, secrets, and
//! a property test that no input panics and every error names a key.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use manager::install::{configure_script, etc_environment, runner_env, InstallSettings};
use manager::Owner;

use proptest::prelude::*;
use runner_manager::config::{
    Config, ConfigError, Environment, GitHubCredentials, GitHubPath, InstanceType, LxdEndpoint,
    RegistrationMode, SecretSource,
};

const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";

/// A fake environment: variables and files.
#[derive(Default)]
struct TestEnv {
    vars: HashMap<String, String>,
    files: HashMap<PathBuf, String>,
}

impl TestEnv {
    fn standard() -> Self {
        let mut env = Self::default();
        for (path, text) in [
            ("/etc/rm/app.pem", PEM),
            ("/etc/rm/github-token", "ghp_fromfile\n"),
            ("/etc/rm/empty", "\n"),
            ("/etc/rm/lxd.crt", "cert"),
            ("/etc/rm/lxd.key", "key"),
            ("/etc/rm/secret", "s3cret-from-file"),
        ] {
            env.files.insert(PathBuf::from(path), text.to_owned());
        }
        env
    }
}

impl Environment for TestEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.files.get(path).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
        })
    }
    fn file_exists(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }
}

const MINIMAL: &str = r#"
[github]
path = "owner/repo"
token = "ghp_SECRET_TOKEN_VALUE"
"#;

fn parse_with(text: &str, env: &TestEnv) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/rm"), env)
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with(text, &TestEnv::standard())
}

fn invalid_keys(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(err) => err.keys().into_iter().map(str::to_owned).collect(),
    }
}

#[test]
fn defaults_match_the_charm() {
    let config = parse(MINIMAL).expect("valid");
    assert_eq!(config.app_name, "github-runner");
    assert_eq!(config.unit, 0);
    assert_eq!(config.runner_name_prefix(), "github-runner-0-");
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/runner-manager"));
    assert_eq!(config.runners.quantity, 1);
    assert_eq!(config.runners.cpu, 2);
    assert_eq!(config.runners.memory.as_str(), "7GiB");
    assert_eq!(config.runners.memory.bytes(), 7 << 30);
    assert_eq!(config.runners.disk.as_str(), "10GiB");
    assert_eq!(config.runners.registration, RegistrationMode::Token);
    assert_eq!(config.server.reconcile_interval.as_secs(), 300);
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:9464");
    assert!(config.server.api_token.is_none());
    assert!(config.server.webhook_secret.is_none());
    assert_eq!(config.lxd.instance_type, InstanceType::VirtualMachine);
    assert_eq!(config.lxd.image, "jammy");
    assert_eq!(config.lxd.endpoint, LxdEndpoint::Discover);
    assert_eq!(
        config.github.path.group(),
        None,
        "a repository has no group"
    );
    assert_eq!(config.summary().runner_group, "default");
    assert_eq!(config.github.api_url.as_str(), "https://api.github.com/");
    assert_eq!(config.github.web_url.as_str(), "https://github.com/");
    assert!(config.policy.is_none());
    assert!(!config.metrics.issue_metrics);
    assert_eq!(
        config.runner_labels(),
        ["self-hosted", "github-runner", "jammy"]
    );
    assert!(matches!(
        &config.github.credentials,
        GitHubCredentials::Token { token, source: SecretSource::ConfigKey("github.token") }
            if token.expose() == "ghp_SECRET_TOKEN_VALUE"
    ));
}

#[test]
fn the_example_config_is_valid() {
    let text = include_str!("../../../deploy/config.example.toml");
    let config = parse(text).expect("deploy/config.example.toml is valid");
    assert_eq!(config.github.path.to_string(), "owner/repo");
    assert_eq!(
        config.lxd.endpoint,
        LxdEndpoint::Socket(PathBuf::from("/var/lib/incus/unix.socket"))
    );
    assert_eq!(config.lxd.storage_path, Some(PathBuf::from("/storage/ram")));
    assert!(config.proxy.http.is_none());
    assert!(config.pools.is_empty(), "the single-pool form");
    assert_eq!(config.server.public_url, None);
}

#[test]
fn github_paths() {
    let check = |path: &str, expected: Option<GitHubPath>| {
        let text = format!("[github]\npath = \"{path}\"\ntoken = \"t\"\n");
        match (parse(&text), expected) {
            (Ok(config), Some(expected)) => assert_eq!(config.github.path, expected, "{path}"),
            (Err(err), None) => assert_eq!(err.keys(), ["github.path"], "{path}"),
            (result, expected) => panic!("{path}: {result:?} vs {expected:?}"),
        }
    };
    check(
        "owner/repo",
        Some(GitHubPath::Repo {
            owner: "owner".into(),
            repo: "repo".into(),
        }),
    );
    check(
        "Octo-Org/my_app.rs",
        Some(GitHubPath::Repo {
            owner: "Octo-Org".into(),
            repo: "my_app.rs".into(),
        }),
    );
    check(
        "octo-org",
        Some(GitHubPath::Org {
            org: "octo-org".into(),
            group: "default".into(),
        }),
    );
    check(
        "enterprises/acme",
        Some(GitHubPath::Enterprise {
            slug: "acme".into(),
            group: "default".into(),
        }),
    );
    check("", None);
    check("a/b/c", None);
    check("owner/", None);
    check("/repo", None);
    check("own er/repo", None);
    check("owner/..", None);
    check("-owner", None);
}

#[test]
fn runner_group_applies_to_organisations() {
    let org = "[github]\npath = \"octo-org\"\nrunner_group = \"gpu\"\ntoken = \"t\"\n";
    assert_eq!(parse(org).expect("valid").github.path.group(), Some("gpu"));
    let enterprise =
        "[github]\npath = \"enterprises/acme\"\nrunner_group = \"gpu\"\ntoken = \"t\"\n";
    assert_eq!(
        parse(enterprise).expect("valid").github.path,
        GitHubPath::Enterprise {
            slug: "acme".into(),
            group: "gpu".into()
        }
    );
    let repo = "[github]\npath = \"o/r\"\nrunner_group = \"default\"\ntoken = \"t\"\n";
    assert_eq!(parse(repo).expect("valid").github.path.group(), None);
    let repo = "[github]\npath = \"o/r\"\nrunner_group = \"gpu\"\ntoken = \"t\"\n";
    assert_eq!(invalid_keys(repo), ["github.runner_group"]);
}

#[test]
fn secrets_come_from_key_file_or_env_in_that_order() {
    let mut env = TestEnv::standard();
    env.vars
        .insert("RUNNER_MANAGER_GITHUB_TOKEN".into(), "ghp_fromenv".into());
    env.vars
        .insert("RUNNER_MANAGER_API_TOKEN".into(), "api-from-env".into());
    env.vars.insert(
        "RUNNER_MANAGER_WEBHOOK_SECRET".into(),
        "hook-from-env".into(),
    );

    let token_of = |config: &Config| match &config.github.credentials {
        GitHubCredentials::Token { token, source } => (token.expose().to_owned(), source.clone()),
        GitHubCredentials::App { .. } => panic!("expected a token"),
    };
    let from_env = parse_with("[github]\npath = \"o/r\"\ntoken = \"\"\n", &env).expect("valid");
    assert_eq!(
        token_of(&from_env),
        (
            "ghp_fromenv".into(),
            SecretSource::Env("RUNNER_MANAGER_GITHUB_TOKEN")
        )
    );
    let server_secrets = |config: &Config| {
        let expose =
            |secret: Option<&runner_manager::secret::Secret>| secret.map(|s| s.expose().to_owned());
        (
            expose(config.server.api_token.as_ref()),
            expose(config.server.webhook_secret.as_ref()),
        )
    };
    let both = |api: &str, hook: &str| (Some(api.to_owned()), Some(hook.to_owned()));
    assert_eq!(
        server_secrets(&from_env),
        both("api-from-env", "hook-from-env")
    );

    let from_file = parse_with(
        "[github]\npath = \"o/r\"\ntoken_file = \"github-token\"\n",
        &env,
    )
    .expect("valid");
    assert_eq!(
        token_of(&from_file),
        (
            "ghp_fromfile".into(),
            SecretSource::File(PathBuf::from("/etc/rm/github-token"))
        )
    );

    let from_key = parse_with(MINIMAL, &env).expect("valid");
    assert_eq!(token_of(&from_key).0, "ghp_SECRET_TOKEN_VALUE");

    let server = "[server]\napi_token_file = \"/etc/rm/secret\"\nwebhook_secret = \"inline\"\n";
    let config = parse_with(&format!("{MINIMAL}{server}"), &env).expect("valid");
    assert_eq!(server_secrets(&config), both("s3cret-from-file", "inline"));

    // No token anywhere.
    assert_eq!(invalid_keys("[github]\npath = \"o/r\"\n"), ["github.token"]);
}

#[test]
fn github_app_credentials() {
    let text = "[github]\npath = \"octo-org\"\n[github.app]\napp_id = 12\nprivate_key_file = \"app.pem\"\n";
    let config = parse(text).expect("valid");
    match &config.github.credentials {
        GitHubCredentials::App {
            app_id,
            installation_id,
            private_key,
            private_key_file,
        } => {
            assert_eq!((*app_id, *installation_id), (12, None));
            assert!(private_key.expose().contains("PRIVATE KEY"));
            assert_eq!(private_key_file, &PathBuf::from("/etc/rm/app.pem"));
        }
        other => panic!("expected an App, got {other:?}"),
    }
    let not_pem =
        "[github]\npath = \"octo-org\"\n[github.app]\napp_id = 12\nprivate_key_file = \"secret\"\n";
    assert_eq!(invalid_keys(not_pem), ["github.app.private_key_file"]);
}

#[test]
fn lxd_endpoints_and_urls() {
    let https = format!(
        "{MINIMAL}[lxd]\nurl = \"https://lxd.test:8443\"\nclient_cert = \"lxd.crt\"\nclient_key = \"/etc/rm/lxd.key\"\n"
    );
    assert_eq!(
        parse(&https).expect("valid").lxd.endpoint,
        LxdEndpoint::Https {
            url: "https://lxd.test:8443/".parse().expect("a URL"),
            client_cert: PathBuf::from("/etc/rm/lxd.crt"),
            client_key: PathBuf::from("/etc/rm/lxd.key"),
            server_cert: None,
        }
    );
    assert_eq!(
        invalid_keys(&format!(
            "{MINIMAL}[lxd]\nsocket = \"/s\"\nurl = \"https://h:8443\"\n"
        )),
        ["lxd.url"]
    );
    assert_eq!(
        invalid_keys(&format!("{MINIMAL}[lxd]\nurl = \"https://h:8443\"\n")),
        ["lxd.client_cert", "lxd.client_key"]
    );
    assert_eq!(
        invalid_keys(&format!(
            "{MINIMAL}[lxd]\nclient_key = \"/etc/rm/lxd.key\"\n"
        )),
        ["lxd.client_cert"]
    );

    let ghes =
        "[github]\npath = \"o/r\"\ntoken = \"t\"\napi_url = \"https://ghe.example.com/api/v3\"\n";
    let config = parse(ghes).expect("valid");
    assert_eq!(config.github.web_url.as_str(), "https://ghe.example.com/");
    let sim = "[github]\npath = \"o/r\"\ntoken = \"t\"\napi_url = \"http://127.0.0.1:8080\"\n";
    assert_eq!(
        parse(sim).expect("valid").github.web_url.as_str(),
        "http://127.0.0.1:8080/"
    );
}

#[test]
fn proxy_credentials_are_masked() {
    let text = format!("{MINIMAL}[proxy]\nhttp = \"http://user:PROXYPASS@proxy:3128\"\nno_proxy = \"localhost, 10.0.0.0/8\"\n");
    let config = parse(&text).expect("valid");
    let http = config.proxy.http.as_ref().expect("set");
    assert_eq!(http.expose(), "http://user:PROXYPASS@proxy:3128");
    assert_eq!(http.to_string(), "http://user:redacted@proxy:3128");
    assert!(!format!("{config:?}").contains("PROXYPASS"));
    assert!(!format!("{:?}", config.summary()).contains("PROXYPASS"));
    assert_eq!(
        config.proxy.no_proxy.as_deref(),
        Some("localhost,10.0.0.0/8")
    );
}

#[test]
fn secrets_never_appear_in_debug_errors_or_summary() {
    let text = format!(
        "{MINIMAL}[server]\napi_token = \"API_SECRET_VALUE\"\nwebhook_secret = \"HOOK_SECRET_VALUE\"\n[policy]\nurl = \"http://policy:8080\"\nservice_token = \"POLICY_SECRET_VALUE\"\n"
    );
    let config = parse(&text).expect("valid");
    let shown = format!(
        "{config:?}\n{:?}\n{}",
        config.summary(),
        serde_json::to_string(&config.summary()).expect("json")
    );
    for secret in [
        "ghp_SECRET_TOKEN_VALUE",
        "API_SECRET_VALUE",
        "HOOK_SECRET_VALUE",
        "POLICY_SECRET_VALUE",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    // Wrong types on secret keys do not echo the value.
    for (key, line) in [
        (
            "github.token",
            "[github]\npath = \"o/r\"\ntoken = 98765432123\n",
        ),
        (
            "server.api_token",
            "[server]\napi_token = [\"ARRAY_SECRET\"]\n",
        ),
        ("proxy.http", "[proxy]\nhttp = 98765432123\n"),
    ] {
        let text = if key == "github.token" {
            line.to_owned()
        } else {
            format!("{MINIMAL}{line}")
        };
        let err = parse(&text).expect_err("invalid");
        assert_eq!(err.keys(), [key]);
        let message = err.to_string();
        assert!(
            !message.contains("98765432123") && !message.contains("ARRAY_SECRET"),
            "{message}"
        );
    }
    // A syntax error does not print the offending line.
    let err = parse("[github]\npath = \"o/r\"\ntoken = \"ghp_UNTERMINATED\n").expect_err("syntax");
    assert!(
        matches!(err, ConfigError::Syntax { line: 3, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("ghp_UNTERMINATED"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Config → manager: the values reach the manager and the GitHub client as they were parsed
// ---------------------------------------------------------------------------------------------

/// The install settings the manager builds from its config (as `RunnerManager::new` does).
fn install_settings(config: &Config) -> InstallSettings {
    let manager = runner_manager::backend::manager_config(config);
    InstallSettings {
        registration_url: format!("{}/{}", manager.web_url, manager.path.path()),
        path: manager.path.clone(),
        labels: config.runner_labels(),
        proxies: config.proxy.clone(),
        policy_url: None,
        ready_timeout: Duration::from_secs(60),
    }
}

/// `enterprises/acme` is an enterprise (not a repository `enterprises`/`acme`), and its runner
/// group reaches `config.sh --runnergroup` in token mode.
#[test]
fn enterprise_scope_keeps_its_runner_group_down_to_config_sh() {
    let text = "[github]\npath = \"enterprises/acme\"\nrunner_group = \"gpu-fleet\"\ntoken = \"t\"\n[runners]\nregistration = \"token\"\n";
    let config = parse(text).expect("valid");
    let manager = runner_manager::backend::manager_config(&config);
    assert_eq!(manager.registration_mode, RegistrationMode::Token);
    assert_eq!(
        manager.path,
        GitHubPath::Enterprise {
            slug: "acme".into(),
            group: "gpu-fleet".into()
        }
    );
    let settings = install_settings(&config);
    assert_eq!(
        settings.registration_url,
        "https://github.com/enterprises/acme"
    );
    let name = Owner::new("github-runner", 0)
        .expect("valid")
        .new_runner_name();
    let script = configure_script(&settings, &name);
    assert!(
        script.contains("--runnergroup gpu-fleet"),
        "no runner group in:\n{script}"
    );
    assert!(script.contains("--url https://github.com/enterprises/acme"));
    // The GitHub client gets the enterprise scope, built without re-parsing a string.
    assert_eq!(
        runner_manager::backend::github_client_config(&config).scope,
        github::Scope::Enterprise {
            slug: "acme".into()
        }
    );
    let summary = config.summary();
    assert_eq!(
        (
            summary.github_scope,
            summary.github_path.as_str(),
            summary.runner_group.as_str()
        ),
        ("enterprise", "enterprises/acme", "gpu-fleet")
    );
}

const PROXY_TEXT: &str = "[proxy]\nhttp = \"http://proxy-user:PROXY_S3CRET@127.0.0.1:3128\"\nhttps = \"http://proxy-user:PROXY_S3CRET@127.0.0.1:3129/\"\nno_proxy = \"localhost\"\n";

/// The proxy password reaches the GitHub client and the runner's environment, unmasked, and
/// nothing else: not Debug, not the summary that `check-config` prints.
#[test]
fn authenticated_proxy_reaches_github_and_runners_but_is_shown_nowhere() {
    let config = parse(&format!("{MINIMAL}{PROXY_TEXT}")).expect("valid");
    let full = "http://proxy-user:PROXY_S3CRET@127.0.0.1:3128";

    let client = runner_manager::backend::github_client_config(&config);
    let proxy = client.proxy.as_ref().expect("a proxy for github");
    assert_eq!(proxy.http.as_deref(), Some(full));
    assert_eq!(
        proxy.https.as_deref(),
        Some("http://proxy-user:PROXY_S3CRET@127.0.0.1:3129")
    );
    assert_eq!(proxy.no_proxy.as_deref(), Some("localhost"));

    let settings = install_settings(&config);
    let env = runner_env(&settings);
    assert!(env.contains(&format!("http_proxy={full}\n")), "{env}");
    assert!(env.contains(&format!("HTTP_PROXY={full}\n")), "{env}");
    let etc = etc_environment(&settings.proxies);
    assert!(
        etc.contains("https_proxy=\"http://proxy-user:PROXY_S3CRET@127.0.0.1:3129\""),
        "{etc}"
    );

    let summary = config.summary();
    let shown = format!(
        "{config:?}\n{:?}\n{}\n{}\n{:?}\n{:?}",
        summary,
        serde_json::to_string(&summary).expect("json"),
        runner_manager::output::render_config_summary("config.toml", &summary),
        runner_manager::backend::manager_config(&config),
        settings,
    );
    assert!(!shown.contains("PROXY_S3CRET"), "password shown:\n{shown}");
    assert!(
        shown.contains("http://proxy-user:redacted@127.0.0.1:3128"),
        "{shown}"
    );
}

/// The GitHub client really authenticates to the proxy with the configured password.
#[tokio::test]
async fn github_client_authenticates_to_the_proxy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let text = format!(
        "[github]\npath = \"octo/app\"\ntoken = \"t\"\napi_url = \"http://api.github.test\"\n[proxy]\nhttp = \"http://proxy-user:PROXY_S3CRET@127.0.0.1:{port}\"\n"
    );
    let config = parse(&text).expect("valid");
    let proxy = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed early");
            head.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"total_count":0,"runners":[]}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.expect("write");
        String::from_utf8_lossy(&head).to_lowercase()
    });
    let client = github::Client::new(runner_manager::backend::github_client_config(&config))
        .expect("client");
    let runners = client.list_runners(None).await.expect("through the proxy");
    assert!(runners.is_empty());
    let head = proxy.await.expect("proxy task");
    assert!(
        head.starts_with("get http://api.github.test/repos/octo/app/actions/runners"),
        "{head}"
    );
    // base64("proxy-user:PROXY_S3CRET")
    assert!(
        head.contains("proxy-authorization: basic chjvehktdxnlcjpquk9ywv9tm0nsrvq="),
        "no proxy credentials in:\n{head}"
    );
}

// ---------------------------------------------------------------------------------------------
// The error matrix
// ---------------------------------------------------------------------------------------------

/// A base config in which every key can be set without tripping another rule.
fn base_table() -> toml::Table {
    toml::from_str(
        r#"
        [github]
        path = "octo-org"
        token = "ghp_SECRET_TOKEN_VALUE"
        "#,
    )
    .expect("valid TOML")
}

struct Case {
    key: &'static str,
    /// A value of the wrong type.
    wrong_type: &'static str,
    /// A value of the right type that is not allowed; `None` for booleans.
    wrong_value: Option<&'static str>,
    /// Extra keys the case needs (TOML `key = value` pairs with full paths).
    with: &'static [(&'static str, &'static str)],
    /// Keys of the base to remove.
    without: &'static [&'static str],
}

const fn case(key: &'static str, wrong_type: &'static str, wrong_value: &'static str) -> Case {
    Case {
        key,
        wrong_type,
        wrong_value: Some(wrong_value),
        with: &[],
        without: &[],
    }
}

/// A case of a boolean key: no value of the right type is wrong.
const fn boolean(key: &'static str, wrong_type: &'static str) -> Case {
    Case {
        wrong_value: None,
        ..case(key, wrong_type, "")
    }
}

/// The base's token, which a GitHub App replaces.
const NO_TOKEN: &[&str] = &["github.token"];
/// A GitHub App's keys.
const APP: &[(&str, &str)] = &[
    ("github.app.app_id", "1"),
    ("github.app.private_key_file", "\"app.pem\""),
];

impl Case {
    /// The case in a config that authenticates as a GitHub App (no token).
    const fn for_app(self) -> Self {
        self.with(APP).without(NO_TOKEN)
    }

    /// The case with the extra keys `with`.
    const fn with(self, with: &'static [(&'static str, &'static str)]) -> Self {
        Self { with, ..self }
    }

    /// The case without the base's keys `without`.
    const fn without(self, without: &'static [&'static str]) -> Self {
        Self { without, ..self }
    }
}

fn cases() -> Vec<Case> {
    const POLICY_URL: &[(&str, &str)] = &[("policy.url", "\"http://policy:8080\"")];
    const API_TOKEN_FILE: &[(&str, &str)] = &[("server.api_token_file", "\"/etc/rm/secret\"")];
    const HOOK_SECRET_FILE: &[(&str, &str)] =
        &[("server.webhook_secret_file", "\"/etc/rm/secret\"")];
    const LXD_URL: &[(&str, &str)] = &[
        ("lxd.url", "\"https://lxd.test:8443\""),
        ("lxd.client_cert", "\"lxd.crt\""),
        ("lxd.client_key", "\"lxd.key\""),
    ];
    vec![
        case("app_name", "1", "\"Bad Name\""),
        case("unit", "\"0\"", "-1"),
        case("state_dir", "1", "\"\""),
        case("github", "1", "{ path = \"o/r\" }"),
        case("github.path", "1", "\"a/b/c\""),
        case("github.runner_group", "1", "\"\""),
        case("github.token", "1", "\"\""),
        case("github.token_file", "1", "\"/missing\"").without(NO_TOKEN),
        case("github.api_url", "1", "\"ftp://x\""),
        case("github.web_url", "1", "\"not a url\""),
        case(
            "github.app",
            "1",
            "{ app_id = 1, private_key_file = \"app.pem\" }",
        ),
        case("github.app.app_id", "\"1\"", "0").for_app(),
        case("github.app.installation_id", "\"2\"", "0").for_app(),
        case("github.app.private_key_file", "1", "\"/missing.pem\"").for_app(),
        case("lxd", "1", "{ socket = \"\" }"),
        case("lxd.socket", "1", "\"\""),
        case("lxd.url", "1", "\"http://lxd.test:8443\"").with(LXD_URL),
        case("lxd.client_cert", "1", "\"/missing.crt\"").with(LXD_URL),
        case("lxd.client_key", "1", "\"/missing.key\"").with(LXD_URL),
        case("lxd.server_cert", "1", "\"/missing.crt\"").with(LXD_URL),
        case("lxd.image", "1", "\"two words\""),
        case("lxd.instance_type", "1", "\"vm\""),
        case("lxd.storage_path", "1", "\"\""),
        case("lxd.target", "1", "\"\""),
        case("runners", "1", "{ quantity = -1 }"),
        case("runners.quantity", "\"1\"", "10001"),
        case("runners.cpu", "\"2\"", "0"),
        case("runners.memory", "7", "\"7XB\""),
        case("runners.disk", "10", "\"0GiB\""),
        case("runners.labels", "\"gpu\"", "[\"has space\"]"),
        case("runners.registration", "1", "\"oauth\""),
        case("proxy", "1", "{ http = \"socks5://proxy\" }"),
        case("proxy.http", "1", "\"socks5://proxy:1080\""),
        case("proxy.https", "1", "\"not a url\""),
        case("proxy.no_proxy", "1", "\"a\\tb\""),
        case("policy", "1", "{ url = \"ftp://x\" }"),
        case("policy.url", "1", "\"ftp://policy\""),
        case("policy.service_token", "1", "\"orphan-token\""),
        case("policy.service_token_file", "1", "\"/missing\"").with(POLICY_URL),
        case("metrics", "1", "{ events_log = \"\" }"),
        boolean("metrics.issue_metrics", "\"yes\""),
        case("metrics.events_log", "1", "\"\""),
        case("server", "1", "{ listen = \"\" }"),
        case("server.listen", "9464", "\"localhost:9464\""),
        case("server.api_token", "1", "\"also-inline\"").with(API_TOKEN_FILE),
        case("server.api_token_file", "1", "\"/etc/rm/empty\""),
        case("server.webhook_secret", "1", "\"also-inline\"").with(HOOK_SECRET_FILE),
        case("server.webhook_secret_file", "1", "\"/missing\""),
        case("server.reconcile_interval_seconds", "\"300\"", "0"),
        case("server.public_url", "1", "\"ftp://hooks.example.com\""),
        case("server.hook_id", "\"1\"", "0"),
        case("demand", "1", "{ queued_stale_seconds = 0 }"),
        case("demand.queued_stale_seconds", "\"600\"", "0"),
        case("demand.max_idle_age_seconds", "\"0\"", "60"),
        case("demand.delivery_check_seconds", "\"300\"", "5"),
        case("demand.queued_expiry_seconds", "\"86400\"", "30"),
        case("images", "1", "{ canary_percent = 0 }"),
        case("images.canary_percent", "\"20\"", "101"),
        case("images.promote_after", "\"1\"", "0"),
        case("images.check_seconds", "\"3600\"", "10"),
        case("cluster", "1", "{ placement = \"fill\" }"),
        case("cluster.placement", "1", "\"fill\""),
        case("cluster.overcommit_cpu", "\"4\"", "0.0"),
        case("cluster.overcommit_memory", "\"1\"", "-1.0"),
        case("scaleset", "1", "{ poll_timeout_seconds = 1 }"),
        case("scaleset.standby_backoff_min_ms", "\"1\"", "0"),
        case("scaleset.standby_backoff_max_ms", "\"1\"", "1"),
        case("scaleset.error_backoff_min_ms", "\"1\"", "0"),
        case("scaleset.error_backoff_max_ms", "\"1\"", "1"),
        case("scaleset.poll_timeout_seconds", "\"120\"", "1"),
        case("ha", "1", "{ lease_seconds = 1 }"),
        boolean("ha.enabled", "\"yes\""),
        case("ha.lease_seconds", "\"15\"", "1"),
        case("ha.renew_seconds", "\"5\"", "0"),
        case("ha.manager_id", "1", "\"has space\""),
    ]
}

fn set(table: &mut toml::Table, key: &str, value: &str) {
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .expect("test value is TOML")
        .remove("v")
        .expect("v");
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut current = table;
    for part in parts {
        current = current
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("a table on the way");
    }
    current.insert(last.to_owned(), value);
}

fn remove(table: &mut toml::Table, key: &str) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut current = table;
    for part in parts {
        current = current
            .get_mut(part)
            .and_then(toml::Value::as_table_mut)
            .expect("a table on the way");
    }
    current.remove(last);
}

fn case_text(case: &Case, value: &str) -> String {
    let mut table = base_table();
    for key in case.without {
        remove(&mut table, key);
    }
    for (key, extra) in case.with {
        set(&mut table, key, extra);
    }
    set(&mut table, case.key, value);
    toml::to_string(&table).expect("serializable")
}

#[test]
fn error_matrix_names_every_key() {
    let mut report = String::new();
    for case in cases() {
        let mut values = vec![("wrong type", case.wrong_type)];
        values.extend(case.wrong_value.map(|value| ("wrong value", value)));
        for (kind, value) in values {
            let text = case_text(&case, value);
            let err = parse(&text).expect_err(&format!(
                "{} = {value} ({kind}) must be rejected:\n{text}",
                case.key
            ));
            let keys = err.keys();
            assert!(
                keys.iter().any(|k| *k == case.key
                    || k.starts_with(&format!("{}.", case.key))
                    || k.starts_with(&format!("{}[", case.key))),
                "{} = {value} ({kind}): error names {keys:?}: {err}",
                case.key
            );
            assert!(!err.to_string().contains("ghp_SECRET_TOKEN_VALUE"));
            report.push_str(&format!("{} = {value} ({kind})\n    {err}\n", case.key));
        }
    }
    insta::assert_snapshot!(report);
}

#[test]
fn unknown_keys_are_rejected_everywhere() {
    let mut report = String::new();
    for section in [
        "",
        "github.",
        "github.app.",
        "lxd.",
        "runners.",
        "proxy.",
        "policy.",
        "metrics.",
        "server.",
        "demand.",
        "images.",
        "cluster.",
        "scaleset.",
        "ha.",
    ] {
        let key = format!("{section}colour");
        let mut table = base_table();
        if section == "github.app." {
            for key in NO_TOKEN {
                remove(&mut table, key);
            }
            for (key, value) in APP {
                set(&mut table, key, value);
            }
        }
        set(&mut table, &key, "\"blue\"");
        let text = toml::to_string(&table).expect("serializable");
        let err = parse(&text).expect_err("unknown key");
        assert_eq!(err.keys(), [key.as_str()], "{err}");
        report.push_str(&format!("{err}\n"));
    }
    insta::assert_snapshot!(report);
}

/// Keys that are not bare TOML keys are named the way TOML writes them, never as an empty name.
#[test]
fn unknown_quoted_keys_are_named_quoted() {
    for (text, key) in [
        ("\"\" = 1\n", "\"\""),
        ("\"a.b\" = 1\n", "\"a.b\""),
        ("[lxd]\n\"\" = 1\n", "lxd.\"\""),
        ("[runners]\n\"x y\" = 1\n", "runners.\"x y\""),
    ] {
        let mut full = format!("{text}\n");
        if !text.starts_with('[') {
            full.push_str("[github]\npath = \"o/r\"\ntoken = \"t\"\n");
        } else {
            full = format!("[github]\npath = \"o/r\"\ntoken = \"t\"\n{text}");
        }
        let err = parse(&full).expect_err("unknown key");
        assert_eq!(err.keys(), [key], "{err}");
    }
}

/// Every key in deploy/config.example.toml (set or commented out) is in the matrix, and back.
#[test]
fn matrix_covers_every_documented_key() {
    let example = include_str!("../../../deploy/config.example.toml");
    let mut section = String::new();
    let mut documented = BTreeSet::new();
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
            documented.insert(name.to_owned());
        } else if let Some((key, _)) = line.split_once(" = ") {
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                documented.insert(format!("{section}{key}"));
            }
        }
    }
    let tested: BTreeSet<String> = cases().iter().map(|c| c.key.to_owned()).collect();
    assert_eq!(documented, tested);
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

const KEYS: &[&str] = &[
    "app_name",
    "unit",
    "state_dir",
    "github.path",
    "github.runner_group",
    "github.token",
    "github.token_file",
    "github.api_url",
    "github.web_url",
    "github.app.app_id",
    "github.app.installation_id",
    "github.app.private_key_file",
    "lxd.socket",
    "lxd.url",
    "lxd.client_cert",
    "lxd.client_key",
    "lxd.server_cert",
    "lxd.image",
    "lxd.instance_type",
    "lxd.storage_path",
    "lxd.target",
    "runners.quantity",
    "runners.cpu",
    "runners.memory",
    "runners.disk",
    "runners.labels",
    "runners.registration",
    "proxy.http",
    "proxy.https",
    "proxy.no_proxy",
    "policy.url",
    "policy.service_token",
    "policy.service_token_file",
    "metrics.issue_metrics",
    "metrics.events_log",
    "server.listen",
    "server.api_token",
    "server.api_token_file",
    "server.webhook_secret",
    "server.webhook_secret_file",
    "server.reconcile_interval_seconds",
    "server.public_url",
    "server.hook_id",
    "demand.queued_stale_seconds",
    "demand.max_idle_age_seconds",
    "demand.delivery_check_seconds",
    "demand.queued_expiry_seconds",
    "github.colour",
    "runners.colour",
    "colour",
];

fn value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..20_000).prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-zA-Z0-9/:._ -]{0,20}".prop_map(|s| format!("{s:?}")),
        prop::sample::select(vec![
            "\"7GiB\"",
            "\"owner/repo\"",
            "\"org\"",
            "\"https://h:1\"",
            "\"container\"",
            "\"jit\"",
            "\"127.0.0.1:1\"",
            "[\"a\", \"b\"]",
            "[1]",
            "{ a = 1 }",
            "\"app.pem\"",
            "\"/etc/rm/secret\"",
            "\"\"",
        ])
        .prop_map(str::to_owned),
    ]
}

fn top_level_names() -> BTreeSet<&'static str> {
    [
        "app_name",
        "unit",
        "state_dir",
        "github",
        "lxd",
        "runners",
        "proxy",
        "policy",
        "metrics",
        "server",
        "demand",
        "pools",
        "colour",
    ]
    .into_iter()
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_configs_never_panic_and_errors_name_keys(
        mutations in prop::collection::vec((prop::sample::select(KEYS), value_strategy()), 1..6)
    ) {
        let mut table = base_table();
        for (key, value) in &mutations {
            // A key cannot go below a non-table value: skip those (TOML would not express them).
            let parent_is_scalar = {
                let mut current = Some(&table);
                let parts: Vec<&str> = key.split('.').collect();
                let mut scalar = false;
                for part in &parts[..parts.len() - 1] {
                    match current.and_then(|t| t.get(*part)) {
                        Some(toml::Value::Table(t)) => current = Some(t),
                        Some(_) => { scalar = true; break; }
                        None => current = None,
                    }
                }
                scalar
            };
            if !parent_is_scalar {
                set(&mut table, key, value);
            }
        }
        let text = toml::to_string(&table).expect("serializable");
        match parse(&text) {
            Ok(config) => {
                prop_assert!(config.runners.quantity <= 10_000);
                let shown = format!("{:?}", config);
                prop_assert!(!shown.contains("ghp_SECRET_TOKEN_VALUE"));
            }
            Err(ConfigError::Invalid(errors)) => {
                prop_assert!(!errors.is_empty());
                for error in &errors {
                    let head = error.key.split(['.', '[']).next().unwrap_or_default();
                    prop_assert!(top_level_names().contains(head), "error without a key: {error}");
                    prop_assert!(!error.reason.is_empty());
                }
                prop_assert!(!ConfigError::Invalid(errors).to_string().contains("ghp_SECRET_TOKEN_VALUE"));
            }
            Err(other) => prop_assert!(false, "unexpected error kind for generated TOML: {other}"),
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse(&text);
    }
}
