//! MessagePack codec: bytes → [`ClientMessage`] and messages → bytes.
//!
//! Decoding goes through [`rmpv::ValueRef`] (borrowed from the frame) with an
//! explicit depth budget: a length prefix is checked against the bytes that
//! are there before anything is read, and the frame size is already bounded by
//! the transport, so no input can allocate without bound.

use bytes::Bytes;
use rmpv::{Value, ValueRef};

use super::messages::{ClientMessage, OpInput, RawOp, ServerMessage};

/// Bounds applied while decoding one message.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Deepest allowed nesting of arrays and maps outside values (the
    /// top-level map is depth 1). A message may nest
    /// [`MAX_VALUE_DEPTH`](crate::values::MAX_VALUE_DEPTH) levels more, so
    /// that an op whose value is too deep is refused on its own (`invalid`,
    /// by the value rule) instead of closing the connection with its batch.
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_depth: 32 }
    }
}

/// Why a binary message could not become a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not MessagePack, trailing bytes, not a map, or no string `type`: close 4000.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Nested deeper than [`DecodeLimits::max_depth`] plus a value's allowance: close 4000.
    #[error("message nested deeper than {0} levels")]
    TooDeep(usize),
    /// A well-formed message whose `type` is unknown: `ERROR unknown_type`.
    #[error("unknown message type {type_name:?}")]
    UnknownType {
        /// The type as sent (truncated to 64 bytes).
        type_name: String,
        /// The message's `id`, if it had one.
        id: Option<u64>,
    },
    /// A known type with missing or mistyped fields: `ERROR invalid`.
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// The message type (`"SUB"`, …).
        kind: &'static str,
        /// The message's `id`, if it had one.
        id: Option<u64>,
        /// What was wrong.
        reason: String,
    },
}

/// Decodes one client message from a complete binary WebSocket message.
///
/// A plain `OP_BATCH` (the hot path of writes) is read straight off the
/// bytes ([`super::batch`]); everything else, and every batch that reader
/// does not take, goes through [`decode_client_tree`], which defines the
/// result for all input.
pub fn decode_client(bytes: &[u8], limits: DecodeLimits) -> Result<ClientMessage, DecodeError> {
    match super::batch::read_batch(bytes, tree_budget(limits)) {
        Some(batch) => Ok(batch),
        None => decode_client_tree(bytes, limits),
    }
}

/// rmpv's depth budget for a message under `limits`: rmpv spends one unit
/// per value and one per container body or string, so N container levels
/// (plus their scalar leaves) need 2N + 2. A message may nest
/// [`MAX_VALUE_DEPTH`](crate::values::MAX_VALUE_DEPTH) levels more than
/// `max_depth`, for values.
pub(crate) fn tree_budget(limits: DecodeLimits) -> usize {
    tree_levels(limits).saturating_mul(2).saturating_add(2)
}

fn tree_levels(limits: DecodeLimits) -> usize {
    limits.max_depth.saturating_add(crate::values::MAX_VALUE_DEPTH)
}

