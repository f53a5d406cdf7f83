//! Baked runner images: a pool's base image with the verified runner installed (its user,
//! directories, the runner and the hook scripts; never a secret), published as an image with
//! the LXD/Incus API, kept current, and brought in through a canary.
//!
//! What the manager knows about an image lives in the image itself, as properties
//! ([`PROP_STATE`] and the others), so nothing is lost across restarts and two hosts see the
//! same thing:
//! - a new image starts as `canary`: it gets a share of the pool's launches while the last
//!   `good` one keeps the rest; once [`ImageSettings::promote_after`] of its runners have come
//!   online it becomes `good`, and idle runners of older images are replaced (busy ones finish
//!   their job first). If a canary runner fails to start, it becomes `bad` and is not launched
//!   again: the pool stays on the last good image.
//! - the first image of a pool has nothing to fall back to: it takes every launch while canary.
//! - a pool with a canary that no runner uses gives one idle runner of its older image up, so
//!   that the canary gets a launch even when the pool is not growing.
//! - an image no instance uses any more is deleted, except the newest good one (what a canary
//!   that fails rolls back to), the canary, and a bad one newer than the good one (so that the
//!   same runner on the same base image is not built again).
//!
//! This module is pure (what to launch, what is outdated, what to promote or delete);
//! `build.rs` builds an image, `reconcile/pass.rs` applies the decisions.

mod build;

pub use self::build::ImageError;

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Owner;
use crate::plan::{RemovalReason, RunnerState};
use crate::pool::PoolName;

/// Config key on an instance naming the baked image (fingerprint) it was launched from.
pub const IMAGE_KEY: &str = "user.runner-manager.image";
/// Config key on a build instance (never a runner) naming the pool it builds for.
pub const BUILD_KEY: &str = "user.runner-manager.build";

/// Image properties. `runner-manager.app` and `runner-manager.unit` say whose image it is.
pub const PROP_APP: &str = "runner-manager.app";
pub const PROP_UNIT: &str = "runner-manager.unit";
pub const PROP_POOL: &str = "runner-manager.pool";
/// The base image's alias and the fingerprint it pointed at when the image was built.
pub const PROP_BASE_IMAGE: &str = "runner-manager.base-image";
pub const PROP_BASE_FINGERPRINT: &str = "runner-manager.base-fingerprint";
pub const PROP_RUNNER_VERSION: &str = "runner-manager.runner-version";
pub const PROP_RUNNER_SHA256: &str = "runner-manager.runner-sha256";
pub const PROP_MANAGER_VERSION: &str = "runner-manager.manager-version";
/// Unix seconds.
pub const PROP_BUILT_AT: &str = "runner-manager.built-at";
/// `canary`, `good` or `bad`.
pub const PROP_STATE: &str = "runner-manager.state";

/// The manager's version, recorded in each image it builds.
pub const MANAGER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Canary and retention settings (the config's `[images]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageSettings {
    /// The share of a pool's launches that go to a canary image (0 < share ≤ 1; at least one
    /// launch per pass that creates).
    pub canary_share: f64,
    /// Canary runners that must come online before the image is good.
    pub promote_after: usize,
}

impl Default for ImageSettings {
    fn default() -> Self {
        Self {
            canary_share: 0.2,
            promote_after: 1,
        }
    }
}

/// Where an image is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageState {
    Canary,
    Good,
    Bad,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Good => "good",
            Self::Bad => "bad",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "canary" => Some(Self::Canary),
            "good" => Some(Self::Good),
            "bad" => Some(Self::Bad),
            _ => None,
        }
    }
}

/// One of this owner's baked images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakedImage {
    pub fingerprint: String,
    /// What instances are launched from.
    pub alias: String,
    pub pool: PoolName,
    pub base_image: String,
    pub base_fingerprint: String,
    pub runner_version: String,
    pub runner_sha256: String,
    pub manager_version: String,
    pub built_at: i64,
    pub state: ImageState,
    pub size: u64,
    /// Every property, as the server has them.
    pub properties: BTreeMap<String, String>,
}

impl BakedImage {
    /// `info` as one of `owner`'s images; `None` for anyone else's (or one without an alias).
    pub fn from_info(info: &crate::provider::ImageInfo, owner: &Owner) -> Option<Self> {
        let p = &info.properties;
        let get = |key: &str| p.get(key).cloned().unwrap_or_default();
        if p.get(PROP_APP)? != owner.app_name() || p.get(PROP_UNIT)? != &owner.unit().to_string() {
            return None;
        }
        Some(Self {
            fingerprint: info.fingerprint.clone(),
            alias: info.aliases.first()?.clone(),
            pool: PoolName::new(p.get(PROP_POOL)?).ok()?,
            base_image: get(PROP_BASE_IMAGE),
            base_fingerprint: get(PROP_BASE_FINGERPRINT),
            runner_version: get(PROP_RUNNER_VERSION),
            runner_sha256: get(PROP_RUNNER_SHA256),
            manager_version: get(PROP_MANAGER_VERSION),
            built_at: get(PROP_BUILT_AT).parse().unwrap_or(0),
            state: ImageState::parse(&get(PROP_STATE)).unwrap_or(ImageState::Bad),
            size: info.size,
            properties: p.clone(),
        })
    }

