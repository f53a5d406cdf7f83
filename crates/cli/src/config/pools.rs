//! `[[pools]]`: several flavours of runner, each sized by demand between `min_idle` and `max`.
//!
//! Each pool is validated straight into the manager's [`PoolSpec`]; keys a pool does not set
//! fall back to `[lxd]` (image, instance type), `[runners]` (resources, labels, registration)
//! and the scope's own runner group. Without `[[pools]]` the single-pool form applies, and
//! [`Config::pool_specs`] describes it as one unmarked pool named `default`.
//!
//! Placement on a cluster: a pool's `placement` (`"spread"`, the default, or `"pack"`) falls
//! back to `[cluster] placement`, its `target` (a member name, or `@group` for a cluster
//! group) to `lxd.target`; the single-pool form takes both defaults. `[cluster]
//! overcommit_cpu` and `overcommit_memory` say how far a member's capacity may be promised.

use manager::placement::Overcommit;
use manager::pool::{
    candidates, Placement, PlacementTarget, Strategy, MAX_POOL_NAME_LEN, POOL_LABEL_PREFIX,
};
use manager::Resources;

use super::*;

/// Labels every pooled runner has beside the pool's own: `self-hosted`, the OS, the
/// architecture, `app_name`, the image and the pool's marker label.
const RESERVED_POOL_LABELS: usize = 6;
/// Longest LXD profile name accepted.
const MAX_PROFILE_NAME: usize = 63;

impl Config {
    /// The pools to run: those of `[[pools]]`, or for the single-pool form one unmarked pool
    /// named `default`, sized `Fixed(runners.quantity)`, with `[lxd]` and `[runners]` values.
    pub fn pool_specs(&self) -> Vec<PoolSpec> {
        if !self.pools.is_empty() {
            return self.pools.clone();
        }
        vec![PoolSpec::single(
            &self.lxd.image,
            self.lxd.instance_type,
            Resources {
                cpu: self.runners.cpu,
                memory: self.runners.memory.clone(),
                disk: self.runners.disk.clone(),
            },
            self.runners.labels.clone(),
            self.runners.registration,
            usize::try_from(self.runners.quantity).unwrap_or(usize::MAX),
        )
        .with_placement(self.single_placement())]
    }

    /// The single-pool form's placement: `[cluster] placement` and `lxd.target`.
    pub fn single_placement(&self) -> Placement {
        Placement {
            strategy: self.cluster.placement,
            target: self.lxd.target.as_deref().and_then(PlacementTarget::parse),
        }
    }

    /// What the demand planner needs of each pool of [`Self::pool_specs`]: every label its
    /// runners have on GitHub (with this host's OS and architecture), sizing and priority. A
    /// scale-set pool has no labels here: GitHub gives it its jobs, webhook routing never does
    /// (as `ScaleSetHub::size_demands` has it in a pass).
    pub fn pool_demands(&self) -> Vec<PoolDemand> {
        self.pool_specs()
            .iter()
            .map(|spec| {
                let mut demand = spec.demand(&self.app_name);
                if self.scale_sets.pools.iter().any(|s| s.pool == spec.name) {
                    demand.labels.clear();
                }
                demand
            })
            .collect()
    }

    /// The pools a job with `runs-on` `job_labels` could go to, best first (highest priority,
    /// then name): the first takes it; at run time a full pool passes it to the next.
    pub fn route(&self, job_labels: &[String]) -> RouteSummary {
        let labels: Vec<String> = job_labels
            .iter()
            .map(|label| label.trim())
            .filter(|label| !label.is_empty())
            .map(str::to_owned)
            .collect();
        let demands = self.pool_demands();
        let matching: Vec<RouteCandidate> = candidates(&demands, &labels)
            .into_iter()
            .map(|pool| RouteCandidate {
                name: pool.name.to_string(),
                priority: pool.priority,
            })
            .collect();
        RouteSummary {
            pool: matching.first().map(|pool| pool.name.clone()),
            labels,
            candidates: matching,
        }
    }
}

/// The values a pool falls back to, and what the rest of the config says about pools.
pub(super) struct PoolDefaults<'a> {
    /// `None` when `[lxd]` is invalid (its own errors are reported).
    pub(super) lxd: Option<&'a LxdConfig>,
    /// `None` when `[runners]` is invalid (its own errors are reported).
    pub(super) runners: Option<&'a RunnersConfig>,
    /// `github.path` when it is a repository (which has no runner groups).
    pub(super) repo_scope: Option<String>,
    /// Whether `runners.quantity` is set.
    pub(super) quantity_set: bool,
    /// `None` when `[cluster]` is invalid (its own errors are reported).
    pub(super) cluster: Option<&'a ClusterConfig>,
}

