//! Control messages and node announcements as the bytes inside an envelope
//! (MessagePack maps with named fields, so a newer node can add fields that an
//! older one ignores while nodes are upgraded one at a time).

use serde::{Deserialize, Serialize};

use super::Control;

/// Largest control message or announcement body accepted.
pub(crate) const MAX_BODY: usize = 16 * 1024;

/// What a node says of itself every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The node's id (`--node-id`).
    pub node_id: String,
    /// The syncgate version it runs.
    pub version: String,
    /// SHA-256 of the rules it enforces (hex), so drift between nodes shows.
    pub rules_digest: String,
    /// Its open connections.
    pub connections: u64,
    /// When it started, Unix milliseconds.
    pub started_at: u64,
}

/// `control` as bytes.
pub(crate) fn encode_control(control: &Control) -> Vec<u8> {
    rmp_serde::to_vec_named(control).expect("a control message always encodes")
}

/// A control message from bytes, if they are one.
pub(crate) fn decode_control(bytes: &[u8]) -> Option<Control> {
    if bytes.len() > MAX_BODY {
        return None;
    }
    rmp_serde::from_slice(bytes).ok()
}

/// `announcement` as bytes.
pub(crate) fn encode_announcement(announcement: &Announcement) -> Vec<u8> {
    rmp_serde::to_vec_named(announcement).expect("an announcement always encodes")
}

/// An announcement from bytes, if they are one.
pub(crate) fn decode_announcement(bytes: &[u8]) -> Option<Announcement> {
    if bytes.len() > MAX_BODY {
        return None;
    }
    rmp_serde::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        for control in [
            Control::Disconnect { sub: "alice".into() },
            Control::RevokeJti { jti: "j1".into() },
            Control::RevokeSubject { sub: "bob".into(), issued_before: 1_700_000_000 },
            Control::RulesChanged,
        ] {
            assert_eq!(decode_control(&encode_control(&control)), Some(control));
        }
        assert_eq!(decode_control(b"\x81\xa4kind\xa4nope"), None);
        assert_eq!(decode_control(&[0xc1]), None);
    }

    #[test]
    fn announcements_round_trip_and_ignore_unknown_fields() {
        let a = Announcement {
            node_id: "n1".into(),
            version: "0.1.0".into(),
            rules_digest: "ab".into(),
            connections: 3,
            started_at: 9,
        };
        assert_eq!(decode_announcement(&encode_announcement(&a)), Some(a.clone()));
        let mut map = rmpv::ext::to_value(&a).unwrap();
        if let rmpv::Value::Map(entries) = &mut map {
            entries.push(("future".into(), 1.into()));
        }
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &map).unwrap();
        assert_eq!(decode_announcement(&bytes), Some(a));
    }
}
