//! [`SimConfig`]: everything the simulator is started with, with test-friendly defaults.

use std::net::SocketAddr;
use std::time::Duration;

use crate::scaleset::ScaleSetConfig;
use crate::secret::Secret;

/// The well-known test App private key (PKCS#1 PEM). Test use only: it is public.
pub const TEST_APP_PRIVATE_KEY_PEM: &str = include_str!("keys/test-app.private.pem");
/// The public half of [`TEST_APP_PRIVATE_KEY_PEM`].
pub const TEST_APP_PUBLIC_KEY_PEM: &str = include_str!("keys/test-app.public.pem");
/// The name GitHub gives the default runner group of an organisation or enterprise (and the
/// implicit group of a repository). actions/runner compares group names ignoring case.
pub const DEFAULT_GROUP_NAME: &str = "Default";
/// The default personal access token accepted by the simulator.
pub const DEFAULT_TOKEN: &str = "ghp_simDefaultToken0000000000000000000000";

/// A runner group of an organization or enterprise.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// Group id (the default group is usually 1).
    pub id: u64,
    /// Group name.
    pub name: String,
    /// Whether this is the scope's default group (used when `config.sh` names none).
    pub default: bool,
    /// `None`: all repositories may use it (`visibility: all`); `Some`: only these `owner/repo`.
    pub selected_repositories: Option<Vec<String>>,
}

impl GroupConfig {
    /// A group visible to all repositories.
    pub fn new(id: u64, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            default: false,
            selected_repositories: None,
        }
    }

    /// An organisation's or enterprise's default group as GitHub creates it: id 1, named
    /// `Default`, visible to all repositories.
    pub fn default_group() -> Self {
        Self::new(1, DEFAULT_GROUP_NAME).as_default()
    }

    /// Marks the group as the default one.
    pub fn as_default(mut self) -> Self {
        self.default = true;
        self
    }

    /// Restricts the group to the given repositories (`owner/repo`).
    pub fn selected(mut self, repos: &[&str]) -> Self {
        self.selected_repositories = Some(repos.iter().map(|r| (*r).to_owned()).collect());
        self
    }
}

/// An organization or enterprise and its runner groups.
#[derive(Clone, Debug)]
pub struct OwnerConfig {
    /// Login (organization) or slug (enterprise).
    pub name: String,
    /// Numeric id (an enterprise is addressable by slug or id).
    pub id: u64,
    /// Runner groups.
    pub groups: Vec<GroupConfig>,
}

impl OwnerConfig {
    /// An owner with the single default group, named as GitHub names it: `Default`, id 1.
    pub fn new(name: impl Into<String>, id: u64) -> Self {
        Self {
            name: name.into(),
            id,
            groups: vec![GroupConfig::default_group()],
        }
    }
}

/// An installation of the App on an account (organization or user).
#[derive(Clone, Debug)]
pub struct InstallationConfig {
    /// Installation id.
    pub id: u64,
    /// Account login; the installation covers this org and every configured repo it owns.
    pub account: String,
}

/// A GitHub App the simulator accepts JWTs from.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// The App id (accepted as `iss`).
    pub app_id: u64,
    /// The client id (also accepted as `iss`).
    pub client_id: String,
    /// RSA public key (PEM) that verifies the RS256 JWT.
    pub public_key_pem: String,
    /// Installations.
    pub installations: Vec<InstallationConfig>,
    /// Lifetime of issued `ghs_` installation tokens (GitHub: 1 hour).
    pub token_lifetime: Duration,
}

