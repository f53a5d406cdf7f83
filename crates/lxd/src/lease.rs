//! Compare-and-swap on a profile's `user.*` keys: the primitive a lease kept in the cluster
//! itself is built on.
//!
//! A profile is cluster-wide (one database row, whichever member answers), accepts free-form
//! `user.*` keys, and is versioned by an ETag on `GET` that `PUT` checks against `If-Match`
//! (HTTP 412 "ETag doesn't match" when it changed since). Measured on Incus 6.0.4 (standalone and
//! 3-member cluster) and LXD 5.0.2. The default project's own config is not usable: Incus refuses
//! any change to it ("You can't change the features of the default project"), and its ETag would
//! be shared by every owner's lease.
//!
//! Two caveats a caller must design around (see `manager::lease`):
//! - the server compares the ETag and then writes in a second step (`profilePut` in Incus and
//!   LXD): two `PUT`s carrying the same ETag that arrive within a few milliseconds may both
//!   succeed, the later one winning. Creation (`POST /1.0/profiles`) is atomic: exactly one of
//!   two concurrent creations succeeds, the other gets 409 (a unique constraint).
//! - a `PUT` the client gave up on (timeout) may still be applied later by the server.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderValue, ETAG, IF_MATCH};
use reqwest::{Method, RequestBuilder};
use serde_json::json;

use crate::client::{decode, decode_envelope, op_result, Client, Reply};
use crate::error::{Error, Result};
use crate::names::{segment, validate_simple_name};
use crate::types::Profile;

/// The server's version of an object, as its `ETag` header gave it (quotes kept), for
/// `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// An ETag kept from an earlier read (its header value, quotes and all).
    pub fn from_header(value: &str) -> Self {
        ETag(value.to_owned())
    }

    /// The header's value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A profile's `user.*` keys with the ETag they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysAt {
    pub keys: BTreeMap<String, String>,
    pub etag: ETag,
}

/// Why a conditional write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// Someone changed (or created) the object since it was read: HTTP 412 to an `If-Match`
    /// write, or 409 to a creation. Nothing was written.
    #[error("{what}: changed under us: {message}")]
    Changed { what: String, message: String },
    /// Any other failure; a timeout or a transport error leaves it unknown whether the server
    /// applied the write.
    #[error("{what}")]
    Lxd {
        what: String,
        #[source]
        source: Error,
    },
}

impl CasError {
    /// True for [`CasError::Changed`].
    pub fn is_changed(&self) -> bool {
        matches!(self, CasError::Changed { .. })
    }

    fn lxd(what: &str, source: Error) -> CasError {
        match source {
            Error::Api {
                code: 412, message, ..
            } => CasError::Changed {
                what: what.to_owned(),
                message,
            },
            Error::Conflict { message, .. } => CasError::Changed {
                what: what.to_owned(),
                message,
            },
            source => CasError::Lxd {
                what: what.to_owned(),
                source,
            },
        }
    }
}

/// The description the lease profiles carry.
pub const LEASE_PROFILE_DESCRIPTION: &str = "runner-manager lease (do not use on instances)";

fn check_keys(keys: &BTreeMap<String, String>) -> Result<()> {
    match keys.keys().find(|k| !k.starts_with("user.")) {
        Some(key) => Err(Error::Invalid {
            what: "lease key",
            message: format!("{key:?} is not a user.* key"),
        }),
        None => Ok(()),
    }
}

impl Client {
    /// A profile's `user.*` keys and its ETag; `Ok(None)` when there is no such profile.
    /// `timeout` bounds the whole call.
    pub async fn read_profile_keys(&self, name: &str, timeout: Duration) -> Result<Option<KeysAt>> {
        validate_simple_name("profile name", name)?;
        let what = format!("reading profile {name}");
        let rb = self.scoped(Method::GET, &path(name)).timeout(timeout);
        let resp = match rb.send().await {
            Ok(resp) => resp,
            Err(e) => return Err(transport(&what, e, timeout)),
        };
        let status = resp.status();
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport(&what, e, timeout))?;
        let profile: Profile = match decode_envelope(&what, status, None, &body) {
            Ok(Reply::Sync(v)) => decode(&what, v)?,
            Ok(Reply::Async(_)) => {
                return Err(Error::Protocol {
                    what,
                    message: "a profile read answered with an operation".into(),
                })
            }
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = etag
            .filter(|e| !e.is_empty())
            .ok_or_else(|| Error::Protocol {
                what: what.clone(),
                message: "the server sent no ETag".into(),
            })?;
        let keys = profile
            .config
            .into_iter()
            .filter(|(k, _)| k.starts_with("user."))
            .collect();
        Ok(Some(KeysAt {
            keys,
            etag: ETag(etag),
        }))
    }

