//! Credentials: a personal access token, or a GitHub App (JWT → installation token, cached).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use time::OffsetDateTime;

use crate::error::Error;
use crate::secret::Secret;

/// The environment variable a PAT may be given in.
pub const TOKEN_ENV_VAR: &str = "RUNNER_MANAGER_GITHUB_TOKEN";

/// How an installation token is refreshed before it expires.
pub const APP_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A personal access token (classic or fine-grained), sent as `Bearer`.
    Token(Secret),
    /// A GitHub App. The installation is looked up from the scope when not given.
    App {
        app_id: u64,
        installation_id: Option<u64>,
        private_key_pem: Secret,
    },
}

/// Signs App JWTs.
pub(crate) struct AppSigner {
    pub(crate) app_id: u64,
    key: EncodingKey,
}

impl std::fmt::Debug for AppSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSigner")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct Claims {
    iat: u64,
    exp: u64,
    iss: String,
}

impl AppSigner {
    pub(crate) fn new(app_id: u64, private_key_pem: &Secret) -> Result<Self, Error> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes()).map_err(|e| {
            Error::Config {
                reason: format!("github app private key is not a valid RSA PEM ({e})"),
            }
        })?;
        Ok(Self { app_id, key })
    }

    /// An RS256 JWT: iat 60 s in the past (clock drift), exp 9 minutes ahead, iss = app id.
    pub(crate) fn jwt(&self, now: SystemTime) -> Result<Secret, Error> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            iat: now.saturating_sub(60),
            exp: now + 9 * 60,
            iss: self.app_id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(Secret::from)
            .map_err(Error::Jwt)
    }
}

/// A cached installation token and when to refresh it (on the tokio clock, so tests can pause it).
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub(crate) token: Secret,
    pub(crate) refresh_at: tokio::time::Instant,
}

impl CachedToken {
    pub(crate) fn new(token: Secret, expires_at: OffsetDateTime, now: SystemTime) -> Self {
        let expires: SystemTime = expires_at.into();
        let lifetime = expires.duration_since(now).unwrap_or_default();
        let refresh_in = lifetime.saturating_sub(APP_TOKEN_REFRESH_MARGIN);
        Self {
            token,
            refresh_at: tokio::time::Instant::now() + refresh_in,
        }
    }

    pub(crate) fn is_fresh(&self) -> bool {
        tokio::time::Instant::now() < self.refresh_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_a_config_error() {
        let err = AppSigner::new(1, &Secret::from("not a key")).expect_err("invalid");
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
    }
}
