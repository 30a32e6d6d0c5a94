//! What a value may be: the one rule for every value a client or a backend
//! hands the server (op values, `PUB` data, presence info), checked the same
//! way on the WebSocket and the HTTP API, and by the clients before they
//! queue a write.
//!
//! A value is a MessagePack value whose maps have string keys, whose strings
//! are UTF-8, that holds no extension types, is nested at most
//! [`MAX_VALUE_DEPTH`] containers deep, and encodes in at most the server's
//! `maxValueBytes`. Every reader can then show it: as JSON on the HTTP API, as
//! a plain JavaScript value in the browser.

use rmpv::Value;

use crate::protocol::encoded_len;

/// Deepest nesting of arrays and maps in a value (a scalar is 0, `[1]` is 1).
pub const MAX_VALUE_DEPTH: usize = 16;

/// The bounds a value is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueLimits {
    /// Largest encoding, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and maps.
    pub max_depth: usize,
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Its encoding is larger than the limit.
    #[error("is larger than {0} bytes")]
    TooLarge(usize),
    /// It nests arrays and maps deeper than the limit.
    #[error("nests arrays and maps deeper than {0}")]
    TooDeep(usize),
    /// A map has a key that is not a string.
    #[error("has a map key that is not a string")]
    NonStringKey,
    /// A string is not UTF-8.
    #[error("has a string that is not UTF-8")]
    NotUtf8,
    /// It holds a MessagePack extension type.
    #[error("holds a MessagePack extension type")]
    Extension,
}

/// Checks `value` against the rule and `limits`.
pub fn check_value(value: &Value, limits: ValueLimits) -> Result<(), ValueError> {
    check_shape(value, limits.max_depth, 0)?;
    if encoded_len(value) > limits.max_bytes {
        return Err(ValueError::TooLarge(limits.max_bytes));
    }
    Ok(())
}

fn check_shape(value: &Value, max_depth: usize, depth: usize) -> Result<(), ValueError> {
    match value {
        Value::Array(items) => {
            if depth + 1 > max_depth {
                return Err(ValueError::TooDeep(max_depth));
            }
            items.iter().try_for_each(|item| check_shape(item, max_depth, depth + 1))
        }
        Value::Map(entries) => {
            if depth + 1 > max_depth {
                return Err(ValueError::TooDeep(max_depth));
            }
            entries.iter().try_for_each(|(key, item)| {
                match key {
                    Value::String(s) if s.is_str() => {}
                    Value::String(_) => return Err(ValueError::NotUtf8),
                    _ => return Err(ValueError::NonStringKey),
                }
                check_shape(item, max_depth, depth + 1)
            })
        }
        Value::String(s) if !s.is_str() => Err(ValueError::NotUtf8),
        Value::Ext(..) => Err(ValueError::Extension),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ValueLimits = ValueLimits { max_bytes: 64, max_depth: 3 };

    fn nested(depth: usize) -> Value {
        (0..depth).fold(Value::from(1), |inner, _| Value::Array(vec![inner]))
    }

    #[test]
    fn the_value_rule() {
        assert_eq!(check_value(&Value::from("x"), LIMITS), Ok(()));
        assert_eq!(check_value(&nested(3), LIMITS), Ok(()));
        assert_eq!(check_value(&nested(4), LIMITS), Err(ValueError::TooDeep(3)));
        let map = |key: Value| Value::Map(vec![(key, Value::from(1))]);
        assert_eq!(check_value(&map(Value::from("k")), LIMITS), Ok(()));
        assert_eq!(check_value(&map(Value::Array(vec![Value::from(1)])), LIMITS), Err(ValueError::NonStringKey));
        assert_eq!(check_value(&map(Value::from(1)), LIMITS), Err(ValueError::NonStringKey));
        assert_eq!(check_value(&Value::Ext(5, vec![1]), LIMITS), Err(ValueError::Extension));
        let bad_utf8 = rmpv::decode::read_value(&mut &[0xa2, 0xff, 0xfe][..]).unwrap();
        assert_eq!(check_value(&bad_utf8, LIMITS), Err(ValueError::NotUtf8));
        assert_eq!(check_value(&Value::Binary(vec![0; 100]), LIMITS), Err(ValueError::TooLarge(64)));
        let deep_inside = Value::Map(vec![(Value::from("a"), Value::Ext(1, vec![]))]);
        assert_eq!(check_value(&deep_inside, LIMITS), Err(ValueError::Extension), "checked all the way down");
    }
}
