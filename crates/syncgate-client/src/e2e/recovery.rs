//! Human-typable secrets: the recovery secret that exports one space key
//! (modes 1 and 2), the recovery code of a vault (mode 3), and the QR
//! payload that carries a recovery secret to another device.
//!
//! Both strings are Crockford base32 (no `I`, `L`, `O`, `U`; lower case,
//! `o`, `i` and `l` are read as what they look like), in groups of four
//! joined by `-`, and end in a 4-byte checksum: the first bytes of
//! SHA-256 over a label, the space and the payload, so a typo (or a secret
//! of another space) is caught before any key is used.
//!
//! [`export_space`] carries every version of a space under a passphrase instead.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use data_encoding::{Encoding, Specification};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::E2eError;
use super::envelope::push_str16;
use super::keys::{DataKey, Keyring, check_space};
use super::wrap::{self, KdfParams, PassphraseWrap, purpose};

/// Bytes of checksum at the end of a secret.
const CHECKSUM_LEN: usize = 4;
/// Random bytes in a vault recovery code (168 bits; 25 bytes with the checksum, 40 characters).
pub const RECOVERY_CODE_BYTES: usize = 21;
/// What a QR payload starts with (and its format version).
pub const QR_PREFIX: &str = "syncgate-key:1:";

fn crockford() -> Encoding {
    let mut spec = Specification::new();
    spec.symbols.push_str("0123456789ABCDEFGHJKMNPQRSTVWXYZ");
    spec.translate.from.push_str("abcdefghjkmnpqrstvwxyzOoIiLl");
    spec.translate.to.push_str("ABCDEFGHJKMNPQRSTVWXYZ001111");
    spec.encoding().expect("a valid base32 specification")
}

fn checksum(label: &str, space: &str, payload: &[u8]) -> Result<[u8; CHECKSUM_LEN], E2eError> {
    let mut framed = Vec::new();
    push_str16(&mut framed, label)?;
    push_str16(&mut framed, space)?;
    let digest = Sha256::new().chain_update(&framed).chain_update(payload).finalize();
    Ok([digest[0], digest[1], digest[2], digest[3]])
}

/// `payload || checksum`, base32 in dash-joined groups of four.
fn render(label: &str, space: &str, payload: &[u8]) -> Result<String, E2eError> {
    let mut bytes = Zeroizing::new(payload.to_vec());
    bytes.extend_from_slice(&checksum(label, space, payload)?);
    let text = Zeroizing::new(crockford().encode(&bytes));
    let groups: Vec<&str> =
        text.as_bytes().chunks(4).map(|chunk| std::str::from_utf8(chunk).expect("base32 is ASCII")).collect();
    Ok(groups.join("-"))
}

/// The payload of a typed secret, after checking its checksum.
fn parse(label: &str, space: &str, typed: &str, payload_len: usize) -> Result<Zeroizing<Vec<u8>>, E2eError> {
    let compact: Zeroizing<String> =
        Zeroizing::new(typed.chars().filter(|c| !c.is_whitespace() && *c != '-').collect());
    let bytes = Zeroizing::new(
        crockford()
            .decode(compact.as_bytes())
            .map_err(|e| E2eError::BadSecret(format!("not a recovery string: {e}")))?,
    );
    if bytes.len() != payload_len + CHECKSUM_LEN {
        let expected = (payload_len + CHECKSUM_LEN).div_ceil(5) * 8;
        return Err(E2eError::BadSecret(format!("expected {expected} characters, got {}", compact.len())));
    }
    let (payload, sum) = bytes.split_at(payload_len);
    if sum != checksum(label, space, payload)? {
        return Err(E2eError::BadSecret("the checksum does not match: a typo, or a secret of another space".into()));
    }
    Ok(Zeroizing::new(payload.to_vec()))
}

/// The recovery secret of one space key: its version and its 32 bytes, typable.
pub fn export_secret(space: &str, key: &DataKey) -> Result<String, E2eError> {
    check_space(space)?;
    let mut payload = Zeroizing::new(key.version.to_be_bytes().to_vec());
    payload.extend_from_slice(key.secret());
    render("syncgate-recovery-secret/1", space, &payload)
}

/// The key a recovery secret of `space` holds.
pub fn import_secret(space: &str, typed: &str) -> Result<DataKey, E2eError> {
    check_space(space)?;
    let payload = parse("syncgate-recovery-secret/1", space, typed, 4 + 32)?;
    let version = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&payload[4..]);
    let key = DataKey::from_bytes(version, secret);
    secret.fill(0);
    if version == 0 {
        return Err(E2eError::BadSecret("key versions start at 1".into()));
    }
    Ok(key)
}

/// The payload to render as a QR code: the space and its recovery secret.
/// (The TypeScript client renders it; here it is the string.)
pub fn qr_payload(space: &str, key: &DataKey) -> Result<String, E2eError> {
    Ok(format!("{QR_PREFIX}{}:{}", URL_SAFE_NO_PAD.encode(space), export_secret(space, key)?))
}

