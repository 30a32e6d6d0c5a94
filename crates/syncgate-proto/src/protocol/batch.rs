//! `OP_BATCH` read straight off the frame: the hot path of writes.
//!
//! The general decoder ([`super::codec`]) reads the whole message as a tree
//! and then looks its fields up; for a batch that tree (a vector per op, a
//! lookup and a UTF-8 check per field name) cost more than everything else an
//! op in memory does (callgrind, see `BENCHMARKS.md`). This reader walks the
//! bytes once with `rmp` and copies out only what an op keeps.
//!
//! It takes only the plain case — a map holding exactly `type: "OP_BATCH"`,
//! an unsigned `id` and an `ops` array of well-formed ops, within the depth
//! budget, nothing after it — and answers `None` for anything else, which the
//! general decoder then decides. That decoder stays the one definition of
//! every error and edge case: both give the same message for every input
//! this one accepts (checked by the tests below and the `decode_frame` fuzz
//! target).

use rmpv::decode::read_value_ref_with_max_depth;
use rmpv::{Value, ValueRef};

use super::messages::{ClientMessage, OpInput, RawOp};

/// Below this depth budget the general decoder decides: the budget
/// arithmetic here assumes room for the batch's own six levels.
const MIN_BUDGET: usize = 16;

/// The batch in `bytes`, if it is a plain one; `budget` is the general
/// decoder's depth budget (rmpv's units), spent the same way.
pub(super) fn read_batch(bytes: &[u8], budget: usize) -> Option<ClientMessage> {
    if budget < MIN_BUDGET {
        return None;
    }
    // rmpv spends one unit entering a value and one entering a container's
    // body: the message's fields are read with budget − 2, an op's with − 6.
    let (field_budget, op_field_budget) = (budget - 2, budget - 6);
    let mut rd = bytes;
    let fields = rmp::decode::read_map_len(&mut rd).ok()?;
    let (mut is_batch, mut id, mut ops) = (None, None, None);
    for _ in 0..fields {
        match read_name(&mut rd)? {
            b"type" if is_batch.is_none() => {
                let kind = read_value_ref_with_max_depth(&mut rd, field_budget).ok()?;
                // Every other type is the general decoder's, decided at once:
                // clients send `type` first, so they pay one string for this.
                if !matches!(kind, ValueRef::String(s) if s.as_str() == Some("OP_BATCH")) {
                    return None;
                }
                is_batch = Some(());
            }
            b"id" if id.is_none() => id = Some(read_value_ref_with_max_depth(&mut rd, field_budget).ok()?.as_u64()?),
            b"ops" if ops.is_none() => ops = Some(read_ops(&mut rd, op_field_budget)?),
            _ => return None,
        }
    }
    is_batch?;
    if !rd.is_empty() {
        return None;
    }
    Some(ClientMessage::OpBatch { id: id?, ops: ops? })
}

/// The ops of an `ops` array, each a plain op.
fn read_ops(rd: &mut &[u8], field_budget: usize) -> Option<Vec<OpInput>> {
    let count = rmp::decode::read_array_len(rd).ok()? as usize;
    // Each op takes at least one byte: a length prefix cannot reserve more than the frame holds.
    let mut ops = Vec::with_capacity(count.min(rd.len()));
    for _ in 0..count {
        ops.push(OpInput::Op(read_op(rd, field_budget)?));
    }
    Some(ops)
}

/// One op: a map of `opId` (string or integer), `collection`, `key`, `hlc`
/// (strings) and an optional `value`; other names are allowed and skipped,
/// and the first occurrence of a name wins, as in the general decoder.
fn read_op(rd: &mut &[u8], field_budget: usize) -> Option<RawOp> {
    let fields = rmp::decode::read_map_len(rd).ok()?;
    let (mut op_id, mut collection, mut key, mut value, mut hlc) = (None, None, None, None, None);
    for _ in 0..fields {
        let name = read_name(rd)?;
        let field = read_value_ref_with_max_depth(rd, field_budget).ok()?;
        let slot = match name {
            b"opId" => &mut op_id,
            b"collection" => &mut collection,
            b"key" => &mut key,
            b"value" => &mut value,
            b"hlc" => &mut hlc,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(field);
        }
    }
    let op_id = match op_id? {
        integer @ ValueRef::Integer(_) => integer.to_owned(),
        ValueRef::String(s) => Value::from(s.as_str()?),
        _ => return None,
    };
    Some(RawOp {
        op_id,
        collection: text(collection?)?,
        key: text(key?)?,
        value: value.as_ref().map_or(Value::Nil, ValueRef::to_owned),
        hlc: text(hlc?)?,
    })
}

/// A field name as raw bytes: compared with ASCII names, it needs no UTF-8
/// check (a name that is not UTF-8 matches none of them, as in the general
/// decoder). A name that is not a string is left to the general decoder.
fn read_name<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = rmp::decode::read_str_len(rd).ok()? as usize;
    let name = rd.get(..len)?;
    *rd = &rd[len..];
    Some(name)
}

