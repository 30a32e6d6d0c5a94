//! Routing of authenticated requests: names, RBAC, limits; and the
//! re-authorization of live subscriptions and syncs when access changes.

use std::collections::BTreeMap;

use super::{Authenticated, Effect, SessionConfig};
use crate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use crate::requests::{
    Reading, RequestError, check_batch, check_name, check_op, check_op_fields, check_presence_info, check_publish,
    check_read, parse_since,
};
use crate::rules::{Access, Action};

/// Shortest time between two presence `info` announcements of one connection.
pub(super) const MIN_ANNOUNCE_INTERVAL_MS: u64 = 500;

/// Checks and routes one authenticated request (the checks are
/// [`crate::requests`]', shared with the HTTP API).
pub(super) fn route(
    auth: &mut Authenticated,
    request: ClientMessage,
    config: &SessionConfig,
    now: u64,
    out: &mut Vec<Effect>,
) {
    let max_subscriptions = config.max_subscriptions;
    let limits = config.request_limits();
    let send = |out: &mut Vec<Effect>, message| out.push(Effect::Send(message));
    let fail = |out: &mut Vec<Effect>, id: u64, refusal: RequestError| out.push(Effect::Send(refusal.reply(Some(id))));
    let count = auth.subscriptions.len() + auth.syncs.len();
    // SUB and SYNC share one budget, and one refusal.
    let full = || RequestError::TooManySubscriptions(max_subscriptions);
    match request {
        ClientMessage::SubPresent { id, topic, info, .. } => {
            // Announcing something to every member is a write: a read-only member joins silently.
            // Announcements are news to every member: at most one per MIN_ANNOUNCE_INTERVAL_MS.
            let announced = info.as_ref().map(|info| check_presence_info(&auth.access, &topic, info));
            let too_soon =
                info.is_some() && auth.announced_at.is_some_and(|at| now.saturating_sub(at) < MIN_ANNOUNCE_INTERVAL_MS);
            if let Some(Err(refusal)) = announced {
                fail(out, id, refusal);
            } else if too_soon {
                let refusal = RequestError::RateLimitedAs(format!(
                    "presence info may change at most once every {MIN_ANNOUNCE_INTERVAL_MS} ms"
                ));
                fail(out, id, refusal);
            } else {
                if info.is_some() {
                    auth.announced_at = Some(now);
                }
                let before = out.len();
                route(auth, ClientMessage::Sub { id, topic: topic.clone() }, config, now, out);
                if matches!(out.get(before), Some(Effect::Subscribe { .. })) {
                    out.push(Effect::Join { topic, info });
                }
            }
        }
        ClientMessage::Presence { id, topic, after } => match check_read(&auth.access, Reading::Presence, &topic) {
            Err(refusal) => fail(out, id, refusal),
            Ok(()) => out.push(Effect::Presence { id, topic, after }),
        },
        ClientMessage::Sub { id, topic } => match check_read(&auth.access, Reading::Subscribe, &topic) {
            Err(refusal) => fail(out, id, refusal),
            Ok(()) if !auth.subscriptions.contains_key(&topic) && count >= max_subscriptions => fail(out, id, full()),
            Ok(()) => {
                auth.subscriptions.insert(topic.clone(), id);
                out.push(Effect::Subscribe { id, topic });
            }
        },
        ClientMessage::Unsub { id, topic } => {
            if auth.subscriptions.remove(&topic).is_some() {
                out.push(Effect::Unsubscribe { topic });
            }
            send(out, ServerMessage::Ok { id });
        }
        ClientMessage::Pub { id, topic, data } => match check_publish(&auth.access, &topic, &data, limits) {
            Err(refusal) => fail(out, id, refusal),
            Ok(()) => out.push(Effect::Publish { id, topic, data }),
        },
        ClientMessage::OpBatch { id, ops } => {
            if let Err(refusal) = check_batch(ops.len(), limits) {
                return fail(out, id, refusal);
            }
            let mut results = Vec::with_capacity(ops.len());
            let mut allowed: Vec<(usize, RawOp)> = Vec::with_capacity(ops.len());
            for (i, op) in ops.into_iter().enumerate() {
                results.push(match op {
                    OpInput::Invalid { op_id, reason } => Some(RequestError::Invalid(reason).rejection(op_id)),
                    OpInput::Op(op) => {
                        let checked = match allowed.last() {
                            // A batch usually writes one collection: its name and rights are checked
                            // once per run of ops to it (the op's own fields each time).
                            Some((_, last)) if last.collection == op.collection => {
                                check_op_fields(&op.op_id, &op.value, limits)
                            }
                            _ => check_op(&auth.access, &op.op_id, &op.collection, &op.value, limits),
                        };
                        match checked {
                            Err(rejection) => Some(rejection),
                            Ok(()) => {
                                allowed.push((i, op));
                                None
                            }
                        }
                    }
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
            let checked = check_name("collection", &collection)
                .and_then(|()| parse_since(since.as_deref()))
                .and_then(|since| check_read(&auth.access, Reading::Records, &collection).map(|()| since));
            match checked {
                Err(refusal) => fail(out, id, refusal),
                Ok(_) if !auth.syncs.contains_key(&collection) && count >= max_subscriptions => fail(out, id, full()),
                Ok(since) => {
                    auth.syncs.insert(collection.clone(), id);
                    out.push(Effect::Sync { id, collection, since });
                }
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
pub(super) fn request_id(message: &ClientMessage) -> Option<u64> {
    match message {
        ClientMessage::Sub { id, .. }
        | ClientMessage::SubPresent { id, .. }
        | ClientMessage::Presence { id, .. }
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
pub(super) fn reauthorize(auth: &mut Authenticated, out: &mut Vec<Effect>) {
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
            out.push(Effect::Send(
                RequestError::Forbidden(format!("{what} {name:?} is no longer allowed")).reply(Some(*id)),
            ));
        }
        keep
    });
}
