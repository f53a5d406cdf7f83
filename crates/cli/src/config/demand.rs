//! `[demand]`, and the `[server]` keys that find the webhook whose deliveries are checked.

use super::*;

/// `queued_stale_seconds`: at least the reconcile floor, at most the day GitHub queues a job.
const STALE_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400;
/// `max_idle_age_seconds` when not 0: long enough for a runner to boot, at most 30 days.
const IDLE_AGE_RANGE: std::ops::RangeInclusive<u64> = 300..=2_592_000;
/// `queued_expiry_seconds`: a minute to a week (GitHub cancels a queued job after 24 hours).
const EXPIRY_RANGE: std::ops::RangeInclusive<u64> = 60..=604_800;

/// `server.public_url` and `server.hook_id`, each `None` when invalid (already recorded).
pub(super) struct Delivery {
    pub(super) public_url: Option<Option<Url>>,
    pub(super) hook_id: Option<Option<u64>>,
}

impl Validator<'_> {
    pub(super) fn demand(&mut self, raw: RawDemand) -> Option<DemandConfig> {
        let stale = self.seconds(
            "demand.queued_stale_seconds",
            raw.queued_stale_seconds
                .unwrap_or(DEFAULT_QUEUED_STALE_SECONDS),
            &STALE_RANGE,
        );
        let max_idle_age = match raw.max_idle_age_seconds.unwrap_or(0) {
            0 => Some(None),
            seconds if IDLE_AGE_RANGE.contains(&seconds) => {
                Some(Some(Duration::from_secs(seconds)))
            }
            _ => {
                self.errors.push(
                    "demand.max_idle_age_seconds",
                    format!(
                        "must be 0 (never) or between {} and {} seconds",
                        IDLE_AGE_RANGE.start(),
                        IDLE_AGE_RANGE.end()
                    ),
                );
                None
            }
        };
        let delivery_check = self.seconds(
            "demand.delivery_check_seconds",
            raw.delivery_check_seconds
                .unwrap_or(DEFAULT_DELIVERY_CHECK_SECONDS),
            &INTERVAL_RANGE,
        );
        let expiry = self.seconds(
            "demand.queued_expiry_seconds",
            raw.queued_expiry_seconds
                .unwrap_or(DEFAULT_QUEUED_EXPIRY_SECONDS),
            &EXPIRY_RANGE,
        );
        if let (Some(stale), Some(expiry)) = (stale, expiry) {
            if expiry <= stale {
                self.errors.push(
                    "demand.queued_expiry_seconds",
                    format!(
                        "must be more than demand.queued_stale_seconds ({})",
                        stale.as_secs()
                    ),
                );
                return None;
            }
        }
        Some(DemandConfig {
            settings: DemandSettings {
                stale_after: stale?,
                max_idle_age: max_idle_age?,
            },
            delivery_check_interval: delivery_check?,
            queued_expiry: expiry?,
        })
    }

    /// `[images]`.
    pub(super) fn images(&mut self, raw: RawImages) -> Option<ImagesConfig> {
        let defaults = ImagesConfig::default();
        let percent = raw
            .canary_percent
            .unwrap_or((defaults.settings.canary_share * 100.0).round() as u32);
        let share = if (1..=100).contains(&percent) {
            Some(f64::from(percent) / 100.0)
        } else {
            self.errors.push(
                "images.canary_percent",
                "must be between 1 and 100 (the share of a pool's launches a new image gets)",
            );
            None
        };
        let promote_after = match raw.promote_after.unwrap_or(1) {
            n @ 1..=100 => Some(n as usize),
            _ => {
                self.errors.push(
                    "images.promote_after",
                    "must be between 1 and 100 (the canary runners that must come online)",
                );
                None
            }
        };
        let check = self.seconds(
            "images.check_seconds",
            raw.check_seconds.unwrap_or(3600),
            &(60..=604_800),
        );
        Some(ImagesConfig {
            settings: manager::images::ImageSettings {
                canary_share: share?,
                promote_after: promote_after?,
            },
            check_interval: check?,
        })
    }

    fn seconds(
        &mut self,
        key: &str,
        seconds: u64,
        range: &std::ops::RangeInclusive<u64>,
    ) -> Option<Duration> {
        if range.contains(&seconds) {
            return Some(Duration::from_secs(seconds));
        }
        self.errors.push(
            key,
            format!(
                "must be between {} and {} seconds",
                range.start(),
                range.end()
            ),
        );
        None
    }

    /// `server.public_url` ("" = unset) and `server.hook_id`.
    pub(super) fn delivery(
        &mut self,
        public_url: Option<String>,
        hook_id: Option<u64>,
    ) -> Delivery {
        let public_url = match public_url.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(url) => self
                .url("server.public_url", url, &["https", "http"])
                .map(Some),
        };
        let hook_id = match hook_id {
            Some(0) => {
                self.errors
                    .push("server.hook_id", "must be greater than zero");
                None
            }
            id => Some(id),
        };
        Delivery {
            public_url,
            hook_id,
        }
    }
}
