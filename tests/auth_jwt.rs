//! JWT authentication against a real server: every algorithm, every refusal.

mod common;

use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use syncgate::auth::{JwtKey, JwtSettings};
use syncgate::protocol::{ClientMessage, ServerMessage};

fn claims() -> serde_json::Value {
    json!({"sub": "alice", "roles": ["user"], "exp": now() + 600})
}

async fn accepts(server: &TestServer, token: &str) -> bool {
    let mut ws = RawWs::connect("/ws", server.addr).await;
    ws.msg().await;
    ws.send(&ClientMessage::Auth { token: Some(token.to_string()) }).await;
    matches!(ws.msg().await, ServerMessage::AuthAck { ref sub, .. } if sub == "alice")
}

#[tokio::test]
async fn every_hmac_algorithm_verifies_with_the_secret() {
    let server = TestServer::start(jwt_config()).await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert!(accepts(&server, &sign(alg, &key, &claims())).await, "{alg:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn every_public_key_algorithm_verifies_with_its_pem() {
    let cases: [(&str, &str, &[Algorithm]); 4] = [
        (
            "rsa_public.pem",
            "rsa_private.pem",
            &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
        ),
        ("ec256_public.pem", "ec256_private.pem", &[Algorithm::ES256]),
        ("ec384_public.pem", "ec384_private.pem", &[Algorithm::ES384]),
        ("ed25519_public.pem", "ed25519_private.pem", &[Algorithm::EdDSA]),
    ];
    for (public, private, algorithms) in cases {
        let server = TestServer::start(config_with_key(JwtSettings::new(JwtKey::PublicKeyPem(fixture(public))))).await;
        let pem = fixture(private);
        let key = match algorithms[0] {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap();
        for alg in algorithms {
            assert!(accepts(&server, &sign(*alg, &key, &claims())).await, "{alg:?} with {public}");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn pkcs1_rsa_public_keys_work_too() {
    let server =
        TestServer::start(config_with_key(JwtSettings::new(JwtKey::PublicKeyPem(fixture("rsa_public_pkcs1.pem")))))
            .await;
    let key = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap();
    assert!(accepts(&server, &sign(Algorithm::RS256, &key, &claims())).await);
    server.stop().await;
}

#[tokio::test]
async fn a_public_pem_is_never_an_hmac_secret() {
    let public = fixture("rsa_public.pem");
    let server = TestServer::start(config_with_key(JwtSettings::new(JwtKey::PublicKeyPem(public.clone())))).await;
    // The classic confusion attack: HS256 keyed with the public key's bytes.
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(&public), &claims());
    assert_eq!(RawWs::refused(server.addr, &forged).await, ("token_invalid".into(), 4001));
    server.stop().await;
}

#[tokio::test]
async fn wrong_keys_and_curves_are_token_invalid() {
    let server =
        TestServer::start(config_with_key(JwtSettings::new(JwtKey::PublicKeyPem(fixture("rsa_public.pem"))))).await;
    let other = EncodingKey::from_rsa_pem(&fixture("rsa_other_private.pem")).unwrap();
    assert_eq!(
        RawWs::refused(server.addr, &sign(Algorithm::RS256, &other, &claims())).await,
        ("token_invalid".into(), 4001)
    );
    let ec = EncodingKey::from_ec_pem(&fixture("ec256_private.pem")).unwrap();
    assert_eq!(
        RawWs::refused(server.addr, &sign(Algorithm::ES256, &ec, &claims())).await,
        ("token_invalid".into(), 4001)
    );
    server.stop().await;

    let server =
        TestServer::start(config_with_key(JwtSettings::new(JwtKey::PublicKeyPem(fixture("ec384_public.pem"))))).await;
    assert_eq!(
        RawWs::refused(server.addr, &sign(Algorithm::ES256, &ec, &claims())).await,
        ("token_invalid".into(), 4001)
    );
    server.stop().await;

    let server = TestServer::start(jwt_config()).await;
    let wrong_secret =
        sign(Algorithm::HS256, &EncodingKey::from_secret(b"not-the-secret-not-the-secret-00"), &claims());
    assert_eq!(RawWs::refused(server.addr, &wrong_secret).await, ("token_invalid".into(), 4001));
    server.stop().await;
}

#[tokio::test]
async fn alg_none_never_passes() {
    let server = TestServer::start(jwt_config()).await;
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#, r#"{"alg":"NONE"}"#] {
        let unsigned = format!("{}.{}.", b64(header.to_string()), b64(claims().to_string()));
        assert_eq!(RawWs::refused(server.addr, &unsigned).await, ("token_invalid".into(), 4001), "{header}");
    }
    server.stop().await;
}

#[tokio::test]
async fn claim_failures_have_precise_codes() {
    let server = TestServer::start(jwt_config()).await;
    let t = now();
    let cases = [
        (json!({"sub": "a", "exp": t - 3600}), "token_expired", 4100),
        (json!({"sub": "a", "exp": t + 600, "nbf": t + 3600}), "token_not_yet_valid", 4001),
        (json!({"exp": t + 600}), "claim_missing", 4001),
        (json!({"sub": "", "exp": t + 600}), "claim_missing", 4001),
        (json!({"sub": "a"}), "claim_missing", 4001),
        (json!({"sub": "a", "exp": "tomorrow"}), "claim_missing", 4001),
    ];
    for (claims, code, close) in cases {
        assert_eq!(RawWs::refused(server.addr, &hs256(claims.clone())).await, (code.to_string(), close), "{claims}");
    }
    for garbage in ["abc", "only.two", "a.b.c", "%%%.%%%.%%%"] {
        assert_eq!(RawWs::refused(server.addr, garbage).await, ("token_malformed".into(), 4001), "{garbage}");
    }
    server.stop().await;
}

#[tokio::test]
async fn leeway_admits_small_skew_only() {
    let mut settings = JwtSettings::new(JwtKey::Secret(SECRET.as_bytes().to_vec()));
    settings.leeway_secs = 30;
    let server = TestServer::start(config_with_key(settings)).await;
    let t = now();
    assert!(
        accepts(&server, &hs256(json!({"sub": "alice", "exp": t - 5}))).await,
        "5 s past exp is inside 30 s leeway"
    );
    assert!(accepts(&server, &hs256(json!({"sub": "alice", "exp": t + 600, "nbf": t + 5}))).await);
    assert_eq!(RawWs::refused(server.addr, &hs256(json!({"sub": "alice", "exp": t - 60}))).await.0, "token_expired");
    server.stop().await;
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_configured() {
    let mut settings = JwtSettings::new(JwtKey::Secret(SECRET.as_bytes().to_vec()));
    settings.audience = vec!["syncgate".into()];
    settings.issuer = vec!["https://issuer.example".into()];
    let server = TestServer::start(config_with_key(settings)).await;
    let t = now();
    let good = json!({"sub": "alice", "exp": t + 600, "aud": "syncgate", "iss": "https://issuer.example"});
    assert!(accepts(&server, &hs256(good)).await);
    let multi = json!({"sub": "alice", "exp": t + 600, "aud": ["other", "syncgate"], "iss": "https://issuer.example"});
    assert!(accepts(&server, &hs256(multi)).await);
    let cases = [
        (json!({"sub": "a", "exp": t + 600, "aud": "other", "iss": "https://issuer.example"}), "audience_mismatch"),
        (json!({"sub": "a", "exp": t + 600, "iss": "https://issuer.example"}), "claim_missing"),
        (json!({"sub": "a", "exp": t + 600, "aud": "syncgate", "iss": "https://evil.example"}), "issuer_mismatch"),
        (json!({"sub": "a", "exp": t + 600, "aud": "syncgate"}), "claim_missing"),
        (json!({"sub": "a", "exp": t + 600, "aud": ["x", "y"], "iss": "https://issuer.example"}), "audience_mismatch"),
    ];
    for (claims, code) in cases {
        assert_eq!(RawWs::refused(server.addr, &hs256(claims.clone())).await, (code.to_string(), 4001), "{claims}");
    }
    server.stop().await;
}

#[tokio::test]
async fn without_a_configured_audience_any_aud_is_accepted() {
    let server = TestServer::start(jwt_config()).await;
    assert!(accepts(&server, &hs256(json!({"sub": "alice", "exp": now() + 600, "aud": "authenticated"}))).await);
    server.stop().await;
}

#[tokio::test]
async fn roles_come_from_roles_or_role() {
    let server = TestServer::start(jwt_config()).await;
    for (claims, roles) in [
        (json!({"sub": "a", "exp": now() + 600, "roles": ["x", "y"]}), vec!["x", "y"]),
        (json!({"sub": "a", "exp": now() + 600, "role": "admin"}), vec!["admin"]),
        (json!({"sub": "a", "exp": now() + 600}), vec![]),
    ] {
        let mut ws = RawWs::connect("/ws", server.addr).await;
        ws.msg().await;
        ws.send(&ClientMessage::Auth { token: Some(hs256(claims)) }).await;
        match ws.msg().await {
            ServerMessage::AuthAck { roles: got, .. } => assert_eq!(got, roles),
            other => panic!("{other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_query_token_replaces_auth_required() {
    let server = TestServer::start(jwt_config()).await;
    let good = token("alice", &["user"]);
    let mut ws = RawWs::connect(&format!("/ws?token={good}"), server.addr).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthAck { ref sub, .. } if sub == "alice"));
    ws.send(&ClientMessage::Ping { id: Some(1) }).await;
    assert_eq!(ws.msg().await, ServerMessage::Pong { id: Some(1) });

    let mut ws = RawWs::connect("/ws?token=garbage", server.addr).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { ref code, .. } if code == "token_malformed"));
    assert_eq!(ws.close_code().await, 4001);

    let expired = hs256(json!({"sub": "a", "exp": now() - 3600}));
    let mut ws = RawWs::connect(&format!("/ws?other=1&token={expired}"), server.addr).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { ref code, .. } if code == "token_expired"));
    assert_eq!(ws.close_code().await, 4100);
    server.stop().await;
}
