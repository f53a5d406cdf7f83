//! `check-config --route`: which pool a job's `runs-on` labels go to, and the human rendering
//! of the pool rows `check-config` prints after the summary.

use std::fmt::Write as _;

use super::*;

/// How a job is routed: the label rule, then priority.
pub const ROUTE_NOTE: &str = "a pool matches when its runners have all the job's labels; the highest priority (then the name) goes first, and at run time a full pool passes the job to the next";

/// Where a job with some `runs-on` labels goes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouteSummary {
    /// The job's labels, as given.
    pub labels: Vec<String>,
    /// The pool that takes the job; `None` when no pool matches.
    pub pool: Option<String>,
    /// Every matching pool, best first (`pool` is the first).
    pub candidates: Vec<RouteCandidate>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouteCandidate {
    pub name: String,
    pub priority: i32,
}

impl ConfigSummary {
    /// The rows `check-config` prints after the summary's: each pool and `[demand]` (with
    /// `[[pools]]` only), the webhook to check (when set), and the route (with `--route`).
    /// Empty for a single-pool config without those.
    pub fn render_pools(&self) -> String {
        let mut text = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(text, "  {name:<15} {value}");
        };
        for pool in &self.pools {
            row(
                &format!("pool {}", pool.name),
                format!(
                    "{} to {} x {} \"{}\": {} cpu, {} memory, {} disk, {} registration, priority {}",
                    pool.min_idle,
                    pool.max,
                    pool.instance_type,
                    pool.image,
                    pool.cpu,
                    pool.memory,
                    pool.disk,
                    pool.registration,
                    pool.priority
                ),
            );
            if pool.image_mode == "baked" {
                row(
                    "",
                    format!("baked image of \"{}\", built and kept current", pool.image),
                );
            }
            row("", format!("runner group \"{}\"", pool.runner_group));
            row("", format!("labels {}", pool.labels.join(", ")));
            if !pool.profiles.is_empty() {
                row("", format!("profiles {}", pool.profiles.join(", ")));
            }
        }
        if !self.pools.is_empty() {
            let demand = &self.demand;
            row(
                "demand",
                format!(
                    "stale after {}s, idle runners {}, queued jobs dropped after {}s",
                    demand.queued_stale_seconds,
                    match demand.max_idle_age_seconds {
                        0 => "never replaced".to_owned(),
                        age => format!("replaced after {age}s"),
                    },
                    demand.queued_expiry_seconds
                ),
            );
        }
        if self.public_url.is_some() || self.hook_id.is_some() {
            row(
                "webhook",
                format!(
                    "{}, {}, deliveries checked every {}s",
                    self.public_url
                        .as_deref()
                        .map_or("public_url not set".to_owned(), |url| format!(
                            "public_url {url}"
                        )),
                    self.hook_id
                        .map_or("hook looked up".to_owned(), |id| format!("hook {id}")),
                    self.demand.delivery_check_seconds
                ),
            );
        }
        if let Some(route) = &self.route {
            let job = format!("runs-on [{}]", route.labels.join(", "));
            match route.candidates.split_first() {
                None => row(
                    "route",
                    format!("{job}: no pool matches (no pool's runners have all these labels)"),
                ),
                Some((first, rest)) => {
                    row(
                        "route",
                        format!(
                            "{job}: pool \"{}\" (priority {})",
                            first.name, first.priority
                        ),
                    );
                    if !rest.is_empty() {
                        let others: Vec<String> = rest
                            .iter()
                            .map(|p| format!("\"{}\" (priority {})", p.name, p.priority))
                            .collect();
                        row("", format!("then {}", others.join(", ")));
                    }
                }
            }
            row("", ROUTE_NOTE.to_owned());
        }
        text
    }
}
