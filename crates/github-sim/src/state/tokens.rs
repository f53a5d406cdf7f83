//! Registration, remove and installation tokens, and the record of every secret handed out.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Registration,
    Remove,
}

/// Tokens handed out, each with what it stands for and when it expires. Issuing one drops those
/// already expired.
#[derive(Debug)]
pub(super) struct TokenTable<T> {
    tokens: HashMap<String, (T, Instant)>,
}

impl<T> Default for TokenTable<T> {
    fn default() -> Self {
        Self {
            tokens: HashMap::new(),
        }
    }
}

impl<T> TokenTable<T> {
    /// Records `token` for `subject` until `expires`, dropping the tokens expired at `now`.
    pub(super) fn issue(&mut self, now: Instant, token: &str, subject: T, expires: Instant) {
        self.tokens.retain(|_, (_, until)| *until > now);
        self.tokens.insert(token.to_owned(), (subject, expires));
    }

    /// The subject of `token`, and whether the token is still valid at `now`.
    pub(super) fn lookup(&self, token: &str, now: Instant) -> Option<(&T, bool)> {
        self.tokens
            .get(token)
            .map(|(subject, until)| (subject, *until > now))
    }

    /// The subject of `token` unless it is unknown or expired at `now`.
    pub(super) fn valid(&self, token: &str, now: Instant) -> Option<&T> {
        self.lookup(token, now)
            .and_then(|(subject, valid)| valid.then_some(subject))
    }

    /// Keeps only the tokens whose subject passes `keep`.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.tokens.retain(|_, (subject, _)| keep(subject));
    }

    /// Expires every token at `now`; answers how many there are.
    pub(super) fn expire_all(&mut self, now: Instant) -> usize {
        for (_, until) in self.tokens.values_mut() {
            *until = now;
        }
        self.tokens.len()
    }
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

impl State {
    // ---------------------------------------------------------------- tokens

    pub(crate) fn issue_token(
        &mut self,
        kind: TokenKind,
        scope: Scope,
    ) -> (String, OffsetDateTime) {
        let now = self.clock.now();
        let token = random_string(UPPER32, 29);
        match kind {
            TokenKind::Registration => self.issued.registration_tokens.push(token.clone()),
            TokenKind::Remove => self.issued.remove_tokens.push(token.clone()),
        }
        let expires = now + self.config.token_lifetime;
        self.tokens.issue(now, &token, (kind, scope), expires);
        (token, self.clock.wall(expires))
    }

    /// The scope a valid, unexpired token of `kind` was issued for.
    pub(crate) fn check_token(&self, kind: TokenKind, token: &str) -> Option<Scope> {
        self.tokens
            .valid(token, self.clock.now())
            .filter(|(issued_as, _)| *issued_as == kind)
            .map(|(_, scope)| scope.clone())
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
        let token = format!("ghs_{}", random_string(ALNUM, 36));
        let expires = now + lifetime;
        self.installation_tokens
            .issue(now, &token, installation_id, expires);
        (token, self.clock.wall(expires))
    }

    /// The installation of a valid, unexpired `ghs_` token.
    pub(crate) fn check_installation_token(&self, token: &str) -> Option<u64> {
        self.installation_tokens
            .valid(token, self.clock.now())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_table_issue_lookup_expiry_and_retain() {
        let start = Instant::now();
        let later = start + Duration::from_secs(10);
        let mut table = TokenTable::default();
        table.issue(start, "a", "one", later + Duration::from_secs(10));
        table.issue(start, "b", "two", start + Duration::from_secs(1));
        assert_eq!(table.lookup("a", later), Some((&"one", true)));
        assert_eq!(table.valid("b", start), Some(&"two"));
        assert_eq!(table.lookup("b", later), Some((&"two", false)));
        assert_eq!(table.valid("b", later), None);
        assert_eq!(table.valid("c", start), None);

        // Issuing drops what has expired by then.
        table.issue(later, "c", "three", later + Duration::from_secs(1));
        assert_eq!(table.lookup("b", later), None);

        table.retain(|subject| *subject != "three");
        assert_eq!(table.lookup("c", later), None);
        assert_eq!(table.expire_all(start), 1);
        assert_eq!(table.lookup("a", start), Some((&"one", false)));
    }
}
