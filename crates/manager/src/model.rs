//! Core types: runner names and ownership, resources, proxies, secrets.
//!
//! Everything here is validated on construction, so the rest of the crate never re-checks.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;

/// Config key on an instance naming the application that owns it.
pub const APP_KEY: &str = "user.runner-manager.app";
/// Config key on an instance naming the unit that owns it.
pub const UNIT_KEY: &str = "user.runner-manager.unit";

/// Length of the random suffix of a runner name.
pub const SUFFIX_LEN: usize = 8;
/// Longest instance name LXD accepts (a hostname label).
pub const MAX_NAME_LEN: usize = 62;

/// A rejected input value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error(
        "invalid app name {0:?}: use lowercase letters, digits and '-', starting with a letter"
    )]
    AppName(String),
    #[error(
        "runner name prefix {0:?} leaves no room for the suffix within {MAX_NAME_LEN} characters"
    )]
    NameTooLong(String),
    #[error("invalid runner name {0:?}")]
    RunnerName(String),
    #[error("invalid cpu count {0}: must be at least 1")]
    Cpu(u32),
    #[error("invalid {what} size {value:?}: expected a positive integer with a unit such as 7GiB or 512MiB")]
    Size { what: &'static str, value: String },
    #[error(transparent)]
    Path(#[from] PathError),
    /// The message never holds the URL: it may carry credentials.
    #[error("unsupported proxy URL: expected http://HOST:PORT or https://HOST:PORT")]
    ProxyScheme,
    /// The URL parser's reason (which never quotes the input).
    #[error("invalid proxy URL: {0}")]
    ProxyUrl(String),
    #[error("invalid pool name {0:?}: use lowercase letters, digits and '-', starting with a letter, at most 32 characters")]
    PoolName(String),
}

/// Why a GitHub path was rejected (the config shows the message under `github.path`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("must not be empty: set \"owner/repo\", an organisation or \"enterprises/<slug>\"")]
    Empty,
    #[error("invalid path \"{}\": expected \"owner/repo\", an organisation or \"enterprises/<slug>\" (letters, digits, '-'; repositories also '_' and '.')", .0.escape_debug())]
    Invalid(String),
    #[error("invalid path \"{}\": more than one '/' (expected \"owner/repo\", an organisation or \"enterprises/<slug>\")", .0.escape_debug())]
    TooManySlashes(String),
}

/// Who owns a set of runners: one unit of one application.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    app_name: String,
    unit: u32,
}

impl Owner {
    /// Validates the app name so that every generated runner name is a valid hostname.
    pub fn new(app_name: &str, unit: u32) -> Result<Self, ModelError> {
        let valid = app_name.starts_with(|c: char| c.is_ascii_lowercase())
            && !app_name.ends_with('-')
            && app_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(ModelError::AppName(app_name.to_owned()));
        }
        let owner = Self {
            app_name: app_name.to_owned(),
            unit,
        };
        if owner.prefix().len() + SUFFIX_LEN > MAX_NAME_LEN {
            return Err(ModelError::NameTooLong(owner.prefix()));
        }
        Ok(owner)
    }

    pub fn app_name(&self) -> &str {
        &self.app_name
    }

    pub fn unit(&self) -> u32 {
        self.unit
    }

    /// `"{app}-{unit}-"`: every runner name of this owner starts with it.
    pub fn prefix(&self) -> String {
        format!("{}-{}-", self.app_name, self.unit)
    }

    /// The config keys stamped on every instance this owner creates.
    pub fn config_keys(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (APP_KEY.to_owned(), self.app_name.clone()),
            (UNIT_KEY.to_owned(), self.unit.to_string()),
        ])
    }

    /// Parses `name` as one of this owner's runner names: the exact prefix followed by a suffix of
    /// the generated form. App "foo" unit 1 does not claim "foo-1-0-abcd1234" (app "foo-1", unit 0)
    /// because its remainder "0-abcd1234" is not a suffix.
    pub fn parse_name(&self, name: &str) -> Option<RunnerName> {
        let suffix = name.strip_prefix(&self.prefix())?;
        is_suffix(suffix).then(|| RunnerName(name.to_owned()))
    }

    /// Whether an instance is ours: both config keys match exactly *and* the name parses.
    pub fn owns_instance(&self, name: &str, config: &BTreeMap<String, String>) -> bool {
        config.get(APP_KEY).map(String::as_str) == Some(self.app_name.as_str())
            && config.get(UNIT_KEY).map(String::as_str) == Some(self.unit.to_string().as_str())
            && self.parse_name(name).is_some()
    }

    /// Generates a fresh runner name for this owner.
    pub fn new_runner_name(&self) -> RunnerName {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut rng = rand::rng();
        let suffix: String = (0..SUFFIX_LEN)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        RunnerName(format!("{}{}", self.prefix(), suffix))
    }
}

