//! Routing of authenticated requests: names, RBAC, limits; and the
//! re-authorization of live subscriptions and syncs when access changes.

use std::collections::BTreeMap;

use rmpv::Value;

use super::{Authenticated, Effect, SessionConfig};
use crate::cursor::Cursor;
use crate::protocol::encoded_len;
use crate::protocol::{ClientMessage, OpInput, ServerMessage};
use crate::request_error::RequestError;
use crate::rules::{Access, Action, valid_resource};

/// Largest client-supplied presence `info`, encoded.
pub(super) const MAX_PRESENCE_INFO_BYTES: usize = 1024;

/// Checks and routes one authenticated request.
pub(super) fn route(auth: &mut Authenticated, request: ClientMessage, config: &SessionConfig, out: &mut Vec<Effect>) {
    let (max_subscriptions, max_batch_ops, max_value) =
        (config.max_subscriptions, config.max_batch_ops, config.max_value_bytes);
    let send = |out: &mut Vec<Effect>, message| out.push(Effect::Send(message));
    let fail = |out: &mut Vec<Effect>, id: u64, refusal: RequestError| out.push(Effect::Send(refusal.reply(Some(id))));
    let count = auth.subscriptions.len() + auth.syncs.len();
    // SUB and SYNC share one budget, and one refusal.
    let full = || RequestError::TooManySubscriptions(max_subscriptions);
    match request {
        ClientMessage::SubPresent { id, topic, info, .. } => {
            let too_big = info.as_ref().is_some_and(|info| encoded_len(info) > MAX_PRESENCE_INFO_BYTES);
            if too_big {
                fail(
                    out,
                    id,
                    RequestError::Invalid(format!("presence info is larger than {MAX_PRESENCE_INFO_BYTES} bytes")),
                );
            } else {
                let before = out.len();
                route(auth, ClientMessage::Sub { id, topic: topic.clone() }, config, out);
                if matches!(out.get(before), Some(Effect::Subscribe { .. })) {
                    out.push(Effect::Join { topic, info });
                }
            }
        }
        ClientMessage::Presence { id, topic } => {
            if let Err(why) = valid_resource(&topic) {
                fail(out, id, RequestError::Invalid(format!("topic {why}")));
            } else if !auth.access.allows(Action::Read, &topic) {
                fail(out, id, RequestError::Forbidden(format!("not allowed to see who is on {topic:?}")));
            } else {
                out.push(Effect::Presence { id, topic });
            }
        }
        ClientMessage::Sub { id, topic } => {
            if let Err(why) = valid_resource(&topic) {
                fail(out, id, RequestError::Invalid(format!("topic {why}")));
            } else if !auth.access.allows(Action::Read, &topic) {
                fail(out, id, RequestError::Forbidden(format!("not allowed to subscribe to {topic:?}")));
            } else if !auth.subscriptions.contains_key(&topic) && count >= max_subscriptions {
                fail(out, id, full());
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
                fail(out, id, RequestError::Invalid(format!("topic {why}")));
            } else if !auth.access.allows(Action::Write, &topic) {
                fail(out, id, RequestError::Forbidden(format!("not allowed to publish to {topic:?}")));
            } else if encoded_len(&data) > max_value {
                fail(out, id, RequestError::Invalid(format!("data is larger than {max_value} bytes")));
            } else {
                out.push(Effect::Publish { id, topic, data });
            }
        }
        ClientMessage::OpBatch { id, ops } => {
            if ops.len() > max_batch_ops {
                return fail(out, id, RequestError::Invalid(format!("at most {max_batch_ops} ops per batch")));
            }
            let mut results = Vec::with_capacity(ops.len());
            let mut allowed = Vec::with_capacity(ops.len());
            for (i, op) in ops.into_iter().enumerate() {
                let rejection = |op_id: Value, refusal: RequestError| Some(refusal.rejection(op_id));
                results.push(match op {
                    OpInput::Invalid { op_id, reason } => rejection(op_id, RequestError::Invalid(reason)),
                    OpInput::Op(op) if encoded_len(&op.value) > max_value => {
                        rejection(op.op_id, RequestError::Invalid(format!("value is larger than {max_value} bytes")))
                    }
                    OpInput::Op(op) => match valid_resource(&op.collection) {
                        Err(why) => rejection(op.op_id, RequestError::Invalid(format!("collection {why}"))),
                        Ok(()) if !auth.access.allows(Action::Write, &op.collection) => rejection(
                            op.op_id,
                            RequestError::Forbidden(format!("not allowed to write to {:?}", op.collection)),
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
                fail(out, id, RequestError::Invalid(format!("collection {why}")));
            } else if since.is_err() {
                fail(out, id, RequestError::Invalid("`since` is not a cursor this server issued".into()));
            } else if !auth.access.allows(Action::Read, &collection) {
                fail(out, id, RequestError::Forbidden(format!("not allowed to sync {collection:?}")));
            } else if !auth.syncs.contains_key(&collection) && count >= max_subscriptions {
                fail(out, id, full());
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
