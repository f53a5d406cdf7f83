//! Scale-set state: sessions, their long polls and the queue tokens.

use super::*;

impl State {
    // ---------------------------------------------------------------- sessions and tokens

    fn ss_issue_queue_token(&mut self, session_id: &str) -> String {
        let now = self.clock.now();
        let token = format!("simqueue_{}", random_string(ALNUM, 40));
        self.record_scaleset_token(false, &token);
        let expires = now + self.scalesets.cfg.queue_token_ttl;
        self.scalesets
            .queue_tokens
            .issue(now, &token, session_id.to_owned(), expires);
        token
    }

    /// Sessions not polled nor refreshed for `session_timeout` expire.
    fn ss_expire_sessions(&mut self) {
        let now = self.clock.now();
        let timeout = self.scalesets.cfg.session_timeout;
        let stale: Vec<String> = self
            .scalesets
            .sessions
            .values()
            .filter(|s| {
                s.active_polls == 0 && now.saturating_duration_since(s.last_active) >= timeout
            })
            .map(|s| s.id.clone())
            .collect();
        for id in stale {
            self.ss_drop_session(&id);
        }
    }

    /// Removes a session and its queue tokens (the expire hook, DELETE, expiry); whether it
    /// existed.
    pub(crate) fn ss_drop_session(&mut self, session_id: &str) -> bool {
        let Some(session) = self.scalesets.sessions.remove(session_id) else {
            return false;
        };
        self.scalesets
            .queue_tokens
            .retain(|owner| owner != session_id);
        if let Some(set) = self.scalesets.sets.get_mut(&session.set_id) {
            if set.session.as_deref() == Some(session_id) {
                set.session = None;
            }
            set.notify.notify_waiters();
        }
        true
    }

    /// Creates the set's session: `(session id, queue token)`.
    pub(crate) fn ss_create_session(
        &mut self,
        scope: &Scope,
        set_id: u64,
        owner: String,
    ) -> Result<(String, String), SessionError> {
        self.ss_expire_sessions();
        let Some(set) = self.ss_set(scope, set_id) else {
            return Err(SessionError::NoSet);
        };
        if set.session.is_some() {
            return Err(SessionError::Conflict(set.name.clone()));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now();
        self.scalesets.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                set_id,
                owner,
                last_active: now,
                active_polls: 0,
                polls: 0,
            },
        );
        if let Some(set) = self.scalesets.sets.get_mut(&set_id) {
            set.session = Some(id.clone());
        }
        let token = self.ss_issue_queue_token(&id);
        Ok((id, token))
    }

    /// A new queue token for a live session of the set.
    pub(crate) fn ss_refresh_session(&mut self, set_id: u64, session_id: &str) -> Option<String> {
        self.ss_expire_sessions();
        let now = self.clock.now();
        let session = self
            .scalesets
            .sessions
            .get_mut(session_id)
            .filter(|s| s.set_id == set_id)?;
        session.last_active = now;
        Some(self.ss_issue_queue_token(session_id))
    }

    /// The session of a queue token: `(session id, set id)`.
    pub(crate) fn ss_check_queue_token(
        &mut self,
        token: &str,
    ) -> Result<(String, u64), QueueAuthError> {
        self.ss_expire_sessions();
        let now = self.clock.now();
        let (session_id, valid) = self
            .scalesets
            .queue_tokens
            .lookup(token, now)
            .ok_or(QueueAuthError::Unknown)?;
        if !valid {
            return Err(QueueAuthError::Expired);
        }
        let session = self
            .scalesets
            .sessions
            .get(session_id)
            .ok_or(QueueAuthError::Unknown)?;
        Ok((session.id.clone(), session.set_id))
    }

    /// Expires every queue token handed out so far (test hook).
    pub(crate) fn ss_expire_queue_tokens(&mut self) -> usize {
        let now = self.clock.now();
        self.scalesets.queue_tokens.expire_all(now)
    }

    /// A poll starts (`capacity` from `X-ScaleSetMaxCapacity`): the session is active.
    pub(crate) fn ss_poll_started(&mut self, session_id: &str, set_id: u64, capacity: i64) {
        let now = self.clock.now();
        if let Some(session) = self.scalesets.sessions.get_mut(session_id) {
            session.active_polls += 1;
            session.polls += 1;
            session.last_active = now;
        }
        if let Some(set) = self.scalesets.sets.get_mut(&set_id) {
            set.capacity = Some(capacity);
        }
        self.ss_pump();
    }

    pub(crate) fn ss_poll_ended(&mut self, session_id: &str) {
        let now = self.clock.now();
        if let Some(session) = self.scalesets.sessions.get_mut(session_id) {
            session.active_polls = session.active_polls.saturating_sub(1);
            session.last_active = now;
        }
    }

    /// The set's wake-up for long polls.
    pub(crate) fn ss_notify(&self, set_id: u64) -> Option<Arc<Notify>> {
        self.scalesets.sets.get(&set_id).map(|s| s.notify.clone())
    }

    /// Periodic housekeeping (from [`State::reap`]).
    pub(in crate::state) fn ss_reap(&mut self) {
        self.ss_expire_sessions();
        self.ss_pump();
    }
}
