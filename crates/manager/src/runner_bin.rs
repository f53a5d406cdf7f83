//! The verified runner tarball cache in the state directory.
//!
//! Layout: `runner-<sha256>.tar.gz` files and `current.json` naming the one in use. An update
//! downloads to a temp file while hashing, verifies the checksum and that the file is a gzip tar
//! holding `config.sh` and `run.sh`, renames it into place, switches `current.json` atomically, and
//! only then removes older versions. A failed update leaves the current one untouched.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::provider::RunnerDownload;

const CURRENT: &str = "current.json";

#[derive(Debug, thiserror::Error)]
pub enum RunnerBinError {
    #[error("checksum for runner binary is not found in github response")]
    NoChecksum,
    #[error("checksum mismatch for downloaded runner binary: expected {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("downloaded runner binary cannot be decompressed: {0}")]
    NotATarball(String),
    #[error("runner binary has no {0} at its root")]
    MissingScript(&'static str),
    /// A blocking task (hashing, verifying) died before it answered.
    #[error("{what} did not finish")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("downloading runner binary from {url}: {message}")]
    Download { url: String, message: String },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no runner binary is cached: update it first")]
    Missing,
    #[error("cached runner binary {path} no longer matches its checksum")]
    Corrupt { path: PathBuf },
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RunnerBinError + 'a {
    move |source| RunnerBinError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// What `current.json` records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedBinary {
    pub filename: String,
    pub download_url: String,
    pub sha256: String,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct RunnerBinCache {
    dir: PathBuf,
    http: reqwest::Client,
}

impl RunnerBinCache {
    /// `dir` is created on first update.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, RunnerBinError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .timeout(Duration::from_secs(30 * 60))
            .build()
            .map_err(|e| RunnerBinError::Download {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(Self {
            dir: dir.into(),
            http,
        })
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("runner-{sha256}.tar.gz"))
    }

    /// The binary in use, if any (its file present).
    pub fn current(&self) -> Option<CachedBinary> {
        let raw = std::fs::read(self.dir.join(CURRENT)).ok()?;
        let current: CachedBinary = serde_json::from_slice(&raw).ok()?;
        self.path_for(&current.sha256).is_file().then_some(current)
    }

    /// Whether a verified runner binary is cached (the seed's `check_runner_bin`).
    pub fn check(&self) -> bool {
        self.current().is_some()
    }

    /// Reads the cached tarball, re-verifying its checksum.
    pub async fn load(&self) -> Result<(CachedBinary, bytes::Bytes), RunnerBinError> {
        let current = self.current().ok_or(RunnerBinError::Missing)?;
        let path = self.path_for(&current.sha256);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(io("reading runner binary", &path))?;
        let (actual, bytes) =
            tokio::task::spawn_blocking(move || (hex::encode(Sha256::digest(&bytes)), bytes))
                .await
                .map_err(|source| RunnerBinError::Task {
                    what: "hashing the cached runner binary",
                    source,
                })?;
        if actual != current.sha256 {
            return Err(RunnerBinError::Corrupt { path });
        }
        Ok((current, bytes.into()))
    }

    /// Downloads, verifies and switches to `download`; the old binary stays in use on any error.
    pub async fn update(&self, download: &RunnerDownload) -> Result<CachedBinary, RunnerBinError> {
        let expected = download.sha256.trim().to_ascii_lowercase();
        if expected.is_empty() {
            return Err(RunnerBinError::NoChecksum);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(io("creating runner binary cache", &self.dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(&self.dir)
            .map_err(io("creating temp file in", &self.dir))?;
        let download_err = |message: String| RunnerBinError::Download {
            url: download.download_url.clone(),
            message,
        };

        let mut request = self.http.get(&download.download_url);
        if let Some(token) = &download.temp_download_token {
            request = request.bearer_auth(token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| download_err(e.to_string()))?;
        if !response.status().is_success() {
            return Err(download_err(format!("http status {}", response.status())));
        }
        let mut hasher = Sha256::new();
        let mut file = tmp
            .as_file()
            .try_clone()
            .map_err(io("opening", tmp.path()))?;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| download_err(e.to_string()))?;
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(io("writing", tmp.path()))?;
        }
        file.sync_all().map_err(io("syncing", tmp.path()))?;
        let actual = hex::encode(hasher.finalize());
        if actual != expected {
            return Err(RunnerBinError::ChecksumMismatch { expected, actual });
        }

        let check_path = tmp.path().to_owned();
        tokio::task::spawn_blocking(move || verify_tarball(&check_path))
            .await
            .map_err(|source| RunnerBinError::Task {
                what: "verifying the downloaded runner binary",
                source,
            })??;

        let final_path = self.path_for(&expected);
        tmp.persist(&final_path).map_err(|e| RunnerBinError::Io {
            what: "renaming runner binary to",
            path: final_path.clone(),
            source: e.error,
        })?;
        let cached = CachedBinary {
            filename: download.filename.clone(),
            download_url: download.download_url.clone(),
            sha256: expected,
        };
        self.write_current(&cached)?;
        self.remove_others(&final_path);
        Ok(cached)
    }

    fn write_current(&self, cached: &CachedBinary) -> Result<(), RunnerBinError> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".current-")
            .tempfile_in(&self.dir)
            .map_err(io("creating temp file in", &self.dir))?;
        let json = serde_json::to_vec_pretty(cached).map_err(|e| RunnerBinError::Io {
            what: "encoding",
            path: self.dir.join(CURRENT),
            source: e.into(),
        })?;
        tmp.write_all(&json).map_err(io("writing", &self.dir))?;
        tmp.as_file().sync_all().map_err(io("syncing", &self.dir))?;
        let path = self.dir.join(CURRENT);
        tmp.persist(&path).map_err(|e| RunnerBinError::Io {
            what: "renaming",
            path,
            source: e.error,
        })?;
        Ok(())
    }

    /// Removes every other cached version, so an outdated binary is never installed again.
    fn remove_others(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_binary = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("runner-") && n.ends_with(".tar.gz"));
            if is_binary && path != keep {
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(message = "Removing an old runner binary failed.", path = %path.display(), %error);
                }
            }
        }
    }
}