/// [`decode_client`] for every message, through a tree of the whole message
/// borrowed from `bytes` ([`ValueRef`]): field names, the `type` and string
/// fields point into the frame, and only what the message keeps is copied
/// out. Public for the fuzz target that compares the two readers.
#[doc(hidden)]
pub fn decode_client_tree(bytes: &[u8], limits: DecodeLimits) -> Result<ClientMessage, DecodeError> {
    let mut reader = bytes;
    let levels = tree_levels(limits);
    let value = match rmpv::decode::read_value_ref_with_max_depth(&mut reader, tree_budget(limits)) {
        Ok(value) => value,
        Err(rmpv::decode::Error::DepthLimitExceeded) => {
            return Err(DecodeError::TooDeep(levels));
        }
        Err(e) => return Err(DecodeError::Malformed(format!("not MessagePack: {e}"))),
    };
    if !reader.is_empty() {
        return Err(DecodeError::Malformed(format!("{} trailing bytes after the message", reader.len())));
    }
    let ValueRef::Map(entries) = value else {
        return Err(DecodeError::Malformed("a message must be a MessagePack map".into()));
    };
    let fields = Fields(&entries);
    let type_name = match fields.get("type") {
        Some(ValueRef::String(s)) => match s.as_str() {
            Some(s) => s,
            None => return Err(DecodeError::Malformed("`type` is not valid UTF-8".into())),
        },
        Some(_) => return Err(DecodeError::Malformed("`type` must be a string".into())),
        None => return Err(DecodeError::Malformed("missing `type`".into())),
    };
    let raw_id = fields.get("id");
    let id = raw_id.and_then(ValueRef::as_u64);
    let parsed = match type_name {
        "OP_BATCH" => request_id(raw_id).and_then(|id| decode_batch(id, &fields)),
        "AUTH" => decode_auth(&fields),
        "PING" => match raw_id {
            None | Some(ValueRef::Nil) => Ok(ClientMessage::Ping { id: None }),
            Some(v) => v
                .as_u64()
                .map(|id| ClientMessage::Ping { id: Some(id) })
                .ok_or_else(|| "`id` must be an unsigned integer".to_string()),
        },
        "SUB" => request_id(raw_id).and_then(|id| {
            let topic = fields.string("topic")?;
            match fields.get("presence") {
                None | Some(ValueRef::Nil) | Some(ValueRef::Boolean(false)) => Ok(ClientMessage::Sub { id, topic }),
                Some(ValueRef::Boolean(true)) => {
                    let info = fields.get("info").filter(|v| !matches!(v, ValueRef::Nil)).map(ValueRef::to_owned);
                    Ok(ClientMessage::SubPresent { id, topic, presence: true, info })
                }
                Some(_) => Err("`presence` must be a boolean".to_string()),
            }
        }),
        "PRESENCE" => request_id(raw_id).and_then(|id| {
            let after = match fields.get("after") {
                None | Some(ValueRef::Nil) => None,
                Some(value) => Some(value.as_u64().ok_or("`after` must be a connection id")?),
            };
            Ok(ClientMessage::Presence { id, topic: fields.string("topic")?, after })
        }),
        "UNSUB" => request_id(raw_id).and_then(|id| Ok(ClientMessage::Unsub { id, topic: fields.string("topic")? })),
        "PUB" => request_id(raw_id).and_then(|id| {
            let topic = fields.string("topic")?;
            let data = fields.get("data").map_or(Value::Nil, ValueRef::to_owned);
            Ok(ClientMessage::Pub { id, topic, data })
        }),
        "SYNC" => request_id(raw_id).and_then(|id| {
            let collection = fields.string("collection")?;
            let since = match fields.get("since") {
                None | Some(ValueRef::Nil) => None,
                Some(ValueRef::String(s)) => Some(s.as_str().ok_or("`since` is not valid UTF-8")?.to_string()),
                Some(_) => return Err("`since` must be a string cursor".to_string()),
            };
            Ok(ClientMessage::Sync { id, collection, since })
        }),
        "UNSYNC" => {
            request_id(raw_id).and_then(|id| Ok(ClientMessage::Unsync { id, collection: fields.string("collection")? }))
        }
        other => {
            let mut type_name = other.to_string();
            truncate_utf8(&mut type_name, 64);
            return Err(DecodeError::UnknownType { type_name, id });
        }
    };
    parsed.map_err(|reason| DecodeError::Invalid { kind: static_kind(type_name), id, reason })
}

/// The length of a value's MessagePack encoding, without allocating it.
pub fn encoded_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = rmpv::encode::write_value(&mut count, value);
    count.0
}

