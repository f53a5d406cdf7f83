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
    #[error("invalid github path {0:?}: expected an org or owner/repo")]
    Path(String),
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

/// A byte size as LXD writes it (`7GiB`, `512MiB`, `10GB`); the original text is kept for the
/// profile name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Size {
    text: String,
    bytes: u64,
}

impl Size {
    pub fn parse(what: &'static str, value: &str) -> Result<Self, ModelError> {
        let err = || ModelError::Size {
            what,
            value: value.to_owned(),
        };
        let digits_end = value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len());
        let (number, unit) = value.split_at(digits_end);
        let number: u64 = number.parse().map_err(|_| err())?;
        let multiplier: u64 = match unit {
            "B" => 1,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return Err(err()),
        };
        let bytes = number.checked_mul(multiplier).ok_or_else(err)?;
        if bytes == 0 {
            return Err(err());
        }
        Ok(Self {
            text: value.to_owned(),
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
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
        if cpu == 0 {
            return Err(ModelError::Cpu(cpu));
        }
        Ok(Self {
            cpu,
            memory: Size::parse("memory", memory)?,
            disk: Size::parse("disk", disk)?,
        })
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

/// Container or virtual machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceType {
    Container,
    VirtualMachine,
}

/// How a runner registers with GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// `config.sh` with a registration token, then `run.sh`.
    Token,
    /// `generate-jitconfig` on the manager, then `run.sh` with the JIT config.
    Jit,
}

/// Where runners register: a repository, or an organisation with a runner group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHubPath {
    Repo { owner: String, repo: String },
    Org { org: String, group: String },
}

impl GitHubPath {
    /// `owner/repo` or `org` (with `group` used for orgs only); more than one `/` is invalid.
    pub fn parse(path: &str, group: &str) -> Result<Self, ModelError> {
        let valid_part =
            |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '/');
        match path.split_once('/') {
            Some((owner, repo)) if valid_part(owner) && valid_part(repo) => Ok(Self::Repo {
                owner: owner.to_owned(),
                repo: repo.to_owned(),
            }),
            None if valid_part(path) => Ok(Self::Org {
                org: path.to_owned(),
                group: if group.is_empty() {
                    "default".to_owned()
                } else {
                    group.to_owned()
                },
            }),
            _ => Err(ModelError::Path(path.to_owned())),
        }
    }

    /// `owner/repo` or `org`.
    pub fn path(&self) -> String {
        match self {
            Self::Repo { owner, repo } => format!("{owner}/{repo}"),
            Self::Org { org, .. } => org.clone(),
        }
    }

    /// The runner group, for orgs.
    pub fn group(&self) -> Option<&str> {
        match self {
            Self::Repo { .. } => None,
            Self::Org { group, .. } => Some(group),
        }
    }
}

/// Proxy settings from the caller. Never mutated: per-runner additions make a new value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
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

    /// The variables in both casings, in a stable order; empty when no proxy is set.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (name, value) in [
            ("http_proxy", &self.http),
            ("https_proxy", &self.https),
            ("no_proxy", &self.no_proxy),
        ] {
            if let Some(v) = value {
                out.push((name.to_owned(), v.clone()));
                out.push((name.to_uppercase(), v.clone()));
            }
        }
        out
    }
}