/// Checks that `path` is a gzip tar with `config.sh` and `run.sh` at its root.
fn verify_tarball(path: &Path) -> Result<(), RunnerBinError> {
    let file = std::fs::File::open(path).map_err(io("opening", path))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|e| RunnerBinError::NotATarball(e.to_string()))?;
    let (mut config, mut run) = (false, false);
    for entry in entries {
        let entry = entry.map_err(|e| RunnerBinError::NotATarball(e.to_string()))?;
        let entry_path = entry
            .path()
            .map_err(|e| RunnerBinError::NotATarball(e.to_string()))?;
        let name = entry_path.to_string_lossy();
        let name = name.trim_start_matches("./");
        config |= name == "config.sh";
        run |= name == "run.sh";
    }
    if !config {
        return Err(RunnerBinError::MissingScript("config.sh"));
    }
    if !run {
        return Err(RunnerBinError::MissingScript("run.sh"));
    }
    Ok(())
}

/// The `os` and `architecture` of GitHub's runner downloads for the runners of this host: Linux
/// containers run the host's architecture (`x86_64` → `x64`, `aarch64` → `arm64`, `arm` →
/// `arm`; VMs of another architecture are not supported).
pub fn platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    };
    ("linux", arch)
}

/// Picks the first download matching `os` and `arch`.
pub fn select_download<'a>(
    downloads: &'a [RunnerDownload],
    os: &str,
    arch: &str,
) -> Option<&'a RunnerDownload> {
    downloads
        .iter()
        .find(|d| d.os == os && d.architecture == arch)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Secret;

    /// A gzip tarball with the given files.
    pub(crate) fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder
                .append_data(&mut header, name, content.as_bytes())
                .expect("append");
        }
        builder.into_inner().expect("tar").finish().expect("gzip")
    }

    pub(crate) fn good_tarball() -> Vec<u8> {
        tarball(&[("./config.sh", "#!/bin/sh\n"), ("./run.sh", "#!/bin/sh\n")])
    }

    /// Serves `/bin/<name>` from a map; records the Authorization header.
    async fn serve(
        files: Vec<(&'static str, Vec<u8>)>,
    ) -> (String, std::sync::Arc<parking_lot::Mutex<Vec<String>>>) {
        use axum::extract::{Path as AxPath, State};
        use axum::http::{HeaderMap, StatusCode};
        use std::collections::HashMap;
        use std::sync::Arc;
        type Seen = Arc<parking_lot::Mutex<Vec<String>>>;
        type Files = Arc<HashMap<&'static str, Vec<u8>>>;
        let files: Files = Arc::new(files.into_iter().collect());
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route(
                "/bin/{name}",
                axum::routing::get(
                    |State((files, seen)): State<(Files, Seen)>,
                     AxPath(name): AxPath<String>,
                     headers: HeaderMap| async move {
                        if let Some(auth) = headers.get("authorization") {
                            seen.lock()
                                .push(auth.to_str().unwrap_or_default().to_owned());
                        }
                        match files.get(name.as_str()) {
                            Some(b) => (StatusCode::OK, b.clone()),
                            None => (StatusCode::NOT_FOUND, Vec::new()),
                        }
                    },
                ),
            )
            .with_state((files, seen.clone()));
        let url = test_support::http::serve(std::net::Ipv4Addr::LOCALHOST, app).await;
        (url, seen)
    }

    fn download(base: &str, name: &str, sha256: &str) -> RunnerDownload {
        RunnerDownload {
            os: "linux".into(),
            architecture: "x64".into(),
            download_url: format!("{base}/bin/{name}"),
            filename: name.into(),
            sha256: sha256.into(),
            temp_download_token: None,
        }
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn cached_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A cache in a fresh directory, updated to `v1` (a good tarball) from a server that also
    /// serves `more`.
    struct Cached {
        dir: tempfile::TempDir,
        cache: RunnerBinCache,
        base: String,
        v1: Vec<u8>,
    }

    async fn cached_v1(mut more: Vec<(&'static str, Vec<u8>)>) -> Cached {
        let v1 = good_tarball();
        more.push(("v1.tgz", v1.clone()));
        let (base, _) = serve(more).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = RunnerBinCache::new(dir.path()).expect("cache");
        cache
            .update(&download(&base, "v1.tgz", &sha(&v1)))
            .await
            .expect("v1");
        Cached {
            dir,
            cache,
            base,
            v1,
        }
    }

    #[tokio::test]
    async fn update_verifies_and_replaces_old_version() {
        let v1 = good_tarball();
        let v2 = tarball(&[
            ("config.sh", "v2"),
            ("run.sh", "v2"),
            ("bin/Runner.Listener", "x"),
        ]);
        let (base, seen) = serve(vec![("v1.tgz", v1.clone()), ("v2.tgz", v2.clone())]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = RunnerBinCache::new(dir.path()).expect("cache");
        assert!(!cache.check());
        assert!(matches!(cache.load().await, Err(RunnerBinError::Missing)));

        cache
            .update(&download(&base, "v1.tgz", &sha(&v1)))
            .await
            .expect("v1");
        assert!(cache.check());
        let (meta, bytes) = cache.load().await.expect("load");
        assert_eq!(
            bytes.as_ref(),
            v1.as_slice(),
            "exactly the downloaded bytes"
        );
        assert_eq!(meta.filename, "v1.tgz");

        let mut d2 = download(&base, "v2.tgz", &sha(&v2).to_uppercase());
        d2.temp_download_token = Some(Secret::new("tmp-token"));
        cache.update(&d2).await.expect("v2");
        let (_, bytes) = cache.load().await.expect("load");
        assert_eq!(bytes.as_ref(), v2.as_slice());
        assert_eq!(
            cached_files(dir.path()),
            vec![CURRENT.to_owned(), format!("runner-{}.tar.gz", sha(&v2))],
            "old version removed, no temp files left"
        );
        assert_eq!(seen.lock().as_slice(), ["Bearer tmp-token"]);
    }

    #[tokio::test]
    async fn failed_updates_keep_the_old_binary() {
        let not_tar = b"definitely not a tarball".to_vec();
        let no_config = tarball(&[("run.sh", "x")]);
        let Cached {
            dir,
            cache,
            base,
            v1,
        } = cached_v1(vec![
            ("bad.tgz", not_tar.clone()),
            ("noconfig.tgz", no_config.clone()),
        ])
        .await;
        let before = cached_files(dir.path());

        type Check = fn(&RunnerBinError) -> bool;
        let cases: Vec<(RunnerDownload, Check)> = vec![
            (download(&base, "v1.tgz", ""), |e| {
                matches!(e, RunnerBinError::NoChecksum)
            }),
            (download(&base, "v1.tgz", &sha(b"other")), |e| {
                matches!(e, RunnerBinError::ChecksumMismatch { .. })
            }),
            (download(&base, "bad.tgz", &sha(&not_tar)), |e| {
                matches!(e, RunnerBinError::NotATarball(_))
            }),
            (download(&base, "noconfig.tgz", &sha(&no_config)), |e| {
                matches!(e, RunnerBinError::MissingScript("config.sh"))
            }),
            (download(&base, "missing.tgz", "abc"), |e| {
                matches!(e, RunnerBinError::Download { .. })
            }),
        ];
        for (d, is_expected) in cases {
            let err = cache.update(&d).await.expect_err("must fail");
            assert!(is_expected(&err), "{} gave {err}", d.filename);
            assert_eq!(
                cached_files(dir.path()),
                before,
                "{} left files behind",
                d.filename
            );
            let (_, bytes) = cache.load().await.expect("old still loads");
            assert_eq!(bytes.as_ref(), v1.as_slice());
        }
    }

    #[tokio::test]
    async fn corrupted_cache_is_refused() {
        let Cached { dir, cache, v1, .. } = cached_v1(Vec::new()).await;
        std::fs::write(
            dir.path().join(format!("runner-{}.tar.gz", sha(&v1))),
            b"tampered",
        )
        .expect("write");
        assert!(matches!(
            cache.load().await,
            Err(RunnerBinError::Corrupt { .. })
        ));
    }

    #[test]
    fn selects_first_match() {
        let mut a = download("http://x", "a", "1");
        let mut b = download("http://x", "b", "2");
        a.architecture = "arm64".into();
        b.os = "linux".into();
        let c = download("http://x", "c", "3");
        let all = vec![a, b, c];
        assert_eq!(
            select_download(&all, "linux", "x64").map(|d| d.filename.as_str()),
            Some("b")
        );
        assert_eq!(
            select_download(&all, "linux", "arm64").map(|d| d.filename.as_str()),
            Some("a")
        );
        assert!(select_download(&all, "osx", "x64").is_none());
    }
}
