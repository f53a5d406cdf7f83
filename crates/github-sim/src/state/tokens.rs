//! Registration, remove and installation tokens, and the record of every secret handed out.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Registration,
    Remove,
}

#[derive(Debug)]
pub(super) struct IssuedToken {
    kind: TokenKind,
    scope: Scope,
    expires: Instant,
}

/// Every secret the sim has handed out, in issue order, expired or not: what a secret scan
/// searches for. Never pruned (a few dozen bytes per registration).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedSecrets {
    /// Registration tokens (`POST .../registration-token` and [`crate::SimHandle::registration_token`]).
    pub registration_tokens: Vec<String>,
    /// Remove tokens (`POST .../remove-token`).
    pub remove_tokens: Vec<String>,
    /// `encoded_jit_config` values from `generate-jitconfig`.
    pub jit_configs: Vec<String>,
    /// Runner credentials (`simcred_...`), from runner-side registration and JIT configs.
    pub runner_credentials: Vec<String>,
    /// Scale-set admin JWTs (`runner-registration`).
    #[serde(default)]
    pub scaleset_admin_tokens: Vec<String>,
    /// Scale-set message-queue tokens (session create and refresh).
    #[serde(default)]
    pub scaleset_queue_tokens: Vec<String>,
}

#[derive(Debug)]
pub(super) struct InstallationToken {
    installation_id: u64,
    expires: Instant,
}

impl State {
    // ---------------------------------------------------------------- tokens

    pub(crate) fn issue_token(
        &mut self,
        kind: TokenKind,
        scope: Scope,
    ) -> (String, OffsetDateTime) {
        let now = self.clock.now();
        self.tokens.retain(|_, t| t.expires > now);
        let token = random_string(UPPER32, 29);
        match kind {
            TokenKind::Registration => self.issued.registration_tokens.push(token.clone()),
            TokenKind::Remove => self.issued.remove_tokens.push(token.clone()),
        }
        let expires = now + self.config.token_lifetime;
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                kind,
                scope,
                expires,
            },
        );
        (token, self.clock.wall(expires))
    }

    /// The scope a valid, unexpired token of `kind` was issued for.
    pub(crate) fn check_token(&self, kind: TokenKind, token: &str) -> Option<Scope> {
        let now = self.clock.now();
        self.tokens
            .get(token)
            .filter(|t| t.kind == kind && t.expires > now)
            .map(|t| t.scope.clone())
    }

    /// Records a scale-set admin JWT or queue token handed out.
    pub(crate) fn record_scaleset_token(&mut self, admin: bool, token: &str) {
        let list = if admin {
            &mut self.issued.scaleset_admin_tokens
        } else {
            &mut self.issued.scaleset_queue_tokens
        };
        list.push(token.to_owned());
    }

    /// Records an `encoded_jit_config` handed out.
    pub(crate) fn record_jit_config(&mut self, encoded: &str) {
        self.issued.jit_configs.push(encoded.to_owned());
    }

    /// Every secret handed out so far.
    pub(crate) fn issued_secrets(&self) -> IssuedSecrets {
        self.issued.clone()
    }

    pub(crate) fn issue_installation_token(
        &mut self,
        installation_id: u64,
        lifetime: Duration,
    ) -> (String, OffsetDateTime) {
        let now = self.clock.now();
        self.installation_tokens.retain(|_, t| t.expires > now);
        let token = format!("ghs_{}", random_string(ALNUM, 36));
        let expires = now + lifetime;
        self.installation_tokens.insert(
            token.clone(),
            InstallationToken {
                installation_id,
                expires,
            },
        );
        (token, self.clock.wall(expires))
    }

    /// The installation of a valid, unexpired `ghs_` token.
    pub(crate) fn check_installation_token(&self, token: &str) -> Option<u64> {
        let now = self.clock.now();
        self.installation_tokens
            .get(token)
            .filter(|t| t.expires > now)
            .map(|t| t.installation_id)
    }
}
