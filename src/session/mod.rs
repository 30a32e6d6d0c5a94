//! The sans-IO session state machine of one connection.
//!
//! `Unauthenticated → Authenticated → Closed`. The session never touches a
//! socket or reads a clock: the connection driver feeds it decoded messages,
//! verification results and the current time (`now`, Unix milliseconds), and
//! carries out the [`Effect`]s it returns. That keeps the protocol's rules
//! (nothing but `AUTH`/`PING` before `AUTH_ACK`, the auth timeout, expiry,
//! refresh) deterministic, unit-testable and fuzzable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AuthError, Identity, MAX_TOKEN_BYTES};
use crate::protocol::codes::close;
use crate::protocol::{AuthFailCode, ClientMessage, DecodeError, PROTOCOL_VERSION, ServerMessage, SessionLimits};
use crate::requests::RequestError;
use crate::rules::Policy;

mod route;
mod types;

use route::{reauthorize, request_id, route};
pub use types::{Authenticated, Effect, Phase, SessionConfig};

/// One connection's protocol state.
#[derive(Debug, Clone)]
pub struct Session {
    config: SessionConfig,
    policy: Arc<Policy>,
    phase: Phase,
    /// Set while a `Verify` effect is outstanding: what the verification is for.
    verifying: Option<Purpose>,
    /// The token being verified, and the one the session runs on (for revalidation).
    pending_token: Option<String>,
    token: Option<String>,
    /// Unix ms of the next revalidation of `token`.
    revalidate_at: Option<u64>,
    last_seen: u64,
    next_ping: u64,
    /// Token bucket: messages that may be sent now (negative: debt while limited).
    tokens: f64,
    refilled_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Initial,
    Refresh,
    Revalidate,
}

impl Session {
    /// Opens a session at `now`.
    ///
    /// `anonymous` is the identity of mode `none` (granted at once);
    /// `query_token` is a token from the upgrade URL (verified at once,
    /// instead of sending `AUTH_REQUIRED`).
    pub fn open(
        config: SessionConfig,
        now: u64,
        policy: Arc<Policy>,
        anonymous: Option<Identity>,
        query_token: Option<String>,
    ) -> (Self, Vec<Effect>) {
        let mut session = Self {
            config,
            policy,
            phase: Phase::Unauthenticated { deadline: now.saturating_add(ms(config.auth_timeout)) },
            verifying: None,
            pending_token: None,
            token: None,
            revalidate_at: None,
            last_seen: now,
            next_ping: now.saturating_add(ms(config.ping_interval)),
            tokens: f64::from(config.message_burst),
            refilled_at: now,
        };
        let mut out = Vec::with_capacity(1);
        if let Some(identity) = anonymous {
            session.authenticate(identity, now, &mut out);
        } else if let Some(token) = query_token {
            session.verify(token, Purpose::Initial, &mut out);
        } else {
            out.push(Effect::Send(ServerMessage::AuthRequired { protocol_version: PROTOCOL_VERSION }));
        }
        (session, out)
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The authenticated identity, if any.
    pub fn identity(&self) -> Option<&Identity> {
        match &self.phase {
            Phase::Authenticated(a) => Some(&a.identity),
            _ => None,
        }
    }

    /// Topics currently subscribed.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.auth_state().into_iter().flat_map(|a| a.subscriptions.keys().map(String::as_str))
    }

    /// Collections currently followed.
    pub fn synced(&self) -> impl Iterator<Item = &str> {
        self.auth_state().into_iter().flat_map(|a| a.syncs.keys().map(String::as_str))
    }

    /// Forgets a subscription the driver could not establish.
    pub fn forget_subscription(&mut self, topic: &str) {
        if let Phase::Authenticated(auth) = &mut self.phase {
            auth.subscriptions.remove(topic);
        }
    }