/// Encodes a server message as one MessagePack map (field names as on the wire).
pub fn encode_server(message: &ServerMessage) -> Bytes {
    // Writing owned, serde-supported types into a Vec cannot fail.
    // Encoding into a Vec does not fail for these types (the decode_frame fuzzer
    // re-encodes arbitrary client data); should it ever, the peer gets an ERROR
    // instead of the process panicking.
    // Sized for most messages at once: growing from empty reallocated four or
    // five times per message (callgrind: ≈ 1,000 instructions per AUTH_ACK).
    let mut out = Vec::with_capacity(ENCODE_CAPACITY);
    match rmp_serde::encode::write_named(&mut out, message) {
        Ok(()) => Bytes::from(out),
        Err(e) => encoding_failed(&e),
    }
}

/// The first buffer of an encoded server message: `AUTH_ACK`, `OP_RESULT`
/// of a small batch and a typical `MESSAGE` fit in it.
const ENCODE_CAPACITY: usize = 256;

/// Encodes a client message as one MessagePack map (used by the client and tests).
pub fn encode_client(message: &ClientMessage) -> Bytes {
    rmp_serde::to_vec_named(message).map(Bytes::from).unwrap_or_else(|e| encoding_failed(&e))
}

/// A hand-built `ERROR {code: "internal"}`: rmpv writing into a Vec cannot fail.
fn encoding_failed(e: &rmp_serde::encode::Error) -> Bytes {
    tracing::error!(error = %e, "a message could not be encoded");
    let error = Value::Map(vec![
        (Value::from("type"), Value::from("ERROR")),
        (Value::from("code"), Value::from(super::codes::error::INTERNAL)),
        (Value::from("message"), Value::from("the server could not encode a message")),
    ]);
    let mut out = Vec::new();
    let _ = rmpv::encode::write_value(&mut out, &error);
    Bytes::from(out)
}

fn decode_auth(fields: &Fields<'_, '_>) -> Result<ClientMessage, String> {
    match fields.get("token") {
        None | Some(ValueRef::Nil) => Ok(ClientMessage::Auth { token: None }),
        Some(ValueRef::String(s)) => match s.as_str() {
            Some("") => Ok(ClientMessage::Auth { token: None }),
            Some(t) => Ok(ClientMessage::Auth { token: Some(t.to_string()) }),
            None => Err("`token` is not valid UTF-8".into()),
        },
        Some(_) => Err("`token` must be a string".into()),
    }
}

fn decode_batch(id: u64, fields: &Fields<'_, '_>) -> Result<ClientMessage, String> {
    let Some(ValueRef::Array(items)) = fields.get("ops") else {
        return Err("`ops` must be an array".into());
    };
    let ops = items.iter().map(decode_op).collect();
    Ok(ClientMessage::OpBatch { id, ops })
}

/// Decodes one op on its own, so that a malformed op is rejected alone.
fn decode_op(item: &ValueRef<'_>) -> OpInput {
    let ValueRef::Map(entries) = item else {
        return OpInput::Invalid { op_id: Value::Nil, reason: "an op must be a map".into() };
    };
    let fields = Fields(entries);
    let op_id = match fields.get("opId") {
        Some(v @ ValueRef::Integer(_)) => v.to_owned(),
        Some(ValueRef::String(s)) if s.as_str().is_some() => Value::String((*s).into()),
        _ => {
            return OpInput::Invalid { op_id: Value::Nil, reason: "`opId` must be a string or an integer".into() };
        }
    };
    let parsed = (|| -> Result<(String, String, Value, String), String> {
        Ok((
            fields.string("collection")?,
            fields.string("key")?,
            fields.get("value").map_or(Value::Nil, ValueRef::to_owned),
            fields.string("hlc")?,
        ))
    })();
    match parsed {
        Ok((collection, key, value, hlc)) => OpInput::Op(RawOp { op_id, collection, key, value, hlc }),
        Err(reason) => OpInput::Invalid { op_id, reason },
    }
}

fn request_id(raw: Option<&ValueRef<'_>>) -> Result<u64, String> {
    raw.and_then(ValueRef::as_u64).ok_or_else(|| "`id` must be an unsigned integer".to_string())
}