/// A string field's text.
fn text(field: ValueRef<'_>) -> Option<String> {
    match field {
        ValueRef::String(s) => s.as_str().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::{DecodeLimits, decode_client_tree, encode_client, tree_budget};

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
    }

    fn op(op_id: Value, value: Value) -> Value {
        map(vec![
            ("opId", op_id),
            ("collection", Value::from("todos/a")),
            ("key", Value::from("k1")),
            ("value", value),
            ("hlc", Value::from("1733400000000:0:n")),
        ])
    }

    /// Batches of many shapes: plain ones, and ones only the general decoder takes.
    fn corpus() -> Vec<Vec<u8>> {
        let nested = Value::Array(vec![Value::Map(vec![(Value::from("a"), Value::Array(vec![Value::from(1.5)]))])]);
        let plain = |ops: Vec<Value>| {
            encode(&map(vec![("type", Value::from("OP_BATCH")), ("id", Value::from(7)), ("ops", Value::Array(ops))]))
        };
        vec![
            plain(vec![op(Value::from("a"), Value::Binary(vec![b'x'; 40])), op(Value::from(3), Value::Nil)]),
            plain(vec![op(Value::from(-3), nested.clone()), op(Value::from("é"), Value::from("text"))]),
            plain(vec![]),
            plain(vec![map(vec![
                ("opId", Value::from("d")),
                ("opId", Value::from(9)),
                ("extra", Value::from(true)),
                ("collection", Value::from("c")),
                ("key", Value::from("k")),
                ("hlc", Value::from("1:0:n")),
                ("key", Value::from(4)),
            ])]),
            plain(vec![op(Value::Nil, Value::Nil)]),
            plain(vec![Value::from(3)]),
            plain(vec![map(vec![("opId", Value::from("x")), ("key", Value::from(1))])]),
            encode(&map(vec![
                ("ops", Value::Array(vec![op(Value::from(1), Value::Nil)])),
                ("id", Value::from(2)),
                ("type", Value::from("OP_BATCH")),
            ])),
            encode(&map(vec![
                ("type", Value::from("OP_BATCH")),
                ("id", Value::from(-1)),
                ("ops", Value::Array(vec![])),
            ])),
            encode(&map(vec![
                ("type", Value::from("PUB")),
                ("id", Value::from(1)),
                ("topic", Value::from("t")),
                ("data", nested),
            ])),
            encode(&map(vec![("type", Value::from("OP_BATCH")), ("id", Value::from(1))])),
        ]
    }

    #[test]
    fn the_plain_case_gives_what_the_general_decoder_gives_and_nothing_else_is_taken() {
        let limits = DecodeLimits::default();
        let budget = tree_budget(limits);
        let mut taken = 0;
        for bytes in corpus() {
            // Every prefix and every single-byte change of every batch.
            let mut inputs: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
            for i in 0..bytes.len() {
                for delta in [1u8, 0x10, 0x80, 0xff] {
                    let mut changed = bytes.clone();
                    changed[i] = changed[i].wrapping_add(delta);
                    inputs.push(changed);
                }
            }
            inputs.push(bytes);
            for input in inputs {
                if let Some(message) = read_batch(&input, budget) {
                    taken += 1;
                    // Compared as encodings: a NaN in a value is not equal to itself.
                    let general = decode_client_tree(&input, limits).map(|m| encode_client(&m));
                    assert_eq!(general, Ok(encode_client(&message)), "{input:02x?}");
                }
            }
        }
        assert!(taken > 100, "the plain case is taken ({taken} inputs)");
    }

    #[test]
    fn depth_is_spent_as_the_general_decoder_spends_it() {
        for max_depth in [4, 8, 32] {
            let limits = DecodeLimits { max_depth };
            for levels in 10..40 {
                let mut v = Value::from(1);
                for _ in 0..levels {
                    v = Value::Array(vec![v]);
                }
                let bytes = encode(&map(vec![
                    ("type", Value::from("OP_BATCH")),
                    ("id", Value::from(1)),
                    ("ops", Value::Array(vec![op(Value::from(1), v)])),
                ]));
                match read_batch(&bytes, tree_budget(limits)) {
                    Some(message) => assert_eq!(decode_client_tree(&bytes, limits), Ok(message)),
                    None => assert!(decode_client_tree(&bytes, limits).is_err(), "{max_depth} {levels}"),
                }
            }
        }
    }

    #[test]
    fn a_length_prefix_reserves_nothing_the_frame_does_not_hold() {
        // `ops` claims 2^32 − 1 ops in a frame of a few bytes.
        let mut bytes = vec![0x83, 0xa4];
        bytes.extend(b"type");
        bytes.push(0xa8);
        bytes.extend(b"OP_BATCH");
        bytes.extend([0xa2, b'i', b'd', 0x01, 0xa3, b'o', b'p', b's', 0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(read_batch(&bytes, tree_budget(DecodeLimits::default())), None);
    }
}
