//! The baked images' part of a pass (see [`crate::images`] for the decisions): read the
//! pool's images, mark runners of replaced images outdated, judge the canary, split the
//! launches between the canary and the good image, and delete images nothing uses.

use std::collections::{BTreeMap, BTreeSet};

use super::RunnerManager;
use crate::demand::FleetPlan;
use crate::events::ImageJudged;
use crate::images::{self, BakedImage, ImageState, Selection, Verdict};
use crate::plan::Observed;
use crate::pool::{ImageMode, PoolName, PoolSpec};
use crate::provider::render_chain;

/// The baked pools' images in this pass.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    images: Vec<BakedImage>,
    pub(super) selections: BTreeMap<PoolName, Selection>,
}

/// One group of a pool's launches: from `image` (`None`: the base image), `count` of them.
#[derive(Debug, Clone)]
pub(super) struct Launches {
    pub(super) image: Option<BakedImage>,
    pub(super) count: usize,
    pub(super) canary: bool,
}

impl RunnerManager {
    /// Reads the images when a pool is baked. A failure to list them only costs this pass its
    /// baked launches: the pools launch from their base images, as plain ones do.
    pub(super) async fn image_catalog(&self, pools: &[PoolSpec]) -> Catalog {
        let baked: Vec<&PoolSpec> = pools
            .iter()
            .filter(|p| p.image_mode == ImageMode::Baked)
            .collect();
        if baked.is_empty() {
            return Catalog::default();
        }
        let images = match self.baked_images().await {
            Ok(images) => images,
            Err(error) => {
                tracing::warn!(message = "Listing baked images failed; launching from base images this pass.", error = %render_chain(&error));
                return Catalog::default();
            }
        };
        let selections = baked
            .iter()
            .map(|p| (p.name.clone(), images::select(&images, &p.name)))
            .collect();
        Catalog { images, selections }
    }

    /// Judges each canary from its runners' classes this pass; a verdict is written to the
    /// image (its state property) and applies to this pass's launches already.
    pub(super) async fn judge_canaries(
        &self,
        catalog: &mut Catalog,
        fleet: &FleetPlan,
        observed: &Observed,
    ) {
        let image_of: BTreeMap<_, _> = observed
            .instances
            .iter()
            .map(|i| (&i.name, i.image.as_deref()))
            .collect();
        for (pool, selection) in &mut catalog.selections {
            let Some(canary) = selection.canary.clone() else {
                continue;
            };
            let Some(plan) = fleet.pool(pool.as_str()) else {
                continue;
            };
            let states = plan
                .plan
                .states
                .iter()
                .map(|(name, state)| (image_of.get(name).copied().flatten(), *state));
            let verdict = images::judge(
                &canary.fingerprint,
                states,
                0,
                self.config.images.promote_after,
            );
            if let Some(state) = self.apply_verdict(pool, selection, &canary, verdict).await {
                set_state(&mut catalog.images, &canary.fingerprint, state);
            }
        }
    }

    /// Writes `verdict` on `canary` and moves `selection` along with it; the state written.
    async fn apply_verdict(
        &self,
        pool: &PoolName,
        selection: &mut Selection,
        canary: &BakedImage,
        verdict: Verdict,
    ) -> Option<ImageState> {
        let (state, word) = match verdict {
            Verdict::Wait => return None,
            Verdict::Promote => (ImageState::Good, "promoted"),
            Verdict::RollBack => (ImageState::Bad, "rolled_back"),
        };
        if let Err(error) = self
            .provider
            .set_image_properties(&canary.fingerprint, &canary.properties_with(state))
            .await
        {
            tracing::warn!(message = "Recording the canary's verdict failed; the next pass judges it again.",
                pool = %pool, alias = %canary.alias, error = %render_chain(&error));
            // Either way, this pass launches nothing more on a canary that failed.
            if verdict == Verdict::RollBack {
                selection.canary = None;
            }
            return None;
        }
        ImageJudged {
            pool: pool.to_string(),
            alias: canary.alias.clone(),
            verdict: word,
        }
        .emit(&self.telemetry);
        selection.canary = None;
        if verdict == Verdict::Promote {
            selection.good = Some(BakedImage {
                state,
                ..canary.clone()
            });
        }
        Some(state)
    }