    /// Forgets a sync the driver could not establish.
    pub fn forget_sync(&mut self, collection: &str) {
        if let Phase::Authenticated(auth) = &mut self.phase {
            auth.syncs.remove(collection);
        }
    }

    /// Puts a new policy in force and ends what it no longer allows.
    pub fn on_policy(&mut self, policy: Arc<Policy>) -> Vec<Effect> {
        self.policy = policy;
        let mut out = Vec::new();
        if let Phase::Authenticated(auth) = &mut self.phase {
            auth.access = self.policy.access_for(&auth.identity);
            reauthorize(auth, &mut out);
        }
        out
    }

    fn auth_state(&self) -> Option<&Authenticated> {
        match &self.phase {
            Phase::Authenticated(a) => Some(a),
            _ => None,
        }
    }

    /// Whether the driver must hold `message` for now: a verification is in
    /// flight and only `PING` is processed meanwhile.
    pub fn holds(&self, message: &Result<ClientMessage, DecodeError>) -> bool {
        self.verifying.is_some() && !matches!(message, Ok(ClientMessage::Ping { .. }))
    }

    /// Whether a verification is in flight.
    pub fn is_verifying(&self) -> bool {
        self.verifying.is_some()
    }

    /// Whether a close was decided.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Records transport activity (any frame, including pongs) at `now`.
    pub fn on_activity(&mut self, now: u64) {
        self.last_seen = self.last_seen.max(now);
    }

    /// A WebSocket ping at `now`: it counts against the message rate like
    /// any message (pings are answered, so they cost the server as much).
    /// Returns whether to answer it; past the rate it is not answered, and
    /// far past it the session closes with 4029 (the effects say so).
    pub fn on_ping(&mut self, now: u64) -> (bool, Vec<Effect>) {
        self.on_activity(now);
        let mut out = Vec::new();
        if self.phase == Phase::Closed {
            return (false, out);
        }
        if self.take_token(now) {
            return (true, out);
        }
        if self.tokens < -f64::from(self.config.message_burst) {
            self.close(close::RATE_LIMITED, "message rate limit exceeded", &mut out);
        }
        (false, out)
    }

    /// Handles one decoded (or undecodable) client message.
    pub fn on_message(&mut self, message: Result<ClientMessage, DecodeError>, now: u64) -> Vec<Effect> {
        self.on_activity(now);
        let mut out = Vec::with_capacity(1);
        if self.verifying.is_some() {
            // Only PING is answered while a verification is in flight; the driver
            // holds every other message until `on_verified` (see `holds`).
            if let Ok(ClientMessage::Ping { id }) = message {
                out.push(Effect::Send(ServerMessage::Pong { id }));
            }
            return out;
        }
        // A deadline is checked on every message, not only when a timer fires: a
        // client that keeps the socket busy must not outlive its token.
        if self.close_if_past_deadline(now, &mut out) {
            return out;
        }
        if !self.take_token(now) {
            if self.tokens < -f64::from(self.config.message_burst) {
                self.close(close::RATE_LIMITED, "message rate limit exceeded", &mut out);
            } else {
                let id = match &message {
                    Ok(m) => request_id(m),
                    Err(DecodeError::UnknownType { id, .. } | DecodeError::Invalid { id, .. }) => *id,
                    Err(_) => None,
                };
                out.push(Effect::Send(RequestError::RateLimited(self.config.messages_per_second).reply(id)));
            }
            return out;
        }
        match &self.phase {
            Phase::Closed => {}
            Phase::Unauthenticated { .. } => self.unauthenticated(message, &mut out),
            Phase::Authenticated(_) => self.authenticated(message, now, &mut out),
        }
        out
    }

