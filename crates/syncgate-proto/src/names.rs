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
    if name.split('/').any(str::is_empty) {
        return Err("must not have empty segments");
    }
    if name.split('/').any(|segment| segment == "." || segment == "..") {
        return Err("must not have '.' or '..' segments");
    }
    if name.contains(['*', '{', '}']) || name.chars().any(char::is_control) {
        return Err("must not contain '*', '{', '}' or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn the_naming_rule() {
        for good in ["a", "todos/alice", "a.b", "a b", "a.>", "x/y/z"] {
            assert_eq!(valid_name(good), Ok(()), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/./b", "..", "a*", "{sub}", "a\nb", &"x".repeat(257)] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }
}
