//! The envelope around every message one node sends another over a shared
//! medium (NATS): who sent it, what kind it is, when, and, with a cluster
//! secret, an HMAC that makes it impossible to forge for anyone who can only
//! publish on the cluster's subjects.
//!
//! Layout (version 1), big-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | version (`1`) |
//! | 1 | kind ([`Kind`]) |
//! | 1 | flags (bit 0: an HMAC follows the body) |
//! | 8 | sent at, Unix milliseconds |
//! | 8 | sequence number of the origin's process (control messages are deduplicated by it) |
//! | 1 + n | origin node id (length, then UTF-8, at most [`MAX_ORIGIN`] bytes) |
//! | … | body (the kind's payload) |
//! | 32 | HMAC-SHA256 over the subject, a zero byte and every byte above (when flagged) |
//!
//! The subject is inside the MAC, so a signed message cannot be replayed on
//! another subject (another topic, another collection, the control subject).
//! A node that upgrades to a new envelope version keeps reading version 1
//! until every node has moved: the version byte is what lets nodes upgrade
//! one at a time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The envelope version this build writes and reads.
pub const VERSION: u8 = 1;
/// Longest origin node id an envelope carries.
pub const MAX_ORIGIN: usize = 64;
/// Bytes of the fixed header before the origin id.
const HEADER: usize = 1 + 1 + 1 + 8 + 8;
const MAC_LEN: usize = 32;
const FLAG_MAC: u8 = 1;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A topic publication (an encoded `MESSAGE`).
    Topic = 1,
    /// A collection's change notice.
    Changes = 2,
    /// A control message ([`super::Control`] as MessagePack).
    Control = 3,
    /// A node's acknowledgement of a control message.
    ControlAck = 4,
    /// A node's periodic announcement of itself.
    Announcement = 5,
    /// Presence on a topic: a member joined or left, or a node's members.
    Presence = 6,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Topic,
            2 => Self::Changes,
            3 => Self::Control,
            4 => Self::ControlAck,
            5 => Self::Announcement,
            6 => Self::Presence,
            _ => return None,
        })
    }
}

/// An opened envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<'a> {
    /// What it carries.
    pub kind: Kind,
    /// When its origin sent it (Unix milliseconds, the origin's clock).
    pub sent_at: u64,
    /// The origin process's sequence number.
    pub seq: u64,
    /// The origin node's id.
    pub origin: &'a str,
    /// The payload.
    pub body: &'a [u8],
    /// Where `body` starts in the envelope's bytes (to share them, not copy).
    pub body_at: usize,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Too short, an unknown version or kind, a malformed origin.
    #[error("malformed envelope")]
    Malformed,
    /// A secret is configured and the envelope carries no HMAC.
    #[error("unsigned envelope")]
    Unsigned,
    /// The HMAC does not match.
    #[error("envelope HMAC mismatch")]
    BadMac,
}

/// Seals and opens envelopes with the cluster's secret (or none).
#[derive(Clone)]
pub struct Sealer {
    key: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("signed", &self.key.is_some()).finish()
    }
}

impl Sealer {
    /// Envelopes signed with `secret` (and only signed ones accepted), or
    /// unsigned ones when there is no secret.
    pub fn new(secret: Option<&[u8]>) -> Self {
        // HMAC takes keys of any length: this cannot fail.
        let key = secret.map(|s| Hmac::<Sha256>::new_from_slice(s).expect("HMAC accepts any key length"));
        Self { key }
    }

