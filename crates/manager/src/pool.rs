//! Pools: flavors of runner (image, resources, container or VM, labels, group, registration),
//! each with its own `min_idle` and `max`, and the job demand that sizes them.
//!
//! Every runner belongs to exactly one pool, and both sides say which: the instance carries
//! [`POOL_KEY`], the registration the label [`PoolSpec::marker_label`]. Runners with neither
//! (made by the single-pool form, `[runners] quantity = N`, which adds no key and no label, as
//! the seed did) belong to [`PoolName::DEFAULT`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use crate::model::{InstanceType, ModelError, RegistrationMode, Resources};

/// Config key on an instance naming its pool.
pub const POOL_KEY: &str = "user.runner-manager.pool";
/// Prefix of the label naming a runner's pool on GitHub (`runner-manager-pool:small`), in the
/// manner of GARM's `runner-pool-id:` label.
pub const POOL_LABEL_PREFIX: &str = "runner-manager-pool:";
/// Longest pool name.
pub const MAX_POOL_NAME_LEN: usize = 32;

/// A pool's name: lowercase letters, digits and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolName(String);

impl PoolName {
    /// The pool of the single-pool form, and of runners that name no pool.
    pub const DEFAULT: &'static str = "default";

    pub fn new(name: &str) -> Result<Self, ModelError> {
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name.len() <= MAX_POOL_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(ModelError::PoolName(name.to_owned()))
        }
    }

    /// [`Self::DEFAULT`].
    pub fn default_pool() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool an instance's config keys name; [`Self::DEFAULT`] when none (or an invalid one).
    pub fn of_instance(config: &BTreeMap<String, String>) -> Self {
        config
            .get(POOL_KEY)
            .and_then(|name| Self::new(name).ok())
            .unwrap_or_else(Self::default_pool)
    }

    /// The pool a registration's labels name; [`Self::DEFAULT`] when none.
    pub fn of_labels<S: AsRef<str>>(labels: &[S]) -> Self {
        labels
            .iter()
            .find_map(|label| {
                let label = label.as_ref();
                let prefix = label.get(..POOL_LABEL_PREFIX.len())?;
                prefix
                    .eq_ignore_ascii_case(POOL_LABEL_PREFIX)
                    .then(|| Self::new(&label[POOL_LABEL_PREFIX.len()..].to_ascii_lowercase()).ok())
                    .flatten()
            })
            .unwrap_or_else(Self::default_pool)
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a pool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// The seed's model: exactly this many runners (busy ones included).
    Fixed(usize),
    /// `min(max, busy + queued jobs routed here + min_idle)`.
    Demand { min_idle: usize, max: usize },
}

impl Sizing {
    /// The cap on the pool's runners.
    pub fn max(self) -> usize {
        match self {
            Self::Fixed(quantity) => quantity,
            Self::Demand { max, .. } => max,
        }
    }
}

/// Where a pool's runners come from (the config's `image_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageMode {
    /// The base image; each runner gets the runner tarball pushed and unpacked.
    #[default]
    Plain,
    /// An image the manager built from the base image with the runner installed
    /// ([`crate::images`]); each runner only registers. Until one exists, as `Plain`.
    Baked,
}

impl ImageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Baked => "baked",
        }
    }
}

/// How a pool's runners are spread over the members of an LXD/Incus cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Each new runner goes to the candidate member carrying the fewest of this pool's runners
    /// (ties by member name): the pool ends balanced.
    #[default]
    Spread,
    /// Each new runner goes to the first candidate member (by name) with room: fill one member,
    /// then the next.
    Pack,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spread => "spread",
            Self::Pack => "pack",
        }
    }
}

/// Which members a pool's runners may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementTarget {
    /// This member only.
    Member(String),
    /// The members of this cluster group (written `@group`).
    Group(String),
}

impl PlacementTarget {
    /// `m1` or `@gpu`; `None` for an empty name.
    pub fn parse(text: &str) -> Option<Self> {
        match text.strip_prefix('@') {
            Some(group) if !group.is_empty() => Some(Self::Group(group.to_owned())),
            Some(_) => None,
            None if !text.is_empty() => Some(Self::Member(text.to_owned())),
            None => None,
        }
    }

