//! NATS subjects of one cluster, and why a name can never steer them.
//!
//! Topic and collection names may contain `.`, `>` and spaces, which NATS
//! reads as token separators, a wildcard and an illegal character. A name is
//! therefore never put into a subject as it is: it becomes **one token**, the
//! RFC 4648 base32 encoding of its UTF-8 bytes without padding (alphabet
//! `A–Z2–7`, nothing NATS gives a meaning). `a.b`, `a.>`, `a b` and `a` are
//! four different tokens, and no name can reach another's subject or a
//! wildcard.
//!
//! | subject | carries |
//! | --- | --- |
//! | `<cluster>.t.<name>` | publications on topic `name` |
//! | `<cluster>.c.<name>` | change notices of collection `name` |
//! | `<cluster>.p.<name>` | presence on topic `name` |
//! | `<cluster>.ctl` | control messages (their own subject and queue: never behind data) |
//! | `<cluster>.ack.<node>` | acknowledgements of one node's control messages |
//! | `<cluster>.nodes` | every node's announcement of itself |
//! | `<cluster>.inbox.…` | replies to this node's own requests (round-trip probes) |
//!
//! The cluster name (`--cluster-name`) is itself one token of letters,
//! digits, `-` and `_`, so deployments sharing one NATS never hear each other.

use data_encoding::BASE32_NOPAD;

use super::Subject;

/// Longest cluster name.
pub const MAX_CLUSTER_NAME: usize = 64;

/// The subjects of one cluster.
#[derive(Debug, Clone)]
pub struct Subjects {
    cluster: String,
}

impl Subjects {
    /// The subjects of cluster `name`, or why the name cannot be one.
    pub fn new(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= MAX_CLUSTER_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!(
                "cluster name {name:?} must be 1 to {MAX_CLUSTER_NAME} letters, digits, '-' or '_' (one NATS subject token)"
            ));
        }
        Ok(Self { cluster: name.to_string() })
    }

    /// The subject of a topic or collection.
    pub fn of(&self, subject: &Subject) -> String {
        let (kind, name) = match subject {
            Subject::Topic(name) => ("t", name),
            Subject::Changes(name) => ("c", name),
            Subject::Presence(name) => ("p", name),
        };
        format!("{}.{kind}.{}", self.cluster, token(name))
    }

    /// The [`Subject`] a NATS subject of this cluster stands for, if any.
    pub fn parse(&self, subject: &str) -> Option<Subject> {
        let rest = subject.strip_prefix(&self.cluster)?.strip_prefix('.')?;
        let (kind, encoded) = rest.split_once('.')?;
        let name = if encoded == "_" { String::new() } else { decode(encoded)? };
        match kind {
            "t" => Some(Subject::Topic(name)),
            "c" => Some(Subject::Changes(name)),
            "p" => Some(Subject::Presence(name)),
            _ => None,
        }
    }

    /// The control subject.
    pub fn control(&self) -> String {
        format!("{}.ctl", self.cluster)
    }

    /// Where acknowledgements of `node`'s control messages go.
    pub fn acks(&self, node: &str) -> String {
        format!("{}.ack.{}", self.cluster, token(node))
    }

    /// The announcements subject.
    pub fn nodes(&self) -> String {
        format!("{}.nodes", self.cluster)
    }

    /// The prefix of this cluster's reply inboxes.
    pub fn inbox(&self) -> String {
        format!("{}.inbox", self.cluster)
    }

    /// Everything of this cluster (for the README's account permissions).
    pub fn all(&self) -> String {
        format!("{}.>", self.cluster)
    }
}

/// `name` as one subject token.
pub fn token(name: &str) -> String {
    if name.is_empty() { "_".into() } else { BASE32_NOPAD.encode(name.as_bytes()) }
}

fn decode(token: &str) -> Option<String> {
    String::from_utf8(BASE32_NOPAD.decode(token.as_bytes()).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_mean_something_to_nats_are_four_different_single_tokens() {
        let subjects = Subjects::new("prod").unwrap();
        let names = ["a.b", "a.>", "a b", "a", "*", "a\u{e9}"];
        let mapped: Vec<String> = names.iter().map(|n| subjects.of(&Subject::Topic((*n).into()))).collect();
        for (name, subject) in names.iter().zip(&mapped) {
            let tokens: Vec<&str> = subject.split('.').collect();
            assert_eq!(tokens.len(), 3, "{name:?} is one token: {subject}");
            assert!(
                tokens[2].bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
                "{subject} has nothing NATS reads"
            );
            assert_eq!(subjects.parse(subject), Some(Subject::Topic((*name).into())));
        }
        let unique: std::collections::HashSet<_> = mapped.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn kinds_and_clusters_are_separate() {
        let (a, b) = (Subjects::new("a").unwrap(), Subjects::new("b").unwrap());
        let name = "x".to_string();
        assert_ne!(a.of(&Subject::Topic(name.clone())), a.of(&Subject::Changes(name.clone())));
        assert_ne!(a.of(&Subject::Topic(name.clone())), a.of(&Subject::Presence(name.clone())));
        assert_ne!(a.of(&Subject::Topic(name.clone())), b.of(&Subject::Topic(name)));
        assert_eq!(b.parse(&a.control()), None);
    }

    #[test]
    fn cluster_names_are_one_plain_token() {
        for bad in ["", "a.b", "a b", ">", "*", &"x".repeat(65)] {
            assert!(Subjects::new(bad).is_err(), "{bad:?}");
        }
        assert!(Subjects::new("syncgate_eu-1").is_ok());
    }
}