/// Largest overcommit ratio accepted.
const MAX_OVERCOMMIT: f64 = 100.0;

/// `github.path` when it names a repository.
pub(super) fn repo_scope(path: Option<&str>) -> Option<String> {
    match GitHubPath::parse(path?, DEFAULT_RUNNER_GROUP) {
        Ok(path @ GitHubPath::Repo { .. }) => Some(path.to_string()),
        _ => None,
    }
}

/// What two pools are told apart by when a job is routed.
struct PoolIdentity {
    index: usize,
    /// The name as written, for messages.
    name: Option<String>,
    /// The image and the pool's labels, lowercased.
    labels: Option<BTreeSet<String>>,
    priority: i32,
}

impl Validator<'_> {
    /// `[[pools]]`: every pool, then the rules between pools. `None` when any is invalid.
    pub(super) fn pools(
        &mut self,
        raw: Vec<RawPool>,
        defaults: &PoolDefaults<'_>,
    ) -> Option<Vec<PoolSpec>> {
        if raw.is_empty() {
            return Some(Vec::new());
        }
        if defaults.quantity_set {
            self.errors.push(
                "runners.quantity",
                "not used with [[pools]]; size each pool with min_idle and max",
            );
        }
        let mut specs = Vec::with_capacity(raw.len());
        let mut identities = Vec::with_capacity(raw.len());
        let mut all_ok = true;
        for (index, pool) in raw.into_iter().enumerate() {
            let spec = self.pool(index, pool, defaults, &mut identities);
            all_ok &= spec.is_some();
            specs.extend(spec);
        }
        all_ok &= self.distinct_pools(&identities);
        all_ok.then_some(specs)
    }

    fn pool(
        &mut self,
        index: usize,
        raw: RawPool,
        defaults: &PoolDefaults<'_>,
        identities: &mut Vec<PoolIdentity>,
    ) -> Option<PoolSpec> {
        let key = |name: &str| format!("pools[{index}].{name}");
        let name = match &raw.name {
            None => {
                self.errors.push(
                    key("name"),
                    format!("missing: a unique name, e.g. \"small\" (lowercase letters, digits and '-', at most {MAX_POOL_NAME_LEN} characters)"),
                );
                None
            }
            Some(name) => PoolName::new(name)
                .map_err(|err| self.errors.push(key("name"), err.to_string()))
                .ok(),
        };
        let resources = self.pool_resources(&key, &raw, defaults.runners);
        let image = match raw.image {
            Some(image) => self.image_alias(&key("image"), image),
            None => defaults.lxd.map(|lxd| lxd.image.clone()),
        };
        let instance_type = raw
            .instance_type
            .or(defaults.lxd.map(|lxd| lxd.instance_type));
        let profiles = self.profiles(&key("profiles"), raw.profiles.unwrap_or_default());
        let labels = match raw.labels {
            Some(labels) => self.pool_labels(&key("labels"), labels),
            None => defaults.runners.map(|runners| runners.labels.clone()),
        };
        let runner_group = self.pool_group(&key("runner_group"), raw.runner_group, defaults);
        let registration = raw
            .registration
            .or(defaults.runners.map(|runners| runners.registration));
        let sizing = self.pool_sizing(&key, raw.min_idle, raw.max);
        let priority = raw.priority.unwrap_or(0);
        let strategy = match raw.placement {
            Some(text) => self.strategy(&key("placement"), &text),
            None => defaults.cluster.map(|c| c.placement),
        };
        let target = match raw.target {
            Some(text) => self.placement_target(&key("target"), text).map(Some),
            None => defaults.lxd.map(|lxd| lxd.target.clone()),
        };
        identities.push(PoolIdentity {
            index,
            name: raw.name,
            labels: match (&image, &labels) {
                (Some(image), Some(labels)) => Some(
                    std::iter::once(image)
                        .chain(labels)
                        .map(|label| label.to_ascii_lowercase())
                        .collect(),
                ),
                _ => None,
            },
            priority,
        });
        Some(PoolSpec {
            name: name?,
            image: image?,
            instance_type: instance_type?,
            resources: resources?,
            profiles: profiles?,
            labels: labels?,
            runner_group: runner_group?,
            registration: registration?,
            sizing: sizing?,
            priority,
            marked: true,
            image_mode: raw.image_mode.unwrap_or_default(),
            placement: Placement {
                strategy: strategy?,
                target: target?.as_deref().and_then(PlacementTarget::parse),
            },
        })
    }

    /// cpu, memory and disk, each falling back to `[runners]`, with the `[runners]` limits.
    fn pool_resources(
        &mut self,
        key: &dyn Fn(&str) -> String,
        raw: &RawPool,
        runners: Option<&RunnersConfig>,
    ) -> Option<Resources> {
        let cpu = match raw.cpu {
            Some(cpu) if cpu == 0 || cpu > MAX_CPU => {
                self.errors
                    .push(key("cpu"), format!("must be between 1 and {MAX_CPU}"));
                None
            }
            Some(cpu) => Some(cpu),
            None => runners.map(|runners| runners.cpu),
        };
        let memory = raw
            .memory
            .clone()
            .or_else(|| runners.map(|runners| runners.memory.clone()));
        let disk = raw
            .disk
            .clone()
            .or_else(|| runners.map(|runners| runners.disk.clone()));
        Resources::from_sizes(cpu?, memory?, disk?)
            .map_err(|err| self.errors.push(key("cpu"), err.to_string()))
            .ok()
    }

    fn pool_labels(&mut self, key: &str, raw: Vec<String>) -> Option<Vec<String>> {
        let mut reserved_ok = true;
        for (index, label) in raw.iter().enumerate() {
            let prefix = label.get(..POOL_LABEL_PREFIX.len());
            if prefix.is_some_and(|prefix| prefix.eq_ignore_ascii_case(POOL_LABEL_PREFIX)) {
                self.errors.push(
                    format!("{key}[{index}]"),
                    format!(
                        "labels starting with \"{POOL_LABEL_PREFIX}\" are reserved: the manager gives each runner its pool's"
                    ),
                );
                reserved_ok = false;
            }
        }
        let labels = self.labels(key, raw, RESERVED_POOL_LABELS);
        labels.filter(|_| reserved_ok)
    }

    fn profiles(&mut self, key: &str, raw: Vec<String>) -> Option<Vec<String>> {
        let mut ok = true;
        for (index, profile) in raw.iter().enumerate() {
            let valid = !profile.is_empty()
                && profile.len() <= MAX_PROFILE_NAME
                && profile != "."
                && profile != ".."
                && !profile
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '/');
            if !valid {
                self.errors.push(
                    format!("{key}[{index}]"),
                    format!(
                        "invalid profile name \"{}\": 1 to {MAX_PROFILE_NAME} characters, without spaces or '/'",
                        profile.escape_debug()
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(raw)
    }

    /// `[cluster]`: the default placement and the overcommit ratios.
    pub(super) fn cluster(&mut self, raw: RawCluster) -> Option<ClusterConfig> {
        let defaults = Overcommit::default();
        let placement = match raw.placement {
            Some(text) => self.strategy("cluster.placement", &text),
            None => Some(Strategy::default()),
        };
        let cpu = self.ratio("cluster.overcommit_cpu", raw.overcommit_cpu, defaults.cpu);
        let memory = self.ratio(
            "cluster.overcommit_memory",
            raw.overcommit_memory,
            defaults.memory,
        );
        Some(ClusterConfig {
            placement: placement?,
            overcommit: Overcommit {
                cpu: cpu?,
                memory: memory?,
            },
        })
    }

    fn ratio(&mut self, key: &str, value: Option<f64>, default: f64) -> Option<f64> {
        match value {
            None => Some(default),
            Some(v) if v.is_finite() && v > 0.0 && v <= MAX_OVERCOMMIT => Some(v),
            Some(_) => {
                self.errors.push(
                    key,
                    format!(
                        "must be a ratio above 0 and at most {MAX_OVERCOMMIT} (1.0: no overcommit)"
                    ),
                );
                None
            }
        }
    }

    /// `"spread"` or `"pack"`.
    fn strategy(&mut self, key: &str, text: &str) -> Option<Strategy> {
        match text {
            "spread" => Some(Strategy::Spread),
            "pack" => Some(Strategy::Pack),
            other => {
                let hint = if PlacementTarget::parse(other).is_some() && !other.contains(' ') {
                    format!(
                        "; to place on a member or group, use target = \"{}\"",
                        other.escape_debug()
                    )
                } else {
                    String::new()
                };
                self.errors.push(
                    key,
                    format!(
                        "must be \"spread\" (balance over the members) or \"pack\" (fill one member, then the next), not \"{}\"{hint}",
                        other.escape_debug()
                    ),
                );
                None
            }
        }
    }

    /// A cluster member's name, or `@group` (`lxd.target`, `pools[i].target`).
    pub(super) fn placement_target(&mut self, key: &str, text: String) -> Option<String> {
        let name = text.strip_prefix('@').unwrap_or(&text);
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@');
        if valid {
            Some(text)
        } else {
            self.errors.push(
                key,
                format!(
                    "invalid target \"{}\": a cluster member name (\"m1\") or a cluster group (\"@gpu\")",
                    text.escape_debug()
                ),
            );
            None
        }
    }

    /// `Some(None)`: the scope's own group.
    fn pool_group(
        &mut self,
        key: &str,
        group: Option<String>,
        defaults: &PoolDefaults<'_>,
    ) -> Option<Option<String>> {
        let Some(group) = group else {
            return Some(None);
        };
        if group.trim().is_empty() || group.chars().any(char::is_control) {
            self.errors.push(key, "must be a non-empty group name");
            return None;
        }
        if let Some(path) = &defaults.repo_scope {
            self.errors.push(
                key,
                format!(
                    "runner groups exist only for an organisation or enterprise, but github.path \"{path}\" is a repository"
                ),
            );
            return None;
        }
        Some(Some(group))
    }

    fn pool_sizing(
        &mut self,
        key: &dyn Fn(&str) -> String,
        min_idle: Option<u32>,
        max: Option<u32>,
    ) -> Option<Sizing> {
        let max = match max {
            None => {
                self.errors.push(
                    key("max"),
                    format!("missing: the most runners this pool may have, busy ones included (1 to {MAX_QUANTITY})"),
                );
                None
            }
            Some(max) if max == 0 || max > MAX_QUANTITY => {
                self.errors.push(
                    key("max"),
                    format!(
                        "must be between 1 and {MAX_QUANTITY} (GitHub's limit per runner group)"
                    ),
                );
                None
            }
            Some(max) => Some(max),
        };
        let min_idle = min_idle.unwrap_or(0);
        if let Some(max) = max {
            if min_idle > max {
                self.errors.push(
                    key("min_idle"),
                    format!("{min_idle} is more than max ({max})"),
                );
                return None;
            }
        }
        let as_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Some(Sizing::Demand {
            min_idle: as_usize(min_idle),
            max: as_usize(max?),
        })
    }

    /// Names are unique, and no two pools have the same labels and priority (a job could not
    /// be routed between them). Errors name the later pool.
    fn distinct_pools(&mut self, pools: &[PoolIdentity]) -> bool {
        let mut ok = true;
        for (position, pool) in pools.iter().enumerate() {
            let earlier = &pools[..position];
            if let Some(name) = &pool.name {
                if let Some(first) = earlier.iter().find(|p| p.name.as_ref() == Some(name)) {
                    self.errors.push(
                        format!("pools[{}].name", pool.index),
                        format!(
                            "duplicate pool name \"{}\": also pools[{}].name",
                            name.escape_debug(),
                            first.index
                        ),
                    );
                    ok = false;
                }
            }
            let Some(labels) = &pool.labels else {
                continue;
            };
            let same = earlier
                .iter()
                .find(|p| p.priority == pool.priority && p.labels.as_ref() == Some(labels));
            if let Some(first) = same {
                self.errors.push(
                    format!("pools[{}].labels", pool.index),
                    format!(
                        "same labels and priority as pools[{}] (\"{}\"): a job could not be routed between them; change the labels or the priority",
                        first.index,
                        first.name.as_deref().unwrap_or_default().escape_debug()
                    ),
                );
                ok = false;
            }
        }
        ok
    }

    /// An image alias (`lxd.image`, `pools[i].image`).
    pub(super) fn image_alias(&mut self, key: &str, image: String) -> Option<String> {
        if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c == ',') {
            self.errors.push(
                key,
                format!(
                    "invalid image alias \"{image}\": must be non-empty, without spaces or commas"
                ),
            );
            return None;
        }
        Some(image)
    }

    /// Extra runner labels (`runners.labels`, `pools[i].labels`); `reserved` is how many
    /// labels the runner has beside them.
    pub(super) fn labels(
        &mut self,
        key: &str,
        raw: Vec<String>,
        reserved: usize,
    ) -> Option<Vec<String>> {
        let mut ok = true;
        if raw.len() > MAX_LABELS - reserved {
            self.errors.push(
                key,
                format!(
                    "at most {} extra labels (GitHub allows {MAX_LABELS})",
                    MAX_LABELS - reserved
                ),
            );
            ok = false;
        }
        for (index, label) in raw.iter().enumerate() {
            if label.is_empty()
                || label.len() > 100
                || label
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ',')
            {
                self.errors.push(
                    format!("{key}[{index}]"),
                    format!(
                        "invalid label \"{}\": 1 to 100 characters, without spaces or commas",
                        label.escape_debug()
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(raw)
    }
}

/// Longest scale-set name accepted.
const MAX_SCALE_SET_NAME: usize = 100;

impl Validator<'_> {
    /// The scale-set pools (`scaling = "scaleset"`) of `[[pools]]` (`scaling[i]` is pool `i`'s
    /// `scaling` and `scale_set_name`), and `[scaleset]`. `pools` is `None` when a pool is
    /// invalid (its own errors are reported).
    pub(super) fn scale_sets(
        &mut self,
        scaling: &[(manager::scaleset::Scaling, Option<String>)],
        pools: Option<&[PoolSpec]>,
        app_name: Option<&str>,
        raw: RawScaleSet,
    ) -> Option<ScaleSetsConfig> {
        use manager::scaleset::{default_scale_set_name, ScaleSetPool, ScaleSetSettings, Scaling};
        let mut ok = true;
        let mut specs = Vec::new();
        let mut names = BTreeSet::new();
        for (index, (mode, name)) in scaling.iter().enumerate() {
            let key = |k: &str| format!("pools[{index}].{k}");
            if *mode != Scaling::Scaleset {
                if name.is_some() {
                    self.errors.push(
                        key("scale_set_name"),
                        "only for a pool with scaling = \"scaleset\"",
                    );
                    ok = false;
                }
                continue;
            }
            let Some(spec) = pools.and_then(|p| p.get(index)) else {
                continue;
            };
            if spec.registration != RegistrationMode::Jit {
                self.errors.push(
                    key("registration"),
                    "scaling = \"scaleset\" needs registration = \"jit\" (the scale set issues each runner's JIT config)",
                );
                ok = false;
            }
            let Some(app_name) = app_name else {
                continue;
            };
            let scale_set_name = match name {
                Some(n)
                    if n.trim().is_empty()
                        || n.len() > MAX_SCALE_SET_NAME
                        || n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
                {
                    self.errors.push(
                        key("scale_set_name"),
                        format!("1 to {MAX_SCALE_SET_NAME} characters, without spaces"),
                    );
                    ok = false;
                    continue;
                }
                Some(n) => n.clone(),
                None => default_scale_set_name(app_name, &spec.name),
            };
            if !names.insert(scale_set_name.to_ascii_lowercase()) {
                self.errors.push(
                    key("scale_set_name"),
                    format!("\"{scale_set_name}\" is the scale set of another pool"),
                );
                ok = false;
            }
            let (min_idle, max) = match spec.sizing {
                Sizing::Demand { min_idle, max } => (min_idle, max),
                Sizing::Fixed(q) => (q, q),
            };
            specs.push(ScaleSetPool {
                pool: spec.name.clone(),
                scale_set_name,
                runner_group: spec.runner_group.clone(),
                labels: spec.registration_labels(app_name),
                min_idle,
                max,
            });
        }
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        let defaults = ScaleSetSettings::default();
        let settings = ScaleSetSettings {
            standby_min: ms(raw.standby_backoff_min_ms, defaults.standby_min),
            standby_max: ms(raw.standby_backoff_max_ms, defaults.standby_max),
            error_backoff_min: ms(raw.error_backoff_min_ms, defaults.error_backoff_min),
            error_backoff_max: ms(raw.error_backoff_max_ms, defaults.error_backoff_max),
            owner_host: defaults.owner_host,
        };
        for (min_key, max_key, min, max) in [
            (
                "scaleset.standby_backoff_min_ms",
                "scaleset.standby_backoff_max_ms",
                settings.standby_min,
                settings.standby_max,
            ),
            (
                "scaleset.error_backoff_min_ms",
                "scaleset.error_backoff_max_ms",
                settings.error_backoff_min,
                settings.error_backoff_max,
            ),
        ] {
            // The key that is wrong: a zero minimum, else a maximum below the minimum.
            let wrong = if min.is_zero() {
                Some(min_key)
            } else {
                (max < min).then_some(max_key)
            };
            if let Some(key) = wrong {
                self.errors.push(
                    key,
                    "the backoff's minimum must be above 0 and its maximum at least the minimum",
                );
                ok = false;
            }
        }
        let poll_timeout = Duration::from_secs(raw.poll_timeout_seconds.unwrap_or(120));
        if poll_timeout < Duration::from_secs(2) {
            self.errors.push(
                "scaleset.poll_timeout_seconds",
                "must be at least 2 (and above the service's long-poll hold, ~50 s on GitHub)",
            );
            ok = false;
        }
        ok.then_some(ScaleSetsConfig {
            pools: specs,
            settings,
            poll_timeout,
        })
    }
}
