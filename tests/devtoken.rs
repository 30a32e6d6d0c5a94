//! Development tokens (`syncgate token`, the load generator) verify on the server.

use jsonwebtoken::Algorithm;
use syncgate::auth::{JwtKey, JwtSettings, JwtVerifier};
use syncgate_tools::devtoken::{TokenSpec, mint};

#[test]
fn minted_tokens_verify() {
    let mut spec = TokenSpec::new("alice", vec!["user".into()]);
    spec.claims.insert("orgId".into(), "acme".into());
    spec.algorithm = Algorithm::HS512;
    let token = mint(b"s", &spec, 1_000).unwrap();
    let v = JwtVerifier::new(JwtSettings::new(JwtKey::Secret(b"s".to_vec()))).unwrap();
    let id = v.check(&token, 1_000).unwrap();
    assert_eq!(
        (id.sub.as_str(), id.roles.as_slice(), id.expires_at),
        ("alice", &["user".to_string()][..], Some(4_600))
    );
    assert_eq!(id.claims["orgId"], "acme");
}