    /// LXD's `?target=` value: the member name, or `@group`.
    pub fn as_target(&self) -> String {
        match self {
            Self::Member(member) => member.clone(),
            Self::Group(group) => format!("@{group}"),
        }
    }
}

impl fmt::Display for PlacementTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_target())
    }
}

/// Where a pool's runners go on a cluster (`placement` and `target` of a pool, `lxd.target`
/// for every pool). On a standalone server only `target` matters, and is passed as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub strategy: Strategy,
    /// `None`: every online member.
    pub target: Option<PlacementTarget>,
}

/// One pool as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: PoolName,
    /// Image alias; also a runner label.
    pub image: String,
    pub instance_type: InstanceType,
    pub resources: Resources,
    /// Extra LXD profiles, applied after the resource profile.
    pub profiles: Vec<String>,
    /// Labels besides `self-hosted`, the OS/arch labels, `<app_name>` and `<image>`.
    pub labels: Vec<String>,
    /// The runner group (organisation and enterprise scopes); `None`: the scope's own group.
    pub runner_group: Option<String>,
    pub registration: RegistrationMode,
    pub sizing: Sizing,
    /// Higher first when several pools match a job.
    pub priority: i32,
    pub image_mode: ImageMode,
    /// Whether runners carry [`POOL_KEY`] and the marker label. A pool declared in
    /// `[[pools]]` does; the single-pool form does not (its runners look as the seed's did).
    pub marked: bool,
    /// Where its runners go on a cluster ([`crate::placement`]).
    pub placement: Placement,
}

impl PoolSpec {
    /// The single-pool form's pool (`[runners] quantity = N`): named `default`, unmarked (its
    /// runners carry no pool key or label, as the seed's did), plain, `quantity` runners.
    pub fn single(
        image: &str,
        instance_type: InstanceType,
        resources: Resources,
        labels: Vec<String>,
        registration: RegistrationMode,
        quantity: usize,
    ) -> Self {
        Self {
            name: PoolName::default_pool(),
            image: image.to_owned(),
            instance_type,
            resources,
            profiles: Vec::new(),
            labels,
            runner_group: None,
            registration,
            sizing: Sizing::Fixed(quantity),
            priority: 0,
            marked: false,
            image_mode: ImageMode::Plain,
            placement: Placement::default(),
        }
    }

    /// The same pool with this placement.
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// What routing needs of this pool: its sizing, priority and every label of its runners
    /// on this host's platform ([`crate::runner_bin::platform`]).
    pub fn demand(&self, app_name: &str) -> PoolDemand {
        let (os, arch) = crate::runner_bin::platform();
        PoolDemand {
            name: self.name.clone(),
            sizing: self.sizing,
            priority: self.priority,
            labels: self.all_labels(app_name, os, arch),
        }
    }

    /// The label naming this pool on GitHub: `runner-manager-pool:<name>`.
    pub fn marker_label(&self) -> String {
        format!("{POOL_LABEL_PREFIX}{}", self.name)
    }

    /// The labels given to GitHub: `<app_name>`, `<image>`, the pool's own, and its marker.
    /// (`self-hosted` and the OS/arch labels are GitHub's defaults, added by the runner.)
    pub fn registration_labels(&self, app_name: &str) -> Vec<String> {
        let mut labels = vec![app_name.to_owned(), self.image.clone()];
        for label in &self.labels {
            if !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
                labels.push(label.clone());
            }
        }
        if self.marked {
            labels.push(self.marker_label());
        }
        labels
    }

    /// Every label a runner of this pool has on GitHub, lowercased: the registration labels
    /// plus `self-hosted` and the OS/arch labels. What a job's `runs-on` is matched against.
    pub fn all_labels(&self, app_name: &str, os: &str, arch: &str) -> BTreeSet<String> {
        default_labels(os, arch)
            .into_iter()
            .chain(self.registration_labels(app_name))
            .map(|l| l.to_ascii_lowercase())
            .collect()
    }

    /// The config keys of this pool's instances, besides the owner's.
    pub fn config_keys(&self) -> BTreeMap<String, String> {
        if self.marked {
            BTreeMap::from([(POOL_KEY.to_owned(), self.name.to_string())])
        } else {
            BTreeMap::new()
        }
    }
}