    /// How `count` launches of `pool` split between its canary, its good image and (when it
    /// has neither, or is plain) its base image.
    pub(super) fn launches(
        catalog: &Catalog,
        pool: &PoolName,
        count: usize,
        share: f64,
    ) -> Vec<Launches> {
        let Some(selection) = catalog.selections.get(pool) else {
            return vec![Launches {
                image: None,
                count,
                canary: false,
            }];
        };
        let (on_canary, on_good) = selection.split(count, share);
        [
            (selection.canary.clone(), on_canary, true),
            (selection.good.clone(), on_good, false),
        ]
        .into_iter()
        .filter(|(_, n, _)| *n > 0)
        .map(|(image, count, canary)| Launches {
            image,
            count,
            canary,
        })
        .collect()
    }

    /// Rolls back the canaries whose launches failed this pass.
    pub(super) async fn roll_back_failed(&self, catalog: &mut Catalog, failed: &BTreeSet<String>) {
        for (pool, selection) in &mut catalog.selections {
            let Some(canary) = selection.canary.clone() else {
                continue;
            };
            if failed.contains(&canary.fingerprint) {
                if let Some(state) = self
                    .apply_verdict(pool, selection, &canary, Verdict::RollBack)
                    .await
                {
                    set_state(&mut catalog.images, &canary.fingerprint, state);
                }
            }
        }
    }

    /// Deletes the baked pools' images that nothing uses and that are neither good, nor the
    /// rollback, nor the canary.
    pub(super) async fn collect_images(&self, catalog: &Catalog, observed: &Observed) {
        let in_use: BTreeSet<&str> = observed
            .instances
            .iter()
            .filter_map(|i| i.image.as_deref())
            .collect();
        for (pool, selection) in &catalog.selections {
            for image in images::garbage(&catalog.images, pool, selection, &in_use) {
                match self.provider.delete_image(&image.fingerprint).await {
                    Ok(()) => {
                        tracing::info!(message = "Image deleted.", pool = %pool, alias = %image.alias, state = image.state.as_str());
                        crate::events::image_event(&self.telemetry, pool.as_str(), "deleted");
                    }
                    Err(error) => {
                        tracing::warn!(message = "Deleting an image failed; the next pass tries again.",
                            alias = %image.alias, error = %render_chain(&error));
                    }
                }
            }
        }
    }
}

impl Catalog {
    /// Whether `pool`'s launches this pass come from a baked image (a good one or a canary).
    pub(super) fn launches_baked(&self, pool: &PoolName) -> bool {
        self.selections
            .get(pool)
            .is_some_and(|s| s.good.is_some() || s.canary.is_some())
    }

    /// Marks each baked pool's runners whose image the pool no longer launches; and when a
    /// pool's canary has no runner, its oldest idle runner of another image, so that the
    /// canary gets a launch even when the pool is not growing.
    pub(super) fn mark_outdated(&self, observed: &mut Observed) {
        for instance in &mut observed.instances {
            if let Some(selection) = self.selections.get(&instance.pool) {
                instance.outdated = selection.is_outdated(instance.image.as_deref());
            }
        }
        let idle: BTreeSet<_> = observed
            .registrations
            .iter()
            .filter(|r| r.online && !r.busy)
            .map(|r| r.name.clone())
            .collect();
        for (pool, selection) in &self.selections {
            let Some(canary) = &selection.canary else {
                continue;
            };
            let in_pool = |i: &&mut crate::plan::ObservedInstance| &i.pool == pool;
            if observed
                .instances
                .iter_mut()
                .filter(in_pool)
                .any(|i| i.image.as_deref() == Some(canary.fingerprint.as_str()))
            {
                continue;
            }
            if let Some(oldest) = observed
                .instances
                .iter_mut()
                .filter(in_pool)
                .filter(|i| idle.contains(&i.name) && !i.outdated)
                .max_by_key(|i| i.age)
            {
                oldest.outdated = true;
            }
        }
    }
}

fn set_state(images: &mut [BakedImage], fingerprint: &str, state: ImageState) {
    for image in images.iter_mut().filter(|i| i.fingerprint == fingerprint) {
        image.state = state;
    }
}