    /// Whether envelopes are signed.
    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    /// The envelope of `body`, bound to `subject`.
    pub fn seal(&self, subject: &str, kind: Kind, sent_at: u64, seq: u64, origin: &str, body: &[u8]) -> Vec<u8> {
        let origin = truncate(origin);
        let mut out = Vec::with_capacity(HEADER + 1 + origin.len() + body.len() + MAC_LEN);
        out.push(VERSION);
        out.push(kind as u8);
        out.push(if self.key.is_some() { FLAG_MAC } else { 0 });
        out.extend_from_slice(&sent_at.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.push(origin.len() as u8);
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(body);
        if let Some(key) = &self.key {
            let tag = mac(key, subject, &out);
            out.extend_from_slice(&tag);
        }
        out
    }

    /// Opens an envelope received on `subject`. With a secret, only a
    /// correctly signed envelope opens (compared in constant time).
    pub fn open<'a>(&self, subject: &str, bytes: &'a [u8]) -> Result<Opened<'a>, Refused> {
        if bytes.len() < HEADER + 1 || bytes[0] != VERSION {
            return Err(Refused::Malformed);
        }
        let kind = Kind::from_byte(bytes[1]).ok_or(Refused::Malformed)?;
        let signed = bytes[2] & FLAG_MAC != 0;
        let signed_part = match (&self.key, signed) {
            (Some(_), false) => return Err(Refused::Unsigned),
            (Some(key), true) => {
                let split = bytes.len().checked_sub(MAC_LEN).filter(|&s| s > HEADER).ok_or(Refused::Malformed)?;
                let (content, tag) = bytes.split_at(split);
                let mut check = key.clone();
                check.update(subject.as_bytes());
                check.update(&[0]);
                check.update(content);
                check.verify_slice(tag).map_err(|_| Refused::BadMac)?;
                content
            }
            // Without a secret, a signature cannot be checked: the tag is ignored.
            (None, true) => &bytes[..bytes.len().checked_sub(MAC_LEN).ok_or(Refused::Malformed)?],
            (None, false) => bytes,
        };
        let sent_at = u64::from_be_bytes(signed_part[3..11].try_into().map_err(|_| Refused::Malformed)?);
        let seq = u64::from_be_bytes(signed_part[11..19].try_into().map_err(|_| Refused::Malformed)?);
        let origin_len = usize::from(signed_part[HEADER]);
        let body_at = HEADER + 1 + origin_len;
        if origin_len > MAX_ORIGIN || signed_part.len() < body_at {
            return Err(Refused::Malformed);
        }
        let origin = std::str::from_utf8(&signed_part[HEADER + 1..body_at]).map_err(|_| Refused::Malformed)?;
        Ok(Opened { kind, sent_at, seq, origin, body: &signed_part[body_at..], body_at })
    }
}

fn mac(key: &Hmac<Sha256>, subject: &str, content: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = key.clone();
    mac.update(subject.as_bytes());
    mac.update(&[0]);
    mac.update(content);
    mac.finalize().into_bytes().into()
}

/// `origin` cut to [`MAX_ORIGIN`] bytes on a character boundary.
fn truncate(origin: &str) -> &str {
    if origin.len() <= MAX_ORIGIN {
        return origin;
    }
    let mut end = MAX_ORIGIN;
    while !origin.is_char_boundary(end) {
        end -= 1;
    }
    &origin[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_envelope_opens_on_its_subject_only() {
        let sealer = Sealer::new(Some(b"cluster secret"));
        let sealed = sealer.seal("sg.t.abc", Kind::Topic, 42, 7, "node-a", b"payload");
        let opened = sealer.open("sg.t.abc", &sealed).unwrap();
        let body_at = sealed.len() - 32 - b"payload".len();
        assert_eq!(
            opened,
            Opened { kind: Kind::Topic, sent_at: 42, seq: 7, origin: "node-a", body: b"payload", body_at }
        );
        assert_eq!(sealer.open("sg.t.abd", &sealed), Err(Refused::BadMac), "replayed on another subject");
    }

    #[test]
    fn an_empty_body_opens() {
        for secret in [None, Some(&b"k"[..])] {
            let sealer = Sealer::new(secret);
            let sealed = sealer.seal("s.ack.x", Kind::ControlAck, 5, 6, "b", &[]);
            assert_eq!(sealer.open("s.ack.x", &sealed).map(|o| (o.kind, o.body.len())), Ok((Kind::ControlAck, 0)));
        }
    }

    #[test]
    fn forged_and_tampered_envelopes_are_refused() {
        let sealer = Sealer::new(Some(b"cluster secret"));
        let unsigned = Sealer::new(None).seal("s", Kind::Control, 1, 1, "x", b"{}");
        assert_eq!(sealer.open("s", &unsigned), Err(Refused::Unsigned));
        let other = Sealer::new(Some(b"another secret")).seal("s", Kind::Control, 1, 1, "x", b"{}");
        assert_eq!(sealer.open("s", &other), Err(Refused::BadMac));
        let mut flipped = sealer.seal("s", Kind::Control, 1, 1, "x", b"{}");
        let last_body_byte = flipped.len() - MAC_LEN - 1;
        flipped[last_body_byte] ^= 1;
        assert_eq!(sealer.open("s", &flipped), Err(Refused::BadMac));
        for cut in 0..flipped.len() {
            assert!(sealer.open("s", &flipped[..cut]).is_err(), "a truncated envelope ({cut} bytes)");
        }
    }

    #[test]
    fn unsigned_envelopes_open_without_a_secret_and_bad_ones_do_not_panic() {
        let sealer = Sealer::new(None);
        let sealed = sealer.seal("s", Kind::Changes, 1, 2, &"é".repeat(40), b"x");
        let opened = sealer.open("s", &sealed).unwrap();
        assert!(opened.origin.len() <= MAX_ORIGIN && opened.origin.chars().all(|c| c == 'é'));
        for bytes in [&[][..], &[1], &[2, 1, 0], &[1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]] {
            assert!(sealer.open("s", bytes).is_err());
        }
    }
}
