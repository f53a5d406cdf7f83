//! The daemon's image upkeep for pools with `image_mode = "baked"`: at start and every
//! `images.check_seconds`, the runner binary is checked (a newer release is downloaded and
//! verified), then each baked pool's image is built when its runner or its base image changed.
//! A new image asks for a pass: its canary gets launches, and a good one rotates in.

use std::sync::Arc;
use std::time::Duration;

use crate::daemon::{DaemonHandle, TriggerSource};
use crate::ops::Operations;

/// How soon a round that could not build (no runner binary cached yet, the server busy) is
/// tried again.
const RETRY: Duration = Duration::from_secs(60);

/// Runs until `stop`. Every round checks the runner binary first (the first one too: the
/// daemon's own check at start may not have cached it yet), then builds what is missing.
pub async fn images_loop(
    ops: Arc<dyn Operations>,
    daemon: DaemonHandle,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let mut wait = interval;
        {
            match ops.runner_bin_update().await {
                Ok(update) if update.updated => {
                    tracing::info!(message = "Newer runner binary cached.", file = %update.binary.filename)
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(message = "Runner binary check failed.", error = %format!("{err:#}"))
                }
            }
        }
        match ops.image_build(None).await {
            Ok(output) => {
                for (pool, error) in &output.failed {
                    tracing::warn!(message = "Image build failed; the pool keeps its current image.", pool = %pool, error = %error);
                }
                if !output.failed.is_empty() {
                    wait = wait.min(RETRY);
                }
                if !output.built.is_empty() {
                    let aliases: Vec<&str> =
                        output.built.iter().map(|i| i.alias.as_str()).collect();
                    daemon.trigger(
                        TriggerSource::Image,
                        format!("image(s) built: {}", aliases.join(", ")),
                    );
                }
            }
            Err(err) => {
                tracing::warn!(message = "Image upkeep failed.", error = %format!("{err:#}"));
                wait = wait.min(RETRY);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
