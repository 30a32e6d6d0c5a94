//! The protocol's naming rule for topics and collections, shared by the
//! server (which refuses a bad name with `invalid`) and the clients (which
//! can refuse it before sending).

/// Longest topic or collection name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Whether a client-supplied topic or collection name is acceptable:
/// 1 to 256 bytes of non-empty `/`-separated segments without `*`, `{` or
/// `}` (the rules' pattern syntax) or control characters, none of them `.`
/// or `..` (which a backend mapping names to paths or URLs could resolve to
/// another tenant's resource). The error says which part of the rule failed.
pub fn valid_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err("must be 1 to 256 bytes");
    }
    // One pass over the bytes: every op and publication names something, and
    // splitting the name twice and walking its chars cost about 670
    // instructions per op (callgrind), more than deciding the op's rules.
    let bytes = name.as_bytes();
    let (mut empty_segment, mut dot_segment, mut forbidden) = (false, false, false);
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'/' {
            let segment = &bytes[start..i];
            empty_segment |= segment.is_empty();
            dot_segment |= segment == b"." || segment == b"..";
            start = i + 1;
        } else if matches!(b, b'*' | b'{' | b'}') || is_control_at(bytes, i) {
            forbidden = true;
        }
    }
    let last = &bytes[start..];
    empty_segment |= last.is_empty();
    dot_segment |= last == b"." || last == b"..";
    if empty_segment {
        return Err("must not have empty segments");
    }
    if dot_segment {
        return Err("must not have '.' or '..' segments");
    }
    if forbidden {
        return Err("must not contain '*', '{', '}' or control characters");
    }
    Ok(())
}

/// Whether `text` holds a control character ([`char::is_control`]: U+0000 to
/// U+001F and U+007F to U+009F), looked for in its UTF-8 bytes.
pub fn has_control(text: &str) -> bool {
    let bytes = text.as_bytes();
    // Most text has none of the three lead bytes: one quick pass says so.
    bytes.iter().any(|&b| b < 0x20 || b == 0x7f || b == 0xc2) && (0..bytes.len()).any(|i| is_control_at(bytes, i))
}

/// Whether a control character starts at byte `i` of valid UTF-8: one byte
/// below 0x20 or 0x7F, or U+0080 to U+009F (0xC2 0x80 to 0xC2 0x9F).
fn is_control_at(bytes: &[u8], i: usize) -> bool {
    match bytes[i] {
        0x00..=0x1f | 0x7f => true,
        0xc2 => matches!(bytes.get(i + 1), Some(0x80..=0x9f)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{has_control, valid_name};

    #[test]
    fn the_naming_rule() {
        for good in ["a", "todos/alice", "a.b", "a b", "a.>", "x/y/z"] {
            assert_eq!(valid_name(good), Ok(()), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/./b", "..", "a*", "{sub}", "a\nb", &"x".repeat(257), "a\u{85}b"] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn control_characters_are_found_in_the_bytes_as_char_is_control_finds_them() {
        let mut text = String::new();
        for c in (0u32..0x800).filter_map(char::from_u32) {
            text.clear();
            text.push('a');
            text.push(c);
            text.push('b');
            assert_eq!(has_control(&text), c.is_control(), "U+{:04X}", c as u32);
            let valid = valid_name(&text).is_ok();
            assert_eq!(valid, !(c.is_control() || matches!(c, '*' | '{' | '}')), "U+{:04X}", c as u32);
        }
    }
}