    /// Its properties with `state`.
    pub fn properties_with(&self, state: ImageState) -> BTreeMap<String, String> {
        let mut properties = self.properties.clone();
        properties.insert(PROP_STATE.to_owned(), state.as_str().to_owned());
        properties
    }
}

/// What a pool launches from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The newest good image.
    pub good: Option<BakedImage>,
    /// A canary newer than `good`.
    pub canary: Option<BakedImage>,
}

impl Selection {
    /// The images a runner of the pool may run: the good one and the canary.
    pub fn current(&self) -> BTreeSet<&str> {
        self.good
            .iter()
            .chain(&self.canary)
            .map(|i| i.fingerprint.as_str())
            .collect()
    }

    /// Whether an idle runner made from `image` (`None`: a plain launch) should be replaced:
    /// once the pool has a good image, a runner of any other image (or none) is.
    pub fn is_outdated(&self, image: Option<&str>) -> bool {
        self.good.is_some() && !image.is_some_and(|i| self.current().contains(i))
    }

    /// How `creates` launches split: `(on the canary, on the good image)`. Without a good
    /// image every launch goes to the canary; with both, the canary's share, at least one.
    pub fn split(&self, creates: usize, share: f64) -> (usize, usize) {
        match (&self.canary, &self.good) {
            (Some(_), None) => (creates, 0),
            (Some(_), Some(_)) if creates > 0 => {
                let canary = ((creates as f64 * share).floor() as usize).clamp(1, creates);
                (canary, creates - canary)
            }
            _ => (0, creates),
        }
    }
}

/// The pool's images, newest first, sorted into what it launches from.
pub fn select(images: &[BakedImage], pool: &PoolName) -> Selection {
    let mut mine: Vec<&BakedImage> = images.iter().filter(|i| &i.pool == pool).collect();
    mine.sort_by(|a, b| {
        b.built_at
            .cmp(&a.built_at)
            .then(b.fingerprint.cmp(&a.fingerprint))
    });
    let good = mine
        .iter()
        .find(|i| i.state == ImageState::Good)
        .map(|i| (*i).clone());
    let canary = mine
        .iter()
        .filter(|i| i.state == ImageState::Canary)
        .find(|i| good.as_ref().is_none_or(|g| i.built_at >= g.built_at))
        .map(|i| (*i).clone());
    Selection { good, canary }
}

/// What the canary's runners say so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Enough of its runners came online: it becomes the good image.
    Promote,
    /// A runner of it failed to start: it is bad, the pool stays on the good image.
    RollBack,
    Wait,
}

/// Judges the canary `fingerprint` from its runners' states this pass (`states` pairs each
/// runner's image with its class) and the launches on it that failed to start this pass.
pub fn judge<'a>(
    fingerprint: &str,
    states: impl IntoIterator<Item = (Option<&'a str>, RunnerState)>,
    failed_launches: usize,
    promote_after: usize,
) -> Verdict {
    let mut online = 0;
    let mut failed = failed_launches;
    for (image, state) in states {
        if image != Some(fingerprint) {
            continue;
        }
        match state {
            RunnerState::Busy | RunnerState::Idle { online: true } => online += 1,
            RunnerState::Remove(
                RemovalReason::ProcessDead
                | RemovalReason::Unresponsive
                | RemovalReason::InstanceNotRunning
                | RemovalReason::Orphan
                | RemovalReason::Offline,
            ) => failed += 1,
            _ => {}
        }
    }
    if failed > 0 {
        Verdict::RollBack
    } else if online >= promote_after.max(1) {
        Verdict::Promote
    } else {
        Verdict::Wait
    }
}

/// `pool`'s images to delete: neither the good one nor the canary, used by no instance, and
/// not a bad one newer than the good one (it records that its runner and base image failed,
/// so that they are not built again).
pub fn garbage<'a>(
    images: &'a [BakedImage],
    pool: &PoolName,
    selection: &Selection,
    in_use: &BTreeSet<&str>,
) -> Vec<&'a BakedImage> {
    let keep: BTreeSet<&str> = selection
        .good
        .iter()
        .chain(&selection.canary)
        .map(|i| i.fingerprint.as_str())
        .collect();
    images
        .iter()
        .filter(|i| &i.pool == pool)
        .filter(|i| {
            i.state != ImageState::Bad
                || selection
                    .good
                    .as_ref()
                    .is_some_and(|g| g.built_at > i.built_at)
        })
        .filter(|i| {
            !keep.contains(i.fingerprint.as_str()) && !in_use.contains(i.fingerprint.as_str())
        })
        .collect()
}

/// The runner version in a runner tarball's file name
/// (`actions-runner-linux-x64-2.331.0.tar.gz` → `2.331.0`); the name itself otherwise.
pub fn runner_version(filename: &str) -> String {
    let stem = filename.strip_suffix(".tar.gz").unwrap_or(filename);
    stem.rsplit('-')
        .next()
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or(stem)
        .to_owned()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