    /// Reports the outcome of the last [`Effect::Verify`].
    pub fn on_verified(&mut self, result: Result<Identity, AuthError>, now: u64) -> Vec<Effect> {
        let mut out = Vec::with_capacity(2);
        let Some(purpose) = self.verifying.take() else {
            return out;
        };
        if self.phase == Phase::Closed {
            return out;
        }
        let token = self.pending_token.take();
        match (purpose, result) {
            (Purpose::Revalidate, Err(e)) if e.code == AuthFailCode::IntrospectionUnavailable => {
                // Fail closed for new sessions, but do not drop live ones on a provider blip: try again later.
                self.schedule_revalidation(now);
            }
            (Purpose::Revalidate, Err(e)) if e.code == AuthFailCode::TokenExpired => {
                self.fail(e.code, e.message, &mut out)
            }
            (Purpose::Revalidate, Err(_)) => {
                self.fail(AuthFailCode::Forbidden, "the token is no longer active".into(), &mut out);
            }
            (_, Err(e)) => self.fail(e.code, e.message, &mut out),
            (Purpose::Initial, Ok(identity)) => {
                self.token = token;
                self.authenticate(identity, now, &mut out);
            }
            (purpose @ (Purpose::Refresh | Purpose::Revalidate), Ok(identity)) => {
                let same = self.identity().is_some_and(|current| current.sub == identity.sub);
                if !same {
                    self.fail(AuthFailCode::Forbidden, "the refreshed token is for another subject".into(), &mut out);
                } else if purpose == Purpose::Refresh {
                    self.token = token;
                    self.authenticate(identity, now, &mut out);
                } else {
                    // A revalidation updates roles and claims silently (no AUTH_ACK).
                    let mut ignored = Vec::new();
                    self.authenticate(identity, now, &mut ignored);
                    out.extend(
                        ignored.into_iter().filter(|e| !matches!(e, Effect::Send(ServerMessage::AuthAck { .. }))),
                    );
                }
            }
        }
        out
    }

    /// Fires every deadline that has passed by `now`.
    pub fn on_timer(&mut self, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.verifying.is_some() || self.close_if_past_deadline(now, &mut out) {
            return out;
        }
        match &mut self.phase {
            Phase::Closed => return out,
            Phase::Unauthenticated { .. } => {}
            Phase::Authenticated(auth) => {
                if let Some(ends_at) = auth.ends_at
                    && !auth.notice_sent
                    && now >= ends_at.saturating_sub(ms(self.config.expiry_notice))
                {
                    auth.notice_sent = true;
                    let expires_at = auth.identity.expires_at.unwrap_or(ends_at / 1000);
                    out.push(Effect::Send(ServerMessage::TokenExpiring { expires_at }));
                }
            }
        }
        if now.saturating_sub(self.last_seen) >= ms(self.config.idle_timeout) {
            self.close(close::GOING_AWAY, "idle timeout", &mut out);
            return out;
        }
        if self.revalidate_at.is_some_and(|at| now >= at)
            && let Some(token) = self.token.clone()
        {
            self.revalidate_at = None;
            self.verifying = Some(Purpose::Revalidate);
            self.pending_token = Some(token.clone());
            out.push(Effect::Verify(token));
            return out;
        }
        if now >= self.next_ping {
            self.next_ping = now.saturating_add(ms(self.config.ping_interval));
            out.push(Effect::Ping);
        }
        out
    }

    /// Unix ms at which the session ends whatever happens (the auth timeout
    /// before `AUTH_ACK`, the credential's end after it); the driver bounds
    /// every wait, including a slow write, by it.
    pub fn hard_deadline(&self) -> Option<u64> {
        match &self.phase {
            Phase::Closed => None,
            Phase::Unauthenticated { deadline } => Some(*deadline),
            Phase::Authenticated(auth) => auth.ends_at,
        }
    }

    /// Closes the session if its hard deadline has passed by `now`: 4008
    /// before authentication, 4100 after. Returns whether it closed.
    pub fn close_if_past_deadline(&mut self, now: u64, out: &mut Vec<Effect>) -> bool {
        if self.verifying.is_some() || self.hard_deadline().is_none_or(|at| now < at) {
            return false;
        }
        match self.phase {
            Phase::Unauthenticated { .. } => self.close(close::AUTH_TIMEOUT, "no AUTH within the auth timeout", out),
            _ => self.close(close::TOKEN_EXPIRED, "token expired", out),
        }
        true
    }