/// GitHub's default labels of a runner on `os`/`arch` (as [`crate::runner_bin::platform`]
/// names them): `self-hosted`, `Linux`, `X64`. `config.sh` adds them itself; a JIT
/// registration has only the labels it is given, so the manager gives these too.
pub fn default_labels(os: &str, arch: &str) -> [String; 3] {
    let os = match os {
        "linux" => "Linux",
        "win" => "Windows",
        "osx" => "macOS",
        other => other,
    };
    [
        "self-hosted".to_owned(),
        os.to_owned(),
        arch.to_ascii_uppercase(),
    ]
}

/// What the demand planner needs of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDemand {
    pub name: PoolName,
    pub sizing: Sizing,
    pub priority: i32,
    /// Every label of its runners, lowercased ([`PoolSpec::all_labels`]).
    pub labels: BTreeSet<String>,
}

/// A job GitHub has queued and no runner has picked up yet, as the job table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub id: u64,
    /// `runs-on`.
    pub labels: Vec<String>,
    pub created_at: OffsetDateTime,
}

/// Whether a runner with `runner_labels` (lowercased) can take a job with `job_labels`: it has
/// every one of them, compared ignoring case, as GitHub matches.
pub fn labels_match(runner_labels: &BTreeSet<String>, job_labels: &[String]) -> bool {
    !job_labels.is_empty()
        && job_labels
            .iter()
            .all(|l| runner_labels.contains(&l.to_ascii_lowercase()))
}

/// The pools that could take a job, best first: highest priority, then name.
pub fn candidates<'a>(pools: &'a [PoolDemand], job_labels: &[String]) -> Vec<&'a PoolDemand> {
    let mut matching: Vec<&PoolDemand> = pools
        .iter()
        .filter(|p| labels_match(&p.labels, job_labels))
        .collect();
    matching.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    matching
}

/// Tolerances of demand sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemandSettings {
    /// A job queued this long without being picked up gets a runner of its own, even when the
    /// count says the pool has enough (GitHub may have given that runner to another job).
    pub stale_after: Duration,
    /// Idle runners older than this are replaced; `None`: never.
    pub max_idle_age: Option<Duration>,
}

impl Default for DemandSettings {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(600),
            max_idle_age: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names() {
        for good in ["small", "a", "gpu-2", "x86-large-1"] {
            assert!(PoolName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Small",
            "1st",
            "a_b",
            "trailing-",
            "a b",
            &"a".repeat(33),
        ] {
            assert!(PoolName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_pool_is_read_from_either_side() {
        let keys = BTreeMap::from([(POOL_KEY.to_owned(), "small".to_owned())]);
        assert_eq!(PoolName::of_instance(&keys).as_str(), "small");
        assert_eq!(PoolName::of_instance(&BTreeMap::new()).as_str(), "default");
        let labels = ["self-hosted", "app", "Runner-Manager-Pool:Large"];
        assert_eq!(PoolName::of_labels(&labels).as_str(), "large");
        assert_eq!(PoolName::of_labels(&["self-hosted"]).as_str(), "default");
        assert_eq!(
            PoolName::of_labels(&["runner-manager-pool:Not Valid"]).as_str(),
            "default"
        );
    }

    #[test]
    fn jobs_match_runners_that_have_all_their_labels_ignoring_case() {
        let runner: BTreeSet<String> = ["self-hosted", "linux", "x64", "small"]
            .map(str::to_owned)
            .into();
        let job = |labels: &[&str]| labels.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
        assert!(labels_match(&runner, &job(&["self-hosted", "SMALL"])));
        assert!(labels_match(&runner, &job(&["Linux", "X64"])));
        assert!(!labels_match(&runner, &job(&["self-hosted", "large"])));
        assert!(!labels_match(&runner, &job(&[])));
    }
}