fn is_suffix(s: &str) -> bool {
    s.len() == SUFFIX_LEN
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The name shared by a runner's instance and its GitHub registration: `<app>-<unit>-<suffix>`.
/// Only [`Owner`] makes one, so holding a `RunnerName` means it is owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunnerName(String);

impl RunnerName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunnerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A positive byte size as LXD writes it (`7GiB`, `512MiB`, `10GB`). The operator's spelling is
/// kept: LXD accepts the same syntax, and the resource profile is named after it
/// (`cpu-2-mem-7GiB-disk-10GiB`). The config's `runners.memory` and `runners.disk` deserialise
/// into it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Size {
    text: String,
    bytes: u64,
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Why a byte size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("expected a size such as \"7GiB\" (a whole number and a unit: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")]
    Syntax,
    #[error("unknown unit \"{0}\" (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)")]
    Unit(String),
    #[error("must be greater than zero")]
    Zero,
    #[error("is too large")]
    Overflow,
}

impl Size {
    /// Parses `value`, naming `what` (`memory`, `disk`) in the error.
    pub fn parse(what: &'static str, value: &str) -> Result<Self, ModelError> {
        value.parse().map_err(|_| ModelError::Size {
            what,
            value: value.to_owned(),
        })
    }

    /// The size as written, e.g. `7GiB`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl std::str::FromStr for Size {
    type Err = SizeError;

    fn from_str(text: &str) -> Result<Self, SizeError> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        if number.is_empty() || unit.is_empty() {
            return Err(SizeError::Syntax);
        }
        let multiplier = SIZE_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, multiplier)| *multiplier)
            .ok_or_else(|| SizeError::Unit(unit.to_owned()))?;
        let number: u64 = number.parse().map_err(|_| SizeError::Overflow)?;
        if number == 0 {
            return Err(SizeError::Zero);
        }
        let bytes = number.checked_mul(multiplier).ok_or(SizeError::Overflow)?;
        Ok(Self {
            text: text.to_owned(),
            bytes,
        })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl serde::de::Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size string such as \"7GiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Size, E> {
                value.parse().map_err(|err| {
                    E::custom(format_args!(
                        "invalid size \"{}\": {err}",
                        value.escape_debug()
                    ))
                })
            }
        }
        deserializer.deserialize_str(SizeVisitor)
    }
}

/// Resources of one runner instance (the seed's `VirtualMachineResources`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resources {
    pub cpu: u32,
    pub memory: Size,
    pub disk: Size,
}

impl Resources {
    /// `Resources::new(2, "7GiB", "10GiB")`; bad values are rejected before anything is created.
    pub fn new(cpu: u32, memory: &str, disk: &str) -> Result<Self, ModelError> {
        Self::from_sizes(
            cpu,
            Size::parse("memory", memory)?,
            Size::parse("disk", disk)?,
        )
    }

    /// From sizes that are already parsed (the config's).
    pub fn from_sizes(cpu: u32, memory: Size, disk: Size) -> Result<Self, ModelError> {
        if cpu == 0 {
            return Err(ModelError::Cpu(cpu));
        }
        Ok(Self { cpu, memory, disk })
    }