    /// Creates profile `name` holding exactly `keys` (all `user.*`), no device. An existing
    /// profile gives [`CasError::Changed`]: of concurrent creations exactly one succeeds.
    pub async fn create_profile_keys(
        &self,
        name: &str,
        keys: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> std::result::Result<(), CasError> {
        let what = format!("creating profile {name}");
        validate_simple_name("profile name", name).map_err(|e| CasError::lxd(&what, e))?;
        check_keys(keys).map_err(|e| CasError::lxd(&what, e))?;
        let body = json!({
            "name": name,
            "description": LEASE_PROFILE_DESCRIPTION,
            "config": keys,
            "devices": {},
        });
        let rb = self
            .scoped(Method::POST, "/1.0/profiles")
            .json(&body)
            .timeout(timeout);
        self.conditional(&what, rb, timeout).await
    }

    /// Replaces profile `name`'s config with `keys` (all `user.*`) only if its ETag still is
    /// `etag`; otherwise [`CasError::Changed`] and nothing is written. A deleted profile gives
    /// [`CasError::Lxd`] with [`Error::NotFound`].
    pub async fn write_profile_keys(
        &self,
        name: &str,
        keys: &BTreeMap<String, String>,
        etag: &ETag,
        timeout: Duration,
    ) -> std::result::Result<(), CasError> {
        let what = format!("updating profile {name}");
        validate_simple_name("profile name", name).map_err(|e| CasError::lxd(&what, e))?;
        check_keys(keys).map_err(|e| CasError::lxd(&what, e))?;
        let if_match = HeaderValue::from_str(etag.as_str()).map_err(|_| {
            CasError::lxd(
                &what,
                Error::Invalid {
                    what: "ETag",
                    message: format!("{etag:?} is not a header value"),
                },
            )
        })?;
        let body = json!({
            "description": LEASE_PROFILE_DESCRIPTION,
            "config": keys,
            "devices": {},
        });
        let rb = self
            .scoped(Method::PUT, &path(name))
            .header(IF_MATCH, if_match)
            .json(&body)
            .timeout(timeout);
        self.conditional(&what, rb, timeout).await
    }

    /// Sends a write and maps 412 / 409 to [`CasError::Changed`]. An answer as an operation is
    /// waited for within `timeout`.
    async fn conditional(
        &self,
        what: &str,
        rb: RequestBuilder,
        timeout: Duration,
    ) -> std::result::Result<(), CasError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| CasError::lxd(what, transport(what, e, timeout)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CasError::lxd(what, transport(what, e, timeout)))?;
        match decode_envelope(what, status, None, &body) {
            Ok(Reply::Sync(_)) => Ok(()),
            Ok(Reply::Async(op)) => {
                let op = self
                    .wait(what, &op, timeout)
                    .await
                    .map_err(|e| CasError::lxd(what, e))?;
                op_result(what, op)
                    .map(|_| ())
                    .map_err(|e| CasError::lxd(what, e))
            }
            Err(e) => Err(CasError::lxd(what, e)),
        }
    }
}

fn path(name: &str) -> String {
    format!("/1.0/profiles/{}", segment(name))
}

fn transport(what: &str, e: reqwest::Error, after: Duration) -> Error {
    if e.is_timeout() {
        Error::Timeout {
            what: what.to_owned(),
            after,
        }
    } else {
        Error::Transport {
            what: what.to_owned(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer of a profile update with `code`.
    fn api(code: u16, message: &str) -> Error {
        Error::Api {
            what: "updating profile p".into(),
            code,
            message: message.into(),
        }
    }

    #[test]
    fn precondition_failed_and_conflict_mean_changed() {
        let stale = CasError::lxd("updating profile p", api(412, "ETag doesn't match: a vs b"));
        assert!(stale.is_changed(), "{stale:?}");
        let exists = CasError::lxd(
            "creating profile p",
            Error::Conflict {
                what: "creating profile p".into(),
                message: "Profile \"p\" already exists".into(),
            },
        );
        assert!(exists.is_changed(), "{exists:?}");
        let other = CasError::lxd("updating profile p", api(500, "boom"));
        assert!(!other.is_changed());
        assert!(
            std::error::Error::source(&other).is_some(),
            "the cause is kept"
        );
    }

    #[test]
    fn only_user_keys_are_written() {
        let mut keys = BTreeMap::new();
        keys.insert("user.a".to_owned(), "1".to_owned());
        assert!(check_keys(&keys).is_ok());
        keys.insert("limits.cpu".to_owned(), "1".to_owned());
        assert!(matches!(check_keys(&keys), Err(Error::Invalid { .. })));
    }
}