impl AppConfig {
    /// The test App: id 12345, client id `Iv1.sim`, key [`TEST_APP_PUBLIC_KEY_PEM`],
    /// installations 42 (`octo-org`) and 43 (`octo`).
    pub fn test_app() -> Self {
        Self {
            app_id: 12345,
            client_id: "Iv1.simclientid00001".to_owned(),
            public_key_pem: TEST_APP_PUBLIC_KEY_PEM.to_owned(),
            installations: vec![
                InstallationConfig {
                    id: 42,
                    account: "octo-org".to_owned(),
                },
                InstallationConfig {
                    id: 43,
                    account: "octo".to_owned(),
                },
            ],
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Where `workflow_job` webhooks go.
#[derive(Clone, Debug)]
pub struct WebhookTarget {
    /// Receiver URL.
    pub url: String,
    /// HMAC secret for `X-Hub-Signature-256`.
    pub secret: Secret,
}

/// Simulator configuration. `SimConfig::default()` is ready for tests; adjust with the `with_*` methods.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address to bind (default `127.0.0.1:0`; use `0.0.0.0:PORT` for containers).
    pub listen: SocketAddr,
    /// URL runners and downloads should use (`http://HOST:PORT`); default: the request's `Host`.
    pub public_url: Option<String>,
    /// The accepted personal access token (rotatable at runtime).
    pub token: Secret,
    /// Configured repositories (`owner/repo`).
    pub repos: Vec<String>,
    /// Organizations.
    pub orgs: Vec<OwnerConfig>,
    /// Enterprises.
    pub enterprises: Vec<OwnerConfig>,
    /// Primary rate limit per identity and window (GitHub: 5,000 per hour for a PAT).
    pub rate_limit: u32,
    /// Length of the primary rate-limit window.
    pub rate_limit_window: Duration,
    /// Content-creating requests (token and JIT POSTs) allowed per minute and identity.
    pub secondary_limit_per_minute: u32,
    /// A runner that has not polled for this long is `offline`.
    pub silence_timeout: Duration,
    /// Lifetime of registration and remove tokens (GitHub: 1 hour).
    pub token_lifetime: Duration,
    /// The runner tarball served by the downloads endpoint.
    pub runner_tarball: Option<Vec<u8>>,
    /// The version announced for the tarball (and reported by runners).
    pub runner_version: String,
    /// The `sha256_checksum` the downloads endpoint publishes instead of the tarball's real
    /// one (tampering tests). Default `None`: the real checksum.
    pub runner_tarball_sha256: Option<String>,
    /// The GitHub App, if any (default: [`AppConfig::test_app`]).
    pub app: Option<AppConfig>,
    /// Initial webhook target.
    pub webhook: Option<WebhookTarget>,
    /// How long list answers are served from a cache, so `status` and `busy` lag as on GitHub
    /// (about 60 s there). Default: zero, no cache.
    pub list_cache: Duration,
    /// An idle runner offline this long is deregistered (GitHub: 14 days).
    pub offline_removal: Duration,
    /// The same for ephemeral runners (GitHub: 1 day).
    pub ephemeral_offline_removal: Duration,
    /// The runner scale-set protocol: acquire mode, token lifetimes, long-poll wait, timeouts.
    pub scaleset: ScaleSetConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            token: Secret::new(DEFAULT_TOKEN),
            repos: vec!["octo/app".to_owned()],
            orgs: vec![OwnerConfig::new("octo-org", 100)],
            enterprises: vec![OwnerConfig::new("acme", 7)],
            rate_limit: 5000,
            rate_limit_window: Duration::from_secs(3600),
            secondary_limit_per_minute: 80,
            silence_timeout: Duration::from_secs(30),
            token_lifetime: Duration::from_secs(3600),
            runner_tarball: None,
            runner_version: "2.329.0".to_owned(),
            runner_tarball_sha256: None,
            app: Some(AppConfig::test_app()),
            webhook: None,
            list_cache: Duration::ZERO,
            offline_removal: Duration::from_secs(14 * 24 * 3600),
            ephemeral_offline_removal: Duration::from_secs(24 * 3600),
            scaleset: ScaleSetConfig::default(),
        }
    }
}

impl SimConfig {
    /// Binds this address.
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Sets the URL handed to runners (JIT `serverUrl`, download URLs).
    pub fn with_public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Sets the accepted personal access token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Secret::new(token.into());
        self
    }

    /// Adds a repository (`owner/repo`).
    pub fn with_repo(mut self, repo: impl Into<String>) -> Self {
        let repo = repo.into();
        if !self.repos.contains(&repo) {
            self.repos.push(repo);
        }
        self
    }

    /// Adds an organization (or replaces the one with the same name).
    pub fn with_org(mut self, org: OwnerConfig) -> Self {
        self.orgs.retain(|o| o.name != org.name);
        self.orgs.push(org);
        self
    }

    /// Adds an enterprise (or replaces the one with the same slug).
    pub fn with_enterprise(mut self, enterprise: OwnerConfig) -> Self {
        self.enterprises.retain(|o| o.name != enterprise.name);
        self.enterprises.push(enterprise);
        self
    }

    /// Sets the primary rate limit per window.
    pub fn with_rate_limit(mut self, limit: u32) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Sets the secondary limit on content-creating requests per minute.
    pub fn with_secondary_limit_per_minute(mut self, limit: u32) -> Self {
        self.secondary_limit_per_minute = limit;
        self
    }

    /// Sets how long a silent runner stays `online`.
    pub fn with_silence_timeout(mut self, timeout: Duration) -> Self {
        self.silence_timeout = timeout;
        self
    }

    /// Sets the lifetime of registration and remove tokens.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Sets the runner tarball served by the downloads endpoint, and its version.
    pub fn with_runner_tarball(mut self, bytes: Vec<u8>, version: impl Into<String>) -> Self {
        self.runner_tarball = Some(bytes);
        self.runner_version = version.into();
        self
    }

    /// Publishes `sha256` as the tarball's checksum instead of the real one (tampering tests).
    pub fn with_published_checksum(mut self, sha256: impl Into<String>) -> Self {
        self.runner_tarball_sha256 = Some(sha256.into());
        self
    }

    /// Sets (or removes) the GitHub App.
    pub fn with_app(mut self, app: Option<AppConfig>) -> Self {
        self.app = app;
        self
    }

    /// Sets the lifetime of installation tokens of the configured App.
    pub fn with_installation_token_lifetime(mut self, lifetime: Duration) -> Self {
        if let Some(app) = self.app.as_mut() {
            app.token_lifetime = lifetime;
        }
        self
    }

    /// Serves list answers from a cache for this long (GitHub: about 60 s).
    pub fn with_list_cache(mut self, ttl: Duration) -> Self {
        self.list_cache = ttl;
        self
    }

    /// Sets after how long offline an idle runner (persistent, ephemeral) is deregistered.
    pub fn with_offline_removal(mut self, persistent: Duration, ephemeral: Duration) -> Self {
        self.offline_removal = persistent;
        self.ephemeral_offline_removal = ephemeral;
        self
    }

    /// Sets the runner scale-set settings.
    pub fn with_scaleset(mut self, scaleset: ScaleSetConfig) -> Self {
        self.scaleset = scaleset;
        self
    }

    /// Sets the webhook target.
    pub fn with_webhook(mut self, url: impl Into<String>, secret: impl Into<String>) -> Self {
        self.webhook = Some(WebhookTarget {
            url: url.into(),
            secret: Secret::new(secret.into()),
        });
        self
    }
}