/// The space and key a scanned QR payload carries.
pub fn from_qr_payload(scanned: &str) -> Result<(String, DataKey), E2eError> {
    let rest = scanned
        .strip_prefix(QR_PREFIX)
        .ok_or_else(|| E2eError::BadSecret(format!("a key QR code starts with {QR_PREFIX:?}")))?;
    let (space, secret) = rest.split_once(':').ok_or_else(|| E2eError::BadSecret("no secret in the QR code".into()))?;
    let space = URL_SAFE_NO_PAD
        .decode(space)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| E2eError::BadSecret("the QR code's space does not decode".into()))?;
    let key = import_secret(&space, secret)?;
    Ok((space, key))
}

/// A fresh vault recovery code (shown once) and the secret it stands for.
pub fn new_recovery_code(sub: &str) -> Result<String, E2eError> {
    render("syncgate-recovery-code/1", sub, &super::random_bytes::<RECOVERY_CODE_BYTES>())
}

/// The secret bytes of a typed recovery code of `sub` (checksum checked).
pub fn parse_recovery_code(sub: &str, typed: &str) -> Result<Zeroizing<Vec<u8>>, E2eError> {
    parse("syncgate-recovery-code/1", sub, typed, RECOVERY_CODE_BYTES)
}

/// Every key of `space` wrapped under `passphrase` (Argon2id with `params`):
/// a mode-2 transfer that carries the old versions too, as MessagePack bytes.
pub fn export_space(keyring: &Keyring, space: &str, passphrase: &str, params: KdfParams) -> Result<Vec<u8>, E2eError> {
    let keys = keyring.space(space).ok_or_else(|| E2eError::NoKey { name: space.to_string() })?;
    let listed: Vec<(u32, serde_bytes::ByteBuf)> =
        keys.all().map(|key| (key.version, serde_bytes::ByteBuf::from(key.secret().to_vec()))).collect();
    let material = Zeroizing::new(rmp_serde::to_vec(&listed).map_err(|e| E2eError::Invalid(e.to_string()))?);
    let sealed = PassphraseWrap::seal(passphrase.as_bytes(), params, &purpose(&["space-export", space])?, &material)?;
    Ok(wrap::to_bytes(&sealed))
}

/// The keys an [`export_space`] of `space` carries, opened with `passphrase`.
pub fn import_space(space: &str, exported: &[u8], passphrase: &str) -> Result<Vec<DataKey>, E2eError> {
    let sealed: PassphraseWrap = wrap::from_bytes(exported)?;
    let material = sealed.open(passphrase.as_bytes(), &purpose(&["space-export", space])?)?;
    let listed: Vec<(u32, serde_bytes::ByteBuf)> = rmp_serde::from_slice(&material)
        .map_err(|e| E2eError::Malformed(format!("an export that does not parse: {e}")))?;
    listed
        .into_iter()
        .map(|(version, bytes)| {
            let secret: [u8; 32] =
                bytes.as_slice().try_into().map_err(|_| E2eError::Malformed("a data key has 32 bytes".into()))?;
            Ok(DataKey::from_bytes(version, secret))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_round_trips_forgives_case_and_catches_typos() {
        let key = DataKey::generate(3);
        let secret = export_secret("orgs/acme", &key).unwrap();
        assert_eq!(secret.len(), 64 + 15, "16 groups of four");
        let back = import_secret("orgs/acme", &secret.to_lowercase().replace('-', " ")).unwrap();
        assert_eq!((back.version, back.secret()), (3, key.secret()));
        let mut typo = secret.clone().into_bytes();
        typo[5] = if typo[5] == b'A' { b'B' } else { b'A' };
        assert!(matches!(import_secret("orgs/acme", std::str::from_utf8(&typo).unwrap()), Err(E2eError::BadSecret(_))));
        assert!(matches!(import_secret("orgs/other", &secret), Err(E2eError::BadSecret(_))), "bound to its space");
        assert!(matches!(import_secret("orgs/acme", &secret[..40]), Err(E2eError::BadSecret(_))));
    }

    #[test]
    fn a_qr_payload_carries_space_and_key() {
        let key = DataKey::generate(1);
        let (space, back) = from_qr_payload(&qr_payload("users/al:ice", &key).unwrap()).unwrap();
        assert_eq!((space.as_str(), back.secret()), ("users/al:ice", key.secret()));
        assert!(from_qr_payload("https://example.com").is_err());
    }

    #[test]
    fn recovery_codes_are_checked() {
        let code = new_recovery_code("alice").unwrap();
        assert_eq!(parse_recovery_code("alice", &code).unwrap().len(), RECOVERY_CODE_BYTES);
        assert!(parse_recovery_code("bob", &code).is_err());
    }
}
