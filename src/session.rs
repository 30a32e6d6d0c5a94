//! The sans-IO session state machine of one connection.
//!
//! `Unauthenticated → Authenticated → Closed`. The session never touches a
//! socket or reads a clock: the connection driver feeds it decoded messages,
//! verification results and the current time (`now`, Unix milliseconds), and
//! carries out the [`Effect`]s it returns. That keeps the rules of the brief
//! (nothing but `AUTH`/`PING` before `AUTH_ACK`, the auth timeout, expiry,
//! refresh) deterministic, unit-testable and fuzzable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;

use crate::auth::{AuthError, Identity, MAX_TOKEN_BYTES};
use crate::cursor::Cursor;
use crate::protocol::codes::{close, error};
use crate::protocol::encoded_len;
use crate::protocol::{
    AuthFailCode, ClientMessage, DecodeError, OpInput, OpOutcome, PROTOCOL_VERSION, RawOp, ServerMessage, SessionLimits,
};
use crate::rules::{Access, Action, Policy, valid_resource};

/// Timing policy of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time allowed between open and a successful `AUTH` (close 4008 after).
    pub auth_timeout: Duration,
    /// How long before expiry `TOKEN_EXPIRING` is sent.
    pub expiry_notice: Duration,
    /// The JWT leeway: a token accepted inside it (already past `exp`) lives until `exp + leeway`.
    pub leeway: Duration,
    /// Interval between server WebSocket pings.
    pub ping_interval: Duration,
    /// Silence after which the connection is closed with 1001.
    pub idle_timeout: Duration,
    /// Subscriptions plus syncs one connection may hold.
    pub max_subscriptions: usize,
    /// Ops one `OP_BATCH` may carry.
    pub max_batch_ops: usize,
    /// Re-verify a live session's token this often (introspection), so that
    /// revocation at the identity provider ends the session.
    pub revalidate_every: Option<Duration>,
    /// Sustained messages per second per connection (0: unlimited).
    pub messages_per_second: u32,
    /// Messages a connection may send at once above the rate; as many again
    /// beyond that while rate-limited closes it with 4029.
    pub message_burst: u32,
    /// Largest encoded `PUB.data` or op `value`.
    pub max_value_bytes: usize,
    /// Largest message the transport accepts (announced in `AUTH_ACK`).
    pub max_message_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(10),
            expiry_notice: Duration::from_secs(30),
            leeway: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_subscriptions: 256,
            max_batch_ops: 1000,
            revalidate_every: None,
            messages_per_second: 1000,
            message_burst: 2000,
            max_value_bytes: 256 * 1024,
            max_message_bytes: 1024 * 1024,
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a protocol message.
    Send(ServerMessage),
    /// Verify this token and report back with [`Session::on_verified`] before
    /// feeding anything else.
    Verify(String),
    /// Join a topic (authorised); answer `OK {id}` once joined.
    Subscribe {
        /// The `SUB`'s id.
        id: u64,
        /// Topic name.
        topic: String,
    },
    /// Leave a topic (no answer: the session answers `UNSUB` itself).
    Unsubscribe {
        /// Topic name.
        topic: String,
    },
    /// Publish to a topic (authorised); answer `OK {id}`.
    Publish {
        /// The `PUB`'s id.
        id: u64,
        /// Topic name.
        topic: String,
        /// The payload.
        data: Value,
    },
    /// Apply the authorised ops and answer `OP_RESULT {id}`, filling in `results`.
    Write {
        /// The batch's id.
        id: u64,
        /// One slot per op; `Some` for ops already rejected here.
        results: Vec<Option<OpOutcome>>,
        /// The authorised ops with their positions in the batch.
        ops: Vec<(usize, RawOp)>,
    },
    /// Start following a collection (authorised); answer `SYNC_DATA {id}`.
    Sync {
        /// The `SYNC`'s id.
        id: u64,
        /// Collection name.
        collection: String,
        /// Cursor to resume from (`None`: everything).
        since: Option<Cursor>,
    },
    /// Stop following a collection (no answer).
    Unsync {
        /// Collection name.
        collection: String,
    },
    /// Send a WebSocket ping.
    Ping,
    /// Send a close frame and end the connection.
    Close {
        /// Close code (see [`close`]).
        code: u16,
        /// Close reason (short, never contains a token).
        reason: String,
    },
}