/// A secret string (token, JIT config): redacted in Debug and Display. The GitHub client's type,
/// so a token goes from the client to an instance file without being copied into another type.
pub use github::Secret;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(app: &str, unit: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (APP_KEY.to_owned(), app.to_owned()),
            (UNIT_KEY.to_owned(), unit.to_owned()),
        ])
    }

    #[test]
    fn generated_names_are_short_owned_hostnames() {
        let owner = Owner::new("runner-app", 3).expect("valid");
        let name = owner.new_runner_name();
        assert!(name.as_str().starts_with("runner-app-3-"));
        assert_eq!(name.as_str().len(), "runner-app-3-".len() + SUFFIX_LEN);
        assert_eq!(owner.parse_name(name.as_str()), Some(name.clone()));
        assert!(owner.owns_instance(name.as_str(), &owner.config_keys()));
    }

    #[test]
    fn foo_unit_1_never_claims_foo_1_unit_0() {
        let foo1 = Owner::new("foo", 1).expect("valid");
        let foo_1_0 = Owner::new("foo-1", 0).expect("valid");
        let theirs = foo_1_0.new_runner_name();
        assert!(
            theirs.as_str().starts_with(&foo1.prefix()),
            "prefix collides"
        );
        assert_eq!(foo1.parse_name(theirs.as_str()), None);
        assert!(!foo1.owns_instance(theirs.as_str(), &foo_1_0.config_keys()));
        // And the other way round.
        let ours = foo1.new_runner_name();
        assert_eq!(foo_1_0.parse_name(ours.as_str()), None);
    }

    #[test]
    fn ownership_needs_exact_keys_and_prefix() {
        let owner = Owner::new("foo", 1).expect("valid");
        let name = "foo-1-abcd1234";
        assert!(owner.owns_instance(name, &keys("foo", "1")));
        assert!(!owner.owns_instance(name, &BTreeMap::new()), "unlabelled");
        assert!(!owner.owns_instance(name, &keys("foo", "10")));
        assert!(!owner.owns_instance(name, &keys("foo-1", "0")));
        assert!(!owner.owns_instance(name, &keys("fo", "1")));
        assert!(!owner.owns_instance("foo-1-abcd123", &keys("foo", "1")));
        assert!(!owner.owns_instance("foo-1-ABCD1234", &keys("foo", "1")));
        assert!(!owner.owns_instance("foo-10-abcd1234", &keys("foo", "1")));
    }

    #[test]
    fn app_names_are_validated() {
        for bad in [
            "",
            "Foo",
            "1foo",
            "foo-",
            "foo_bar",
            "foo bar",
            &"a".repeat(60),
        ] {
            assert!(Owner::new(bad, 0).is_err(), "{bad:?} accepted");
        }
        assert!(Owner::new("a-b-9", 12).is_ok());
    }

    #[test]
    fn sizes_and_profile_names() {
        let r = Resources::new(2, "7GiB", "10GiB").expect("valid");
        assert_eq!(r.profile_name(), "cpu-2-mem-7GiB-disk-10GiB");
        assert_eq!(r.memory.bytes(), 7 << 30);
        for bad in [
            "",
            "7",
            "GiB",
            "7gib",
            "-1GiB",
            "0GiB",
            "7 GiB",
            "99999999999999TiB",
        ] {
            assert!(Resources::new(2, bad, "10GiB").is_err(), "{bad:?} accepted");
        }
        assert_eq!(Resources::new(0, "1GiB", "1GiB"), Err(ModelError::Cpu(0)));
    }

    #[test]
    fn github_paths() {
        assert_eq!(GitHubPath::parse("o/r", "g").expect("valid").path(), "o/r");
        let org = GitHubPath::parse("org", "").expect("valid");
        assert_eq!(org.group(), Some("default"));
        for bad in ["", "a/b/c", "/r", "o/", "a b"] {
            assert!(GitHubPath::parse(bad, "").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn proxies_are_never_mutated() {
        let proxies = ProxySettings {
            http: Some("http://p:3128".into()),
            https: None,
            no_proxy: None,
        };
        let a = proxies.with_no_proxy(&["10.0.0.1"]);
        let b = proxies.with_no_proxy(&["10.0.0.1"]);
        assert_eq!(proxies.no_proxy, None);
        assert_eq!(a.no_proxy.as_deref(), Some("10.0.0.1"));
        assert_eq!(a, b);
        let again = a.with_no_proxy(&["10.0.0.1", "localhost"]);
        assert_eq!(again.no_proxy.as_deref(), Some("10.0.0.1,localhost"));
        assert_eq!(
            a.env_pairs(),
            vec![
                ("http_proxy".into(), "http://p:3128".into()),
                ("HTTP_PROXY".into(), "http://p:3128".into()),
                ("no_proxy".into(), "10.0.0.1".into()),
                ("NO_PROXY".into(), "10.0.0.1".into()),
            ]
        );
        assert!(ProxySettings::default().env_pairs().is_empty());
    }

    #[test]
    fn secrets_redact() {
        let s = Secret::new("ghs_topsecret");
        assert!(!format!("{s:?} {s}").contains("topsecret"));
        assert_eq!(s.expose(), "ghs_topsecret");
    }

    proptest! {
        #[test]
        fn no_owner_claims_another_owners_names(
            a in "[a-z][a-z0-9]{0,3}(-[a-z0-9]{1,3}){0,2}", ua in 0u32..20,
            b in "[a-z][a-z0-9]{0,3}(-[a-z0-9]{1,3}){0,2}", ub in 0u32..20,
        ) {
            prop_assume!((a.as_str(), ua) != (b.as_str(), ub));
            let oa = Owner::new(&a, ua).expect("valid");
            let ob = Owner::new(&b, ub).expect("valid");
            let name = ob.new_runner_name();
            prop_assert!(oa.parse_name(name.as_str()).is_none());
            prop_assert!(!oa.owns_instance(name.as_str(), &ob.config_keys()));
            prop_assert!(ob.owns_instance(name.as_str(), &ob.config_keys()));
        }
    }
}