    /// `cpu-{cpu}-mem-{memory}-disk-{disk}`, the resource profile's name.
    pub fn profile_name(&self) -> String {
        format!(
            "cpu-{}-mem-{}-disk-{}",
            self.cpu,
            self.memory.as_str(),
            self.disk.as_str()
        )
    }
}

/// Container or virtual machine (the config's `lxd.instance_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceType {
    Container,
    VirtualMachine,
}

impl InstanceType {
    /// The value of LXD's `type` field, as the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::VirtualMachine => "virtual-machine",
        }
    }
}

/// How a runner registers with GitHub (the config's `runners.registration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// `config.sh` with a registration token, then `run.sh`.
    Token,
    /// `generate-jitconfig` on the manager, then `run.sh` with the JIT config.
    Jit,
}

impl RegistrationMode {
    /// As the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Jit => "jit",
        }
    }
}

/// The runner group used when none is given.
pub const DEFAULT_RUNNER_GROUP: &str = "default";

/// Where runners register: a repository, or an organisation or enterprise with a runner group.
/// The config's `github.path` (and `github.runner_group`) are parsed into it once, by
/// [`GitHubPath::parse`]; the GitHub client's scope is built from it directly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GitHubPath {
    Repo { owner: String, repo: String },
    Org { org: String, group: String },
    Enterprise { slug: String, group: String },
}

impl GitHubPath {
    /// Parses `owner/repo`, `org` or `enterprises/<slug>`. `group` applies to organisations and
    /// enterprises (empty means `default`); a repository has none. Owners, organisations and
    /// slugs are 1-39 letters, digits and `-` (not first); repositories also allow `_` and `.`.
    pub fn parse(path: &str, group: &str) -> Result<Self, ModelError> {
        let group = if group.is_empty() {
            DEFAULT_RUNNER_GROUP
        } else {
            group
        };
        let parts: Vec<&str> = path.split('/').collect();
        let parsed = match parts.as_slice() {
            [""] => return Err(PathError::Empty.into()),
            ["enterprises", slug] if valid_owner(slug) => Self::Enterprise {
                slug: (*slug).to_owned(),
                group: group.to_owned(),
            },
            [owner, repo] if valid_owner(owner) && valid_repo(repo) => Self::Repo {
                owner: (*owner).to_owned(),
                repo: (*repo).to_owned(),
            },
            [org] if valid_owner(org) => Self::Org {
                org: (*org).to_owned(),
                group: group.to_owned(),
            },
            [_] | [_, _] => return Err(PathError::Invalid(path.to_owned()).into()),
            _ => return Err(PathError::TooManySlashes(path.to_owned()).into()),
        };
        Ok(parsed)
    }

    /// The URL path: `owner/repo`, `org` or `enterprises/slug` (`config.sh --url <web>/<path>`).
    pub fn path(&self) -> String {
        match self {
            Self::Repo { owner, repo } => format!("{owner}/{repo}"),
            Self::Org { org, .. } => org.clone(),
            Self::Enterprise { slug, .. } => format!("enterprises/{slug}"),
        }
    }

    /// The runner group, for organisations and enterprises (`config.sh --runnergroup`).
    pub fn group(&self) -> Option<&str> {
        match self {
            Self::Repo { .. } => None,
            Self::Org { group, .. } | Self::Enterprise { group, .. } => Some(group),
        }
    }

    /// The same scope with another runner group (`None`: unchanged). A repository has none.
    pub fn with_group(&self, group: Option<&str>) -> Self {
        match (self, group) {
            (Self::Org { org, .. }, Some(group)) => Self::Org {
                org: org.clone(),
                group: group.to_owned(),
            },
            (Self::Enterprise { slug, .. }, Some(group)) => Self::Enterprise {
                slug: slug.clone(),
                group: group.to_owned(),
            },
            _ => self.clone(),
        }
    }

    /// `repository`, `organisation` or `enterprise`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Repo { .. } => "repository",
            Self::Org { .. } => "organisation",
            Self::Enterprise { .. } => "enterprise",
        }
    }
}