    /// The earliest Unix ms at which [`Session::on_timer`] has work to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let idle = self.last_seen.saturating_add(ms(self.config.idle_timeout));
        let base = idle.min(self.next_ping).min(self.revalidate_at.unwrap_or(u64::MAX));
        match &self.phase {
            Phase::Closed => None,
            Phase::Unauthenticated { deadline } => Some(base.min(*deadline)),
            Phase::Authenticated(auth) => {
                let expiry = auth
                    .ends_at
                    .map(|end| if auth.notice_sent { end } else { end.saturating_sub(ms(self.config.expiry_notice)) });
                Some(expiry.map_or(base, |e| base.min(e)))
            }
        }
    }

    fn unauthenticated(&mut self, message: Result<ClientMessage, DecodeError>, out: &mut Vec<Effect>) {
        match message {
            Err(DecodeError::Malformed(reason)) => self.close(close::MALFORMED, &reason, out),
            Err(e @ DecodeError::TooDeep(_)) => self.close(close::MALFORMED, &e.to_string(), out),
            Err(DecodeError::Invalid { kind: "AUTH", reason, .. }) => {
                self.fail(AuthFailCode::TokenMalformed, reason, out)
            }
            Err(_) => self.fail(AuthFailCode::NotAuthenticated, "authenticate with AUTH first".into(), out),
            Ok(ClientMessage::Auth { token: None }) => {
                self.fail(AuthFailCode::TokenMissing, "AUTH carried no token".into(), out)
            }
            Ok(ClientMessage::Auth { token: Some(token) }) => self.verify(token, Purpose::Initial, out),
            Ok(ClientMessage::Ping { id }) => out.push(Effect::Send(ServerMessage::Pong { id })),
            Ok(_) => self.fail(AuthFailCode::NotAuthenticated, "authenticate with AUTH first".into(), out),
        }
    }

    fn authenticated(&mut self, message: Result<ClientMessage, DecodeError>, now: u64, out: &mut Vec<Effect>) {
        match message {
            Err(DecodeError::Malformed(reason)) => self.close(close::MALFORMED, &reason, out),
            Err(e @ DecodeError::TooDeep(_)) => self.close(close::MALFORMED, &e.to_string(), out),
            Err(DecodeError::UnknownType { type_name, id }) => {
                out.push(Effect::Send(RequestError::UnknownType(type_name).reply(id)))
            }
            Err(DecodeError::Invalid { kind: "AUTH", reason, .. }) => {
                self.fail(AuthFailCode::TokenMalformed, reason, out)
            }
            Err(DecodeError::Invalid { kind, id, reason }) => {
                out.push(Effect::Send(RequestError::Invalid(format!("invalid {kind}: {reason}")).reply(id)))
            }
            Ok(ClientMessage::Auth { token: None }) => {
                self.fail(AuthFailCode::TokenMissing, "AUTH carried no token".into(), out)
            }
            Ok(ClientMessage::Auth { token: Some(token) }) => self.verify(token, Purpose::Refresh, out),
            Ok(ClientMessage::Ping { id }) => out.push(Effect::Send(ServerMessage::Pong { id })),
            Ok(request) => {
                let config = self.config;
                if let Phase::Authenticated(auth) = &mut self.phase {
                    route(auth, request, &config, now, out);
                }
            }
        }
    }

    /// Asks the driver to verify `token`, unless it is over the size any auth
    /// mode accepts: such a token never reaches a verifier or an identity provider.
    fn verify(&mut self, token: String, purpose: Purpose, out: &mut Vec<Effect>) {
        if token.len() > MAX_TOKEN_BYTES {
            let message = format!("the token is longer than {MAX_TOKEN_BYTES} bytes");
            return self.fail(AuthFailCode::TokenMalformed, message, out);
        }
        self.verifying = Some(purpose);
        self.pending_token = Some(token.clone());
        out.push(Effect::Verify(token));
    }

    fn authenticate(&mut self, identity: Identity, now: u64, out: &mut Vec<Effect>) {
        let ends_at = identity.expires_at.map(|exp| {
            let exp_ms = exp.saturating_mul(1000);
            // Accepted inside the leeway (already past exp): allow the leeway, not zero.
            if exp_ms > now { exp_ms } else { exp_ms.saturating_add(ms(self.config.leeway)) }
        });
        out.push(Effect::Send(ServerMessage::AuthAck {
            sub: identity.sub.clone(),
            roles: identity.roles.clone(),
            expires_at: identity.expires_at,
            limits: Some(SessionLimits {
                max_message_bytes: self.config.max_message_bytes as u64,
                max_value_bytes: self.config.max_value_bytes as u64,
                max_batch_ops: self.config.max_batch_ops as u64,
                max_value_depth: crate::values::MAX_VALUE_DEPTH as u64,
                messages_per_second: u64::from(self.config.messages_per_second),
                message_burst: u64::from(self.config.message_burst),
            }),
        }));
        let access = self.policy.access_for(&identity);
        self.schedule_revalidation(now);
        match &mut self.phase {
            // A refresh keeps the session's subscriptions, then re-checks them under the new roles.
            Phase::Authenticated(auth) => {
                auth.identity = identity;
                auth.access = access;
                auth.ends_at = ends_at;
                auth.notice_sent = false;
                reauthorize(auth, out);
            }
            _ => {
                self.phase = Phase::Authenticated(Box::new(Authenticated {
                    identity,
                    access,
                    subscriptions: BTreeMap::new(),
                    syncs: BTreeMap::new(),
                    ends_at,
                    notice_sent: false,
                    announced_at: None,
                }));
            }
        }
    }

    /// Refills the bucket for the time passed and takes one token; false when empty.
    fn take_token(&mut self, now: u64) -> bool {
        let rate = self.config.messages_per_second;
        if rate == 0 {
            return true;
        }
        let elapsed = now.saturating_sub(self.refilled_at) as f64 / 1000.0;
        self.refilled_at = self.refilled_at.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(self.config.message_burst));
        self.tokens -= 1.0;
        self.tokens >= 0.0
    }

    /// The token to revalidate if its revalidation is due and none is in
    /// flight, scheduling the next one: for a driver too busy writing to
    /// return to its timers (a long run of `SYNC` pages), which checks the
    /// token on the side and closes the connection itself when it fails.
    pub fn take_due_revalidation(&mut self, now: u64) -> Option<String> {
        if self.verifying.is_some() || self.revalidate_at.is_none_or(|at| now < at) {
            return None;
        }
        let token = self.token.clone()?;
        self.schedule_revalidation(now);
        Some(token)
    }

    fn schedule_revalidation(&mut self, now: u64) {
        self.revalidate_at = self
            .config
            .revalidate_every
            .filter(|_| self.token.is_some())
            .map(|every| now.saturating_add(ms(every).max(1)));
    }

    fn fail(&mut self, code: AuthFailCode, message: String, out: &mut Vec<Effect>) {
        out.push(Effect::Send(ServerMessage::AuthFail { code: code.as_str().into(), message }));
        self.close(code.close_code(), code.as_str(), out);
    }

    fn close(&mut self, code: u16, reason: &str, out: &mut Vec<Effect>) {
        let mut reason = reason.to_string();
        // A close reason must fit a control frame (125 bytes with the code).
        while reason.len() > 120 {
            reason.pop();
        }
        out.push(Effect::Close { code, reason });
        self.phase = Phase::Closed;
        self.verifying = None;
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