fn static_kind(type_name: &str) -> &'static str {
    match type_name {
        "AUTH" => "AUTH",
        "PING" => "PING",
        "SUB" => "SUB",
        "UNSUB" => "UNSUB",
        "PUB" => "PUB",
        "OP_BATCH" => "OP_BATCH",
        "SYNC" => "SYNC",
        "UNSYNC" => "UNSYNC",
        "PRESENCE" => "PRESENCE",
        _ => "message",
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Field lookup in a decoded map; the first occurrence of a key wins.
struct Fields<'t, 'b>(&'t [(ValueRef<'b>, ValueRef<'b>)]);

impl<'t, 'b> Fields<'t, 'b> {
    fn get(&self, name: &str) -> Option<&'t ValueRef<'b>> {
        self.0.iter().find(|(k, _)| matches!(k, ValueRef::String(s) if s.as_str() == Some(name))).map(|(_, v)| v)
    }

    fn string(&self, name: &str) -> Result<String, String> {
        match self.get(name) {
            Some(ValueRef::String(s)) => {
                s.as_str().map(str::to_string).ok_or_else(|| format!("`{name}` is not valid UTF-8"))
            }
            Some(_) => Err(format!("`{name}` must be a string")),
            None => Err(format!("missing `{name}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::Record;

    fn map(entries: Vec<(&str, Value)>) -> Vec<u8> {
        let v = Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect());
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).unwrap();
        out
    }

    #[test]
    fn client_messages_round_trip_through_the_wire_form() {
        let messages = vec![
            ClientMessage::Auth { token: Some("t".into()) },
            ClientMessage::Ping { id: None },
            ClientMessage::Ping { id: Some(7) },
            ClientMessage::Sub { id: 1, topic: "a/b".into() },
            ClientMessage::Unsub { id: 2, topic: "a/b".into() },
            ClientMessage::Pub { id: 3, topic: "t".into(), data: Value::Binary(vec![0, 1, 2]) },
            ClientMessage::OpBatch {
                id: 4,
                ops: vec![OpInput::Op(RawOp {
                    op_id: Value::from("o1"),
                    collection: "c".into(),
                    key: "k".into(),
                    value: Value::Nil,
                    hlc: "1:0:n".into(),
                })],
            },
            ClientMessage::Sync { id: 5, collection: "c".into(), since: Some("9".into()) },
            ClientMessage::Sync { id: 6, collection: "c".into(), since: None },
            ClientMessage::Unsync { id: 7, collection: "c".into() },
        ];
        for m in messages {
            let bytes = encode_client(&m);
            assert_eq!(decode_client(&bytes, DecodeLimits::default()), Ok(m));
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let messages = vec![
            ServerMessage::AuthRequired { protocol_version: 1 },
            ServerMessage::AuthAck { sub: "a".into(), roles: vec!["r".into()], expires_at: None, limits: None },
            ServerMessage::AuthAck {
                sub: "a".into(),
                roles: vec![],
                expires_at: Some(9),
                limits: Some(crate::protocol::SessionLimits {
                    max_message_bytes: 1,
                    max_value_bytes: 2,
                    max_batch_ops: 3,
                    max_value_depth: 4,
                    messages_per_second: 5,
                    message_burst: 6,
                }),
            },
            ServerMessage::AuthFail { code: "token_invalid".into(), message: "m".into() },
            ServerMessage::Pong { id: Some(3) },
            ServerMessage::Error { id: None, code: "unknown_type".into(), message: "x".into() },
            ServerMessage::SyncData {
                id: 1,
                collection: "c".into(),
                records: vec![Record { key: "k".into(), value: Value::from(1), hlc: "1:0:n".into() }],
                cursor: "3".into(),
                reset: false,
                more: true,
            },
        ];
        for m in messages {
            let bytes = encode_server(&m);
            let back: ServerMessage = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn auth_ack_carries_nil_expiry_and_camel_case_fields() {
        let bytes =
            encode_server(&ServerMessage::AuthAck { sub: "s".into(), roles: vec![], expires_at: None, limits: None });
        let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let keys: Vec<_> = v.as_map().unwrap().iter().map(|(k, _)| k.as_str().unwrap().to_string()).collect();
        assert_eq!(keys, ["type", "sub", "roles", "expiresAt"]);
        assert_eq!(v.as_map().unwrap()[3].1, Value::Nil);
    }

    #[test]
    fn garbage_non_maps_and_trailing_bytes_are_malformed() {
        let limits = DecodeLimits::default();
        assert!(matches!(decode_client(&[0xc1], limits), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_client(&[0x93, 1, 2, 3], limits), Err(DecodeError::Malformed(_))));
        let mut bytes = map(vec![("type", Value::from("PING"))]);
        bytes.push(0);
        assert!(matches!(decode_client(&bytes, limits), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_client(&map(vec![("id", Value::from(1))]), limits), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_client(&map(vec![("type", Value::from(3))]), limits), Err(DecodeError::Malformed(_))));
        // A 4 GiB string length prefix in a tiny message fails without allocating it.
        assert!(matches!(decode_client(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'], limits), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn nesting_is_bounded_exactly() {
        let limits = DecodeLimits { max_depth: 4 };
        let nested = |levels: usize| {
            let mut v = Value::from(1);
            for _ in 0..levels {
                v = Value::Array(vec![v]);
            }
            map(vec![("type", Value::from("PUB")), ("id", Value::from(1)), ("topic", Value::from("t")), ("data", v)])
        };
        // 4 levels for the message, 16 more for a value: 19 arrays under the top-level map.
        assert!(decode_client(&nested(19), limits).is_ok());
        assert_eq!(decode_client(&nested(20), limits), Err(DecodeError::TooDeep(20)));
        let deep = [vec![0x91u8; 50_000], vec![0x01]].concat();
        assert!(matches!(decode_client(&deep, DecodeLimits::default()), Err(DecodeError::TooDeep(_))));
    }

    #[test]
    fn unknown_types_and_bad_fields_are_answerable_errors() {
        let limits = DecodeLimits::default();
        assert_eq!(
            decode_client(&map(vec![("type", Value::from("NOPE")), ("id", Value::from(9))]), limits),
            Err(DecodeError::UnknownType { type_name: "NOPE".into(), id: Some(9) })
        );
        let err = decode_client(&map(vec![("type", Value::from("SUB")), ("id", Value::from(2))]), limits).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { kind: "SUB", id: Some(2), .. }));
        let err =
            decode_client(&map(vec![("type", Value::from("AUTH")), ("token", Value::from(5))]), limits).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { kind: "AUTH", .. }));
        assert_eq!(
            decode_client(&map(vec![("type", Value::from("AUTH")), ("token", Value::from(""))]), limits),
            Ok(ClientMessage::Auth { token: None })
        );
    }

    #[test]
    fn a_bad_op_is_rejected_alone() {
        let good = Value::Map(vec![
            (Value::from("opId"), Value::from("a")),
            (Value::from("collection"), Value::from("c")),
            (Value::from("key"), Value::from("k")),
            (Value::from("hlc"), Value::from("1:0:n")),
        ]);
        let bad = Value::Map(vec![(Value::from("opId"), Value::from(2)), (Value::from("key"), Value::from(1))]);
        let bytes = map(vec![
            ("type", Value::from("OP_BATCH")),
            ("id", Value::from(1)),
            ("ops", Value::Array(vec![good, bad, Value::from(3)])),
        ]);
        let Ok(ClientMessage::OpBatch { ops, .. }) = decode_client(&bytes, DecodeLimits::default()) else {
            panic!("batch must decode");
        };
        assert!(matches!(&ops[0], OpInput::Op(op) if op.value == Value::Nil));
        assert!(matches!(&ops[1], OpInput::Invalid { op_id, .. } if *op_id == Value::from(2)));
        assert!(matches!(&ops[2], OpInput::Invalid { op_id: Value::Nil, .. }));
    }
}