/// The URL path, as [`GitHubPath::path`].
impl fmt::Display for GitHubPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

fn valid_owner(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 39
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
}

fn valid_repo(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Shown instead of a proxy password (`[redacted]` would be percent-encoded in a URL).
const REDACTED_PASSWORD: &str = "redacted";

/// An `http://` or `https://` proxy URL, which may carry `user:password@`. `Debug` and `Display`
/// mask the password; the full URL is reachable only through [`ProxyUrl::expose`], for the places
/// that must use it (the GitHub client's proxy, the runner's environment, docker's settings).
///
/// The URL is kept in its parsed, normalised form (no stray whitespace or control characters can
/// reach an environment file), without the trailing `/` of an empty path: `http://proxy:3128`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl {
    full: String,
    shown: String,
}

impl ProxyUrl {
    /// Parses a proxy URL. Errors never quote the value (it may hold a password).
    pub fn parse(value: &str) -> Result<Self, ModelError> {
        let url = reqwest::Url::parse(value.trim())
            .map_err(|err| ModelError::ProxyUrl(err.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(ModelError::ProxyScheme);
        }
        // The password is masked; a user name alone (a token as user name) is masked instead.
        // Neither can fail: a URL with credentials has a host.
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some(REDACTED_PASSWORD));
        } else if !shown.username().is_empty() {
            let _ = shown.set_username(REDACTED_PASSWORD);
        }
        Ok(Self {
            full: without_root_slash(&url),
            shown: without_root_slash(&shown),
        })
    }

    /// The full URL, credentials included. Only for where the proxy is used.
    pub fn expose(&self) -> &str {
        &self.full
    }
}

fn without_root_slash(url: &reqwest::Url) -> String {
    let text = url.as_str();
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        text.strip_suffix('/').unwrap_or(text).to_owned()
    } else {
        text.to_owned()
    }
}

impl std::str::FromStr for ProxyUrl {
    type Err = ModelError;

    fn from_str(value: &str) -> Result<Self, ModelError> {
        Self::parse(value)
    }
}

/// The URL with its password masked.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({})", self.shown)
    }
}

/// Proxy settings from the caller (the config's `[proxy]`). Never mutated: per-runner additions
/// make a new value. `Debug` masks proxy passwords.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    pub http: Option<ProxyUrl>,
    pub https: Option<ProxyUrl>,
    /// Comma-separated hosts, domains and CIDRs that bypass the proxy.
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The full http proxy URL, credentials included (see [`ProxyUrl::expose`]).
    pub fn expose_http(&self) -> Option<&str> {
        self.http.as_ref().map(ProxyUrl::expose)
    }

    /// The full https proxy URL, credentials included (see [`ProxyUrl::expose`]).
    pub fn expose_https(&self) -> Option<&str> {
        self.https.as_ref().map(ProxyUrl::expose)
    }

    /// A copy whose `no_proxy` also lists `extra` (deduplicated), for the runner's environment.
    pub fn with_no_proxy(&self, extra: &[&str]) -> Self {
        let mut hosts: Vec<String> = self
            .no_proxy
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for host in extra {
            if !hosts.iter().any(|h| h == host) {
                hosts.push((*host).to_owned());
            }
        }
        Self {
            http: self.http.clone(),
            https: self.https.clone(),
            no_proxy: (!hosts.is_empty()).then(|| hosts.join(",")),
        }
    }

    /// The environment variables in both casings, in a stable order, with the full URLs
    /// (credentials included: this is what the runner's environment needs); empty when no proxy
    /// is set.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (name, value) in [
            ("http_proxy", self.expose_http()),
            ("https_proxy", self.expose_https()),
            ("no_proxy", self.no_proxy.as_deref()),
        ] {
            if let Some(v) = value {
                out.push((name.to_owned(), v.to_owned()));
                out.push((name.to_uppercase(), v.to_owned()));
            }
        }
        out
    }
}

/// A secret string (token, JIT config): redacted in Debug and Display. The GitHub client's type,
/// so a token goes from the client to an instance file without being copied into another type.
pub use github::Secret;

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
