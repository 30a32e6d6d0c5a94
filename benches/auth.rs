//! Token verification cost per algorithm: `cargo bench --bench auth`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use syncgate::auth::{Identity, JwtKey, JwtSettings, JwtVerifier, StaticTokenVerifier};

const NOW: u64 = 1_800_000_000;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

fn verification(c: &mut Criterion) {
    let claims = json!({"sub": "alice", "roles": ["user"], "exp": NOW + 600, "orgId": "acme"});
    let secret = b"bench-secret-bench-secret-bench-secret".to_vec();
    let cases: Vec<(Algorithm, JwtKey, EncodingKey)> = vec![
        (Algorithm::HS256, JwtKey::Secret(secret.clone()), EncodingKey::from_secret(&secret)),
        (Algorithm::HS384, JwtKey::Secret(secret.clone()), EncodingKey::from_secret(&secret)),
        (Algorithm::HS512, JwtKey::Secret(secret.clone()), EncodingKey::from_secret(&secret)),
        (
            Algorithm::RS256,
            JwtKey::PublicKeyPem(fixture("rsa_public.pem")),
            EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap(),
        ),
        (
            Algorithm::PS256,
            JwtKey::PublicKeyPem(fixture("rsa_public.pem")),
            EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap(),
        ),
        (
            Algorithm::ES256,
            JwtKey::PublicKeyPem(fixture("ec256_public.pem")),
            EncodingKey::from_ec_pem(&fixture("ec256_private.pem")).unwrap(),
        ),
        (
            Algorithm::ES384,
            JwtKey::PublicKeyPem(fixture("ec384_public.pem")),
            EncodingKey::from_ec_pem(&fixture("ec384_private.pem")).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            JwtKey::PublicKeyPem(fixture("ed25519_public.pem")),
            EncodingKey::from_ed_pem(&fixture("ed25519_private.pem")).unwrap(),
        ),
    ];
    let mut group = c.benchmark_group("verify");
    for (alg, key, signing) in cases {
        let verifier = JwtVerifier::new(JwtSettings::new(key)).unwrap();
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &signing).unwrap();
        assert!(verifier.check(&token, NOW).is_ok());
        group.bench_function(format!("{alg:?}"), |b| b.iter(|| verifier.check(black_box(&token), NOW)));
    }
    let static_token = StaticTokenVerifier::new("static-shared-secret", Identity::new("holder", vec![]));
    group.bench_function("static token", |b| b.iter(|| static_token.check(black_box("static-shared-secret"))));
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
