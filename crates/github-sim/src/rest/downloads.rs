//! The runner tarball downloads.

use super::*;

/// Asset file names of the runner tarball for a version.
pub(crate) fn asset_names(version: &str) -> Vec<(&'static str, &'static str, String)> {
    [
        ("linux", "x64"),
        ("linux", "arm64"),
        ("osx", "x64"),
        ("osx", "arm64"),
    ]
    .into_iter()
    .map(|(os, arch)| {
        (
            os,
            arch,
            format!("actions-runner-{os}-{arch}-{version}.tar.gz"),
        )
    })
    .collect()
}

pub(super) async fn downloads(caller: Caller, headers: HeaderMap) -> Handled {
    let (scope, version) = {
        let (state, scope) = caller.authorized()?;
        (scope, state.config.runner_version.clone())
    };
    let shared = &caller.shared;
    let base = base_url(shared.public_url.as_deref(), &headers);
    let body: Vec<Value> = match &shared.tarball {
        None => Vec::new(),
        Some(tarball) => asset_names(&version)
            .into_iter()
            .map(|(os, arch, filename)| {
                json!({
                    "os": os,
                    "architecture": arch,
                    "download_url": format!("{base}/actions/runner/releases/download/v{version}/{filename}"),
                    "filename": filename,
                    "temp_download_token": random_string(ALNUM, 40),
                    "sha256_checksum": tarball.sha256,
                })
            })
            .collect(),
    };
    Ok(with_accepted_permissions(
        json_response(StatusCode::OK, &Value::Array(body)),
        &scope,
    ))
}
