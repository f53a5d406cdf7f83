//! Files inside an instance: push (with owner and mode), create directories, pull, list, delete.

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::Method;

use crate::client::{decode_envelope, Client, Reply};
use crate::error::{Error, Result};
use crate::instances::instance_path;
use crate::names::validate_instance_name;

/// Owner and mode of a new file or directory. They apply only when the path is created: the
/// servers keep the old ones when a file is overwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePerms {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl FilePerms {
    /// root, 0644.
    pub const fn file() -> Self {
        FilePerms {
            uid: 0,
            gid: 0,
            mode: 0o644,
        }
    }

    /// root, 0600: for secrets.
    pub const fn secret() -> Self {
        FilePerms {
            uid: 0,
            gid: 0,
            mode: 0o600,
        }
    }

    /// root, 0755: directories and executables.
    pub const fn executable() -> Self {
        FilePerms {
            uid: 0,
            gid: 0,
            mode: 0o755,
        }
    }

    pub const fn owned_by(self, uid: u32, gid: u32) -> Self {
        FilePerms { uid, gid, ..self }
    }
}

/// A pulled file: its bytes and what the server says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    pub bytes: Bytes,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The permission bits, for example `0o600`.
    pub mode: Option<u32>,
}

impl Client {
    /// Writes a file (created or overwritten). The parent directory must exist: see
    /// [`Client::create_dir`]. The body is sent as `application/octet-stream`; without that header
    /// the servers write an empty file.
    ///
    /// Measured: both servers also write into a *stopped* container's filesystem (so a file can be
    /// placed before the first start); an instance that does not exist gives [`Error::NotFound`].
    pub async fn push_file(
        &self,
        name: &str,
        path: &str,
        content: impl Into<Bytes>,
        perms: FilePerms,
    ) -> Result<()> {
        let what = format!("pushing {path} to {name}");
        let rb = self
            .file_req(Method::POST, name, path)?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(self.header("Type"), "file")
            .header(self.header("Write"), "overwrite")
            .header(self.header("Uid"), perms.uid.to_string())
            .header(self.header("Gid"), perms.gid.to_string())
            .header(self.header("Mode"), format!("{:04o}", perms.mode))
            .body(content.into());
        self.sync::<serde_json::Value>(&what, rb).await.map(|_| ())
    }

    /// Creates a directory; an existing one is left as it is.
    pub async fn create_dir(&self, name: &str, path: &str, perms: FilePerms) -> Result<()> {
        let what = format!("creating directory {path} in {name}");
        let rb = self
            .file_req(Method::POST, name, path)?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(self.header("Type"), "directory")
            .header(self.header("Uid"), perms.uid.to_string())
            .header(self.header("Gid"), perms.gid.to_string())
            .header(self.header("Mode"), format!("{:04o}", perms.mode));
        match self.sync::<serde_json::Value>(&what, rb).await {
            Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads a regular file. A directory gives [`Error::Invalid`] (use [`Client::list_dir`]).
    pub async fn pull_file(&self, name: &str, path: &str) -> Result<FileContent> {
        let what = format!("pulling {path} from {name}");
        let (headers, bytes) = self
            .raw(&what, self.file_req(Method::GET, name, path)?)
            .await?;
        if self.header_str(&headers, "Type") == Some("directory") {
            return Err(Error::Invalid {
                what: "file path",
                message: format!("{path} is a directory"),
            });
        }
        let num = |h: &str, radix: u32| {
            self.header_str(&headers, h)
                .and_then(|v| u32::from_str_radix(v.trim_start_matches("0o"), radix).ok())
        };
        Ok(FileContent {
            uid: num("Uid", 10),
            gid: num("Gid", 10),
            mode: num("Mode", 8),
            bytes,
        })
    }

    /// The names in a directory.
    pub async fn list_dir(&self, name: &str, path: &str) -> Result<Vec<String>> {
        let what = format!("listing {path} in {name}");
        let (headers, body) = self
            .raw(&what, self.file_req(Method::GET, name, path)?)
            .await?;
        if self.header_str(&headers, "Type") != Some("directory") {
            return Err(Error::Invalid {
                what: "directory path",
                message: format!("{path} is not a directory"),
            });
        }
        match decode_envelope(&what, reqwest::StatusCode::OK, None, &body)? {
            Reply::Sync(v) => crate::client::decode(&what, v),
            Reply::Async(_) => Err(Error::Protocol {
                what,
                message: "a directory listing came as an operation".into(),
            }),
        }
    }

    /// Deletes a file or an empty directory.
    pub async fn delete_file(&self, name: &str, path: &str) -> Result<()> {
        let what = format!("deleting {path} in {name}");
        self.raw(&what, self.file_req(Method::DELETE, name, path)?)
            .await
            .map(|_| ())
    }

    fn file_req(&self, method: Method, name: &str, path: &str) -> Result<reqwest::RequestBuilder> {
        validate_instance_name(name)?;
        if !path.starts_with('/') || path.contains('\0') {
            return Err(Error::Invalid {
                what: "file path",
                message: format!("{path:?} must be absolute"),
            });
        }
        let url = format!("{}/files", instance_path(name));
        Ok(self.scoped(method, &url).query(&[("path", path)]))
    }

    fn header_str<'h>(&self, headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
        ["X-Incus-", "X-LXD-"]
            .iter()
            .find_map(|p| headers.get(format!("{p}{name}")))
            .and_then(|v| v.to_str().ok())
    }
}
