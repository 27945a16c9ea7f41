//! Sticky sessions: the requests of one conversation stay on one endpoint, so its prompt
//! cache keeps paying, as OpenRouter routes them.
//!
//! A session is one key's requests for one model with the same `session_id` (the body's, or
//! the `x-session-id` header), or, when neither is given, the same start of the conversation
//! (its instructions and first user message). The endpoint that got the session's last request goes first again
//! while it is healthy and the session is not idle for longer than the timeout; one cooling
//! down is let go, and the session sticks to wherever the next request goes. A request whose
//! `provider.order` says where it goes is left alone.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::chat::{ChatRequest, Content, ContentPart, Role};
use crate::facts::RoutePlan;
use crate::health::EndpointHealth;

/// Sessions remembered, at most; past it, the idle ones are forgotten (all of them, if none
/// is idle: a burst of new sessions only costs the old ones their stickiness).
const MAX_SESSIONS: usize = 100_000;

/// The sessions and where each went; shared by every clone of the layer.
#[derive(Debug)]
pub(crate) struct Sessions {
    idle: Duration,
    hasher: foldhash::fast::FixedState,
    by_session: Mutex<crate::FastMap<u64, (Arc<EndpointHealth>, Instant)>>,
}

impl Sessions {
    pub(crate) fn new(idle: Duration) -> Self {
        Sessions {
            idle,
            hasher: foldhash::fast::FixedState::with_seed(fastrand::u64(..)),
            by_session: Mutex::default(),
        }
    }

    /// The session of a request: its key, model and `session_id` (or conversation start).
    pub(crate) fn session_of(
        &self,
        key: Option<&str>,
        req: &ChatRequest,
        header: Option<&str>,
        model: &str,
    ) -> u64 {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        model.hash(&mut h);
        match req.session_id.as_deref().or(header) {
            Some(id) => {
                0u8.hash(&mut h);
                id.hash(&mut h);
            }
            None => {
                1u8.hash(&mut h);
                // The instructions and the first user message: what every later turn of the
                // conversation starts with.
                let first_user = req
                    .messages
                    .iter()
                    .position(|m| m.role == Role::User)
                    .map_or(req.messages.len(), |i| i + 1);
                for m in req.messages.iter().take(first_user.min(4)) {
                    (m.role as u8).hash(&mut h);
                    match &m.content {
                        Some(Content::Text(t)) => t.hash(&mut h),
                        Some(Content::Parts(parts)) => {
                            for p in parts {
                                if let ContentPart::Text { text, .. } = p {
                                    text.hash(&mut h);
                                }
                            }
                        }
                        None => {}
                    }
                }
            }
        }
        h.finish()
    }

    /// Puts the session's endpoint first in `plan` when it is there, healthy and the session
    /// is fresh; then remembers the endpoint that goes first.
    pub(crate) fn stick(&self, session: u64, plan: &mut RoutePlan, now: Instant) {
        if plan.targets.is_empty() {
            return;
        }
        let mut map = self.by_session.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((health, at)) = map.get(&session) {
            let fresh = now.saturating_duration_since(*at) < self.idle;
            let pos = plan
                .targets
                .iter()
                .position(|t| Arc::ptr_eq(&t.health, health));
            if let Some(pos) = pos.filter(|_| fresh && !health.is_cooling(now)) {
                plan.targets[..=pos].rotate_right(1);
            }
        }
        let first = plan.targets[0].health.clone();
        if map.len() >= MAX_SESSIONS && !map.contains_key(&session) {
            let idle = self.idle;
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < idle);
            if map.len() >= MAX_SESSIONS {
                map.clear();
            }
        }
        map.insert(session, (first, now));
    }
}