/// Where a session is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Waiting for a token; only `AUTH` and `PING` are processed.
    Unauthenticated {
        /// Unix ms after which the session closes with 4008.
        deadline: u64,
    },
    /// Authenticated as an identity (boxed: it is much larger than the other phases).
    Authenticated(Box<Authenticated>),
    /// A close was decided; nothing more is processed.
    Closed,
}

/// The state of an authenticated session.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    /// Who is connected.
    pub identity: Identity,
    /// What the identity may do under the current policy.
    pub access: Access,
    /// Topic → id of the `SUB` that joined it.
    pub subscriptions: BTreeMap<String, u64>,
    /// Collection → id of the `SYNC` that follows it.
    pub syncs: BTreeMap<String, u64>,
    /// Unix ms at which the session closes with 4100, if the credential expires.
    pub ends_at: Option<u64>,
    /// Whether `TOKEN_EXPIRING` was sent for the current credential.
    pub notice_sent: bool,
}

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

    /// Whether a close was decided.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Records transport activity (any frame, including pongs) at `now`.
    pub fn on_activity(&mut self, now: u64) {
        self.last_seen = self.last_seen.max(now);
    }

    /// Handles one decoded (or undecodable) client message.
    pub fn on_message(&mut self, message: Result<ClientMessage, DecodeError>, now: u64) -> Vec<Effect> {
        self.on_activity(now);
        let mut out = Vec::with_capacity(1);
        if self.verifying.is_some() {
            // The driver must not feed messages during verification; treat it as a bug in the peer order.
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
                out.push(Effect::Send(ServerMessage::Error {
                    id,
                    code: error::RATE_LIMITED.into(),
                    message: format!("more than {} messages per second", self.config.messages_per_second),
                }));
            }
            return out;
        }
        match &self.phase {
            Phase::Closed => {}
            Phase::Unauthenticated { .. } => self.unauthenticated(message, &mut out),
            Phase::Authenticated(_) => self.authenticated(message, &mut out),
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

    fn authenticated(&mut self, message: Result<ClientMessage, DecodeError>, out: &mut Vec<Effect>) {
        match message {
            Err(DecodeError::Malformed(reason)) => self.close(close::MALFORMED, &reason, out),
            Err(e @ DecodeError::TooDeep(_)) => self.close(close::MALFORMED, &e.to_string(), out),
            Err(DecodeError::UnknownType { type_name, id }) => out.push(Effect::Send(ServerMessage::Error {
                id,
                code: error::UNKNOWN_TYPE.into(),
                message: format!("unknown message type {type_name:?}"),
            })),
            Err(DecodeError::Invalid { kind: "AUTH", reason, .. }) => {
                self.fail(AuthFailCode::TokenMalformed, reason, out)
            }
            Err(DecodeError::Invalid { kind, id, reason }) => out.push(Effect::Send(ServerMessage::Error {
                id,
                code: error::INVALID.into(),
                message: format!("invalid {kind}: {reason}"),
            })),
            Ok(ClientMessage::Auth { token: None }) => {
                self.fail(AuthFailCode::TokenMissing, "AUTH carried no token".into(), out)
            }
            Ok(ClientMessage::Auth { token: Some(token) }) => self.verify(token, Purpose::Refresh, out),
            Ok(ClientMessage::Ping { id }) => out.push(Effect::Send(ServerMessage::Pong { id })),
            Ok(request) => {
                let config = self.config;
                if let Phase::Authenticated(auth) = &mut self.phase {
                    route(auth, request, &config, out);
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

/// Checks and routes one authenticated request.
fn route(auth: &mut Authenticated, request: ClientMessage, config: &SessionConfig, out: &mut Vec<Effect>) {
    let (max_subscriptions, max_batch_ops, max_value) =
        (config.max_subscriptions, config.max_batch_ops, config.max_value_bytes);
    let send = |out: &mut Vec<Effect>, message| out.push(Effect::Send(message));
    let fail = |out: &mut Vec<Effect>, id: u64, code: &str, message: String| {
        out.push(Effect::Send(ServerMessage::Error { id: Some(id), code: code.into(), message }))
    };
    let count = auth.subscriptions.len() + auth.syncs.len();
    match request {
        ClientMessage::Sub { id, topic } => {
            if let Err(why) = valid_resource(&topic) {
                fail(out, id, error::INVALID, format!("topic {why}"));
            } else if !auth.access.allows(Action::Read, &topic) {
                fail(out, id, error::FORBIDDEN, format!("not allowed to subscribe to {topic:?}"));
            } else if !auth.subscriptions.contains_key(&topic) && count >= max_subscriptions {
                fail(
                    out,
                    id,
                    error::TOO_MANY_SUBSCRIPTIONS,
                    format!("at most {max_subscriptions} subscriptions and syncs per connection"),
                );
            } else {
                auth.subscriptions.insert(topic.clone(), id);
                out.push(Effect::Subscribe { id, topic });
            }
        }
        ClientMessage::Unsub { id, topic } => {
            if auth.subscriptions.remove(&topic).is_some() {
                out.push(Effect::Unsubscribe { topic });
            }
            send(out, ServerMessage::Ok { id });
        }
        ClientMessage::Pub { id, topic, data } => {
            if let Err(why) = valid_resource(&topic) {
                fail(out, id, error::INVALID, format!("topic {why}"));
            } else if !auth.access.allows(Action::Write, &topic) {
                fail(out, id, error::FORBIDDEN, format!("not allowed to publish to {topic:?}"));
            } else if encoded_len(&data) > max_value {
                fail(out, id, error::INVALID, format!("data is larger than {max_value} bytes"));
            } else {
                out.push(Effect::Publish { id, topic, data });
            }
        }
        ClientMessage::OpBatch { id, ops } => {
            if ops.len() > max_batch_ops {
                return fail(out, id, error::INVALID, format!("at most {max_batch_ops} ops per batch"));
            }
            let mut results = Vec::with_capacity(ops.len());
            let mut allowed = Vec::with_capacity(ops.len());
            for (i, op) in ops.into_iter().enumerate() {
                let rejection = |op_id: Value, code: &str, message: String| {
                    Some(OpOutcome { op_id, ok: false, code: Some(code.into()), message: Some(message) })
                };
                results.push(match op {
                    OpInput::Invalid { op_id, reason } => rejection(op_id, error::INVALID, reason),
                    OpInput::Op(op) if encoded_len(&op.value) > max_value => {
                        rejection(op.op_id, error::INVALID, format!("value is larger than {max_value} bytes"))
                    }
                    OpInput::Op(op) => match valid_resource(&op.collection) {
                        Err(why) => rejection(op.op_id, error::INVALID, format!("collection {why}")),
                        Ok(()) if !auth.access.allows(Action::Write, &op.collection) => rejection(
                            op.op_id,
                            error::FORBIDDEN,
                            format!("not allowed to write to {:?}", op.collection),
                        ),
                        Ok(()) => {
                            allowed.push((i, op));
                            None
                        }
                    },
                });
            }
            if allowed.is_empty() {
                let results = results.into_iter().flatten().collect();
                send(out, ServerMessage::OpResult { id, results });
            } else {
                out.push(Effect::Write { id, results, ops: allowed });
            }
        }
        ClientMessage::Sync { id, collection, since } => {
            let since = since.as_deref().map(str::parse::<Cursor>).transpose();
            if let Err(why) = valid_resource(&collection) {
                fail(out, id, error::INVALID, format!("collection {why}"));
            } else if since.is_err() {
                fail(out, id, error::INVALID, "`since` is not a cursor this server issued".into());
            } else if !auth.access.allows(Action::Read, &collection) {
                fail(out, id, error::FORBIDDEN, format!("not allowed to sync {collection:?}"));
            } else if !auth.syncs.contains_key(&collection) && count >= max_subscriptions {
                fail(
                    out,
                    id,
                    error::TOO_MANY_SUBSCRIPTIONS,
                    format!("at most {max_subscriptions} subscriptions and syncs per connection"),
                );
            } else {
                auth.syncs.insert(collection.clone(), id);
                out.push(Effect::Sync { id, collection, since: since.ok().flatten() });
            }
        }
        ClientMessage::Unsync { id, collection } => {
            if auth.syncs.remove(&collection).is_some() {
                out.push(Effect::Unsync { collection });
            }
            send(out, ServerMessage::Ok { id });
        }
        ClientMessage::Auth { .. } | ClientMessage::Ping { .. } => {}
    }
}

/// The `id` of a request, if it has one.
fn request_id(message: &ClientMessage) -> Option<u64> {
    match message {
        ClientMessage::Sub { id, .. }
        | ClientMessage::Unsub { id, .. }
        | ClientMessage::Pub { id, .. }
        | ClientMessage::OpBatch { id, .. }
        | ClientMessage::Sync { id, .. }
        | ClientMessage::Unsync { id, .. } => Some(*id),
        ClientMessage::Ping { id } => *id,
        ClientMessage::Auth { .. } => None,
    }
}

/// Ends every subscription and sync the current access no longer allows.
fn reauthorize(auth: &mut Authenticated, out: &mut Vec<Effect>) {
    end_disallowed(
        &mut auth.subscriptions,
        &auth.access,
        "subscription to",
        |topic| Effect::Unsubscribe { topic },
        out,
    );
    end_disallowed(&mut auth.syncs, &auth.access, "sync of", |collection| Effect::Unsync { collection }, out);
}

/// Drops the entries `access` no longer lets the identity read, ending each
/// with `leave` and an `ERROR forbidden` carrying the request's id.
fn end_disallowed(
    entries: &mut BTreeMap<String, u64>,
    access: &Access,
    what: &str,
    leave: impl Fn(String) -> Effect,
    out: &mut Vec<Effect>,
) {
    entries.retain(|name, id| {
        let keep = access.allows(Action::Read, name);
        if !keep {
            out.push(leave(name.clone()));
            out.push(Effect::Send(ServerMessage::Error {
                id: Some(*id),
                code: error::FORBIDDEN.into(),
                message: format!("{what} {name:?} is no longer allowed"),
            }));
        }
        keep
    });
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    const RULES: &str = "[[rules]]\nroles=[\"user\"]\nresource=\"todos/{sub}/**\"\nactions=[\"read\",\"write\"]\n\
                         [[rules]]\nroles=[\"admin\"]\nresource=\"**\"\nactions=[\"read\",\"write\"]\n";

    fn op(id: &str, collection: &str) -> OpInput {
        OpInput::Op(RawOp {
            op_id: Value::from(id),
            collection: collection.into(),
            key: "k".into(),
            value: Value::Nil,
            hlc: "1:0:n".into(),
        })
    }

    #[test]
    fn requests_are_checked_against_the_rules() {
        let mut s = open_with(Policy::with_rules(RuleSet::parse(RULES).unwrap()));
        auth(&mut s, "alice", None);
        assert_eq!(
            s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "todos/alice".into() }), T0),
            [Effect::Subscribe { id: 1, topic: "todos/alice".into() }]
        );
        let denied = s.on_message(Ok(ClientMessage::Sub { id: 2, topic: "todos/bob".into() }), T0);
        assert!(
            matches!(&denied[..], [Effect::Send(ServerMessage::Error { id: Some(2), code, .. })] if code == "forbidden")
        );
        let out = s.on_message(
            Ok(ClientMessage::OpBatch {
                id: 3,
                ops: vec![op("a", "todos/alice"), op("b", "todos/bob"), op("c", "todos/alice/x")],
            }),
            T0,
        );
        let [Effect::Write { id: 3, results, ops }] = &out[..] else { panic!("{out:?}") };
        assert_eq!(
            results.iter().map(|r| r.as_ref().map(|o| o.code.clone().unwrap())).collect::<Vec<_>>(),
            [None, Some("forbidden".into()), None]
        );
        assert_eq!(ops.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2]);
        let out = s.on_message(
            Ok(ClientMessage::Sync { id: 4, collection: "todos/alice".into(), since: Some("x".into()) }),
            T0,
        );
        assert!(matches!(&out[..], [Effect::Send(ServerMessage::Error { code, .. })] if code == "invalid"));
    }

    #[test]
    fn losing_a_role_ends_subscriptions_but_not_the_connection() {
        let mut s = open_with(Policy::with_rules(RuleSet::parse(RULES).unwrap()));
        s.on_message(Ok(ClientMessage::Auth { token: Some("t".into()) }), T0);
        s.on_verified(Ok(Identity::new("alice", vec!["admin".into()])), T0);
        s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "ops/alerts".into() }), T0);
        s.on_message(Ok(ClientMessage::Sync { id: 2, collection: "todos/alice".into(), since: None }), T0);
        s.on_message(Ok(ClientMessage::Auth { token: Some("t2".into()) }), T0);
        let out = s.on_verified(Ok(Identity::new("alice", vec!["user".into()])), T0);
        assert!(matches!(&out[0], Effect::Send(ServerMessage::AuthAck { .. })));
        assert_eq!(out[1], Effect::Unsubscribe { topic: "ops/alerts".into() });
        assert!(matches!(&out[2], Effect::Send(ServerMessage::Error { id: Some(1), code, .. }) if code == "forbidden"));
        assert_eq!(out.len(), 3, "the still-allowed sync stays");
        assert!(!s.is_closed());
        let out = s.on_policy(Arc::new(Policy::with_rules(RuleSet::parse("").unwrap())));
        assert_eq!(out[0], Effect::Unsync { collection: "todos/alice".into() });
        assert_eq!(s.synced().count(), 0);
    }

    #[test]
    fn live_sessions_are_revalidated() {
        let config = SessionConfig { revalidate_every: Some(Duration::from_secs(30)), ..SessionConfig::default() };
        let (mut s, _) = Session::open(config, T0, Arc::new(Policy::allow_all()), None, None);
        auth(&mut s, "alice", None);
        s.on_activity(T0 + 29_000);
        assert!(!s.on_timer(T0 + 29_999).contains(&Effect::Verify("t".into())));
        assert_eq!(s.on_timer(T0 + 30_000), [Effect::Verify("t".into())]);
        let out = s.on_verified(Err(AuthError::new(AuthFailCode::IntrospectionUnavailable, "down")), T0 + 30_000);
        assert!(out.is_empty() && !s.is_closed(), "a provider outage keeps live sessions");
        s.on_activity(T0 + 59_000);
        assert_eq!(s.on_timer(T0 + 60_000), [Effect::Verify("t".into())]);
        assert!(
            s.on_verified(Ok(identity("alice", None)), T0 + 60_000).is_empty(),
            "no AUTH_ACK for a silent revalidation"
        );
        s.on_activity(T0 + 89_000);
        s.on_timer(T0 + 90_000);
        let out = s.on_verified(Err(AuthError::new(AuthFailCode::TokenInvalid, "inactive")), T0 + 90_000);
        assert_eq!(auth_fail_code(&out).as_deref(), Some("forbidden"));
        assert_eq!(close_code(&out), Some(4003));
    }

    #[test]
    fn floods_are_answered_then_closed() {
        let config = SessionConfig { messages_per_second: 10, message_burst: 5, ..SessionConfig::default() };
        let (mut s, _) = Session::open(config, T0, Arc::new(Policy::allow_all()), None, None);
        let ping = |s: &mut Session, at| s.on_message(Ok(ClientMessage::Ping { id: Some(1) }), at);
        for _ in 0..5 {
            assert_eq!(ping(&mut s, T0), [Effect::Send(ServerMessage::Pong { id: Some(1) })]);
        }
        assert!(
            matches!(&ping(&mut s, T0)[..], [Effect::Send(ServerMessage::Error { code, .. })] if code == "rate_limited")
        );
        assert_eq!(ping(&mut s, T0 + 1000).len(), 1, "the bucket refills with time");
        let mut closed = None;
        for _ in 0..20 {
            closed = close_code(&ping(&mut s, T0 + 1000)).or(closed);
        }
        assert_eq!(closed, Some(4029));
    }

    #[test]
    fn subscription_limit() {
        let (mut s, _) = Session::open(
            SessionConfig { max_subscriptions: 1, ..SessionConfig::default() },
            T0,
            Arc::new(Policy::allow_all()),
            None,
            None,
        );
        auth(&mut s, "alice", None);
        s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "a".into() }), T0);
        let out = s.on_message(Ok(ClientMessage::Sub { id: 2, topic: "b".into() }), T0);
        assert!(
            matches!(&out[..], [Effect::Send(ServerMessage::Error { code, .. })] if code == "too_many_subscriptions")
        );
        assert_eq!(
            s.on_message(Ok(ClientMessage::Sub { id: 3, topic: "a".into() }), T0),
            [Effect::Subscribe { id: 3, topic: "a".into() }]
        );
    }

    const T0: u64 = 1_800_000_000_000;

    fn identity(sub: &str, exp_secs: Option<u64>) -> Identity {
        Identity { expires_at: exp_secs, ..Identity::new(sub, vec!["user".into()]) }
    }

    fn open() -> Session {
        open_with(Policy::allow_all())
    }

    fn open_with(policy: Policy) -> Session {
        let (s, out) = Session::open(SessionConfig::default(), T0, Arc::new(policy), None, None);
        assert_eq!(out, [Effect::Send(ServerMessage::AuthRequired { protocol_version: 1 })]);
        s
    }

    fn auth(s: &mut Session, sub: &str, exp: Option<u64>) -> Vec<Effect> {
        let out = s.on_message(Ok(ClientMessage::Auth { token: Some("t".into()) }), T0);
        assert_eq!(out, [Effect::Verify("t".into())]);
        s.on_verified(Ok(identity(sub, exp)), T0)
    }

    fn close_code(out: &[Effect]) -> Option<u16> {
        out.iter().find_map(|e| match e {
            Effect::Close { code, .. } => Some(*code),
            _ => None,
        })
    }

    fn auth_fail_code(out: &[Effect]) -> Option<String> {
        out.iter().find_map(|e| match e {
            Effect::Send(ServerMessage::AuthFail { code, .. }) => Some(code.clone()),
            _ => None,
        })
    }

    #[test]
    fn nothing_but_auth_and_ping_before_ack() {
        let mut s = open();
        assert_eq!(
            s.on_message(Ok(ClientMessage::Ping { id: Some(1) }), T0),
            [Effect::Send(ServerMessage::Pong { id: Some(1) })]
        );
        let out = s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "t".into() }), T0);
        assert_eq!(auth_fail_code(&out).as_deref(), Some("not_authenticated"));
        assert_eq!(close_code(&out), Some(4001));
        assert!(s.is_closed());
        assert!(s.on_message(Ok(ClientMessage::Ping { id: None }), T0).is_empty());
    }

    #[test]
    fn unknown_type_before_auth_is_not_authenticated_and_garbage_is_4000() {
        let mut s = open();
        let out = s.on_message(Err(DecodeError::UnknownType { type_name: "X".into(), id: None }), T0);
        assert_eq!(close_code(&out), Some(4001));
        let mut s = open();
        assert_eq!(close_code(&s.on_message(Err(DecodeError::Malformed("x".into())), T0)), Some(4000));
    }

    #[test]
    fn auth_timeout_closes_with_4008() {
        let mut s = open();
        assert_eq!(s.next_deadline(), Some(T0 + 10_000));
        assert!(s.on_timer(T0 + 9_999).is_empty());
        assert_eq!(close_code(&s.on_timer(T0 + 10_000)), Some(4008));
    }

    #[test]
    fn failures_carry_their_close_codes() {
        for (code, close) in
            [(AuthFailCode::TokenExpired, 4100), (AuthFailCode::Forbidden, 4003), (AuthFailCode::TokenInvalid, 4001)]
        {
            let mut s = open();
            s.on_message(Ok(ClientMessage::Auth { token: Some("t".into()) }), T0);
            let out = s.on_verified(Err(AuthError::new(code, "x")), T0);
            assert_eq!(auth_fail_code(&out).as_deref(), Some(code.as_str()));
            assert_eq!(close_code(&out), Some(close));
        }
        let mut s = open();
        let out = s.on_message(Ok(ClientMessage::Auth { token: None }), T0);
        assert_eq!(auth_fail_code(&out).as_deref(), Some("token_missing"));
    }

    #[test]
    fn expiry_notice_then_4100_unless_refreshed() {
        let exp = T0 / 1000 + 60;
        let mut s = open();
        let out = auth(&mut s, "alice", Some(exp));
        assert!(matches!(&out[0], Effect::Send(ServerMessage::AuthAck { expires_at: Some(e), .. }) if *e == exp));
        assert_eq!(s.next_deadline(), Some(T0 + 20_000), "first ping comes before the notice");
        s.on_activity(T0 + 29_000);
        let out = s.on_timer(T0 + 30_000);
        assert!(out.contains(&Effect::Send(ServerMessage::TokenExpiring { expires_at: exp })));
        s.on_activity(T0 + 59_000);
        assert_eq!(close_code(&s.on_timer(T0 + 60_000)), Some(4100));
    }

    #[test]
    fn messages_after_the_deadline_are_refused_without_a_timer() {
        let exp = T0 / 1000 + 60;
        let mut s = open();
        auth(&mut s, "alice", Some(exp));
        let late = s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "t".into() }), T0 + 60_000);
        assert_eq!(late.len(), 1, "nothing is routed: {late:?}");
        assert_eq!(close_code(&late), Some(4100));
        let mut s = open();
        let late = s.on_message(Ok(ClientMessage::Auth { token: Some("t".into()) }), T0 + 10_000);
        assert_eq!(close_code(&late), Some(4008), "an AUTH after the auth timeout is not verified");
    }

    #[test]
    fn refresh_extends_same_subject_and_refuses_another() {
        let exp = T0 / 1000 + 60;
        let mut s = open();
        auth(&mut s, "alice", Some(exp));
        s.on_message(Ok(ClientMessage::Auth { token: Some("t2".into()) }), T0 + 1000);
        let out = s.on_verified(Ok(identity("alice", Some(exp + 3600))), T0 + 1000);
        assert!(matches!(&out[0], Effect::Send(ServerMessage::AuthAck { .. })));
        s.on_activity(T0 + 59_000);
        assert!(close_code(&s.on_timer(T0 + 60_000)).is_none(), "refreshed session outlives the first token");

        s.on_message(Ok(ClientMessage::Auth { token: Some("t3".into()) }), T0 + 61_000);
        let out = s.on_verified(Ok(identity("mallory", Some(exp + 3600))), T0 + 61_000);
        assert_eq!(auth_fail_code(&out).as_deref(), Some("forbidden"));
        assert_eq!(close_code(&out), Some(4003));
    }

    #[test]
    fn invalid_refresh_ends_the_session() {
        let mut s = open();
        auth(&mut s, "alice", None);
        s.on_message(Ok(ClientMessage::Auth { token: Some("bad".into()) }), T0);
        let out = s.on_verified(Err(AuthError::new(AuthFailCode::TokenInvalid, "x")), T0);
        assert_eq!(close_code(&out), Some(4001));
    }

    #[test]
    fn authenticated_errors_are_answered_and_requests_routed() {
        let mut s = open();
        auth(&mut s, "alice", None);
        let out = s.on_message(Err(DecodeError::UnknownType { type_name: "X".into(), id: Some(4) }), T0);
        assert!(
            matches!(&out[0], Effect::Send(ServerMessage::Error { id: Some(4), code, .. }) if code == "unknown_type")
        );
        let batch =
            ClientMessage::OpBatch { id: 1, ops: vec![OpInput::Invalid { op_id: Value::Nil, reason: "x".into() }] };
        assert!(
            matches!(&s.on_message(Ok(batch), T0)[..], [Effect::Send(ServerMessage::OpResult { id: 1, results })] if !results[0].ok)
        );
        let sub = s.on_message(Ok(ClientMessage::Sub { id: 2, topic: "t".into() }), T0);
        assert_eq!(sub, [Effect::Subscribe { id: 2, topic: "t".into() }]);
    }

    #[test]
    fn mode_none_and_query_tokens_skip_auth_required() {
        let anonymous = Some(Identity::new("anonymous", vec![]));
        let (s, out) = Session::open(SessionConfig::default(), T0, Arc::new(Policy::allow_all()), anonymous, None);
        assert!(matches!(&out[0], Effect::Send(ServerMessage::AuthAck { sub, .. }) if sub == "anonymous"));
        assert!(s.identity().is_some());
        let (_, out) =
            Session::open(SessionConfig::default(), T0, Arc::new(Policy::allow_all()), None, Some("tok".into()));
        assert_eq!(out, [Effect::Verify("tok".into())]);
    }

    #[test]
    fn silent_peers_are_pinged_then_closed() {
        let mut s = open();
        auth(&mut s, "alice", None);
        assert_eq!(s.on_timer(T0 + 20_000), [Effect::Ping]);
        assert_eq!(s.on_timer(T0 + 40_000), [Effect::Ping]);
        assert_eq!(close_code(&s.on_timer(T0 + 60_000)), Some(1001));
    }
}
