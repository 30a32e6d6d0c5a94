//! Identity providers against a real local HTTP server: JWKS rotation and
//! fetch limits, provider-shaped key sets, introspection (accepted, inactive,
//! down, slow, cached, revoked within the TTL), cookies and Origin, kick and
//! revoke, and the authentication failure limit.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::idp::{Idp, http};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use syncgate::ServerConfig;
use syncgate::auth::{
    Authenticator, IntrospectSettings, IntrospectShape, Introspector, JwksPolicy, JwksSource, JwtKey, JwtSettings,
    JwtVerifier,
};
use syncgate::http_client::HttpClient;
use syncgate::protocol::ServerMessage;

fn part(name: &str) -> Value {
    let parts: Value = serde_json::from_slice(&fixture("jwks_parts.json")).unwrap();
    parts[name].clone()
}

fn jwk(name: &str, extra: Value) -> Value {
    let mut key = part(name);
    for (k, v) in extra.as_object().unwrap() {
        key[k] = v.clone();
    }
    key
}

fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap()
}

fn rsa_other() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa_other_private.pem")).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "iat": now()})
}

fn jwks_verifier(idp: &Idp, cooldown: Duration) -> Arc<JwtVerifier> {
    let policy = JwksPolicy { unknown_kid_cooldown: cooldown, ..JwksPolicy::default() };
    let source = JwksSource::new(idp.jwks_url(), HttpClient::new(Duration::from_secs(2)).unwrap(), policy);
    Arc::new(JwtVerifier::new(JwtSettings::new(JwtKey::Jwks(source))).unwrap())
}

fn server_config(authenticator: Arc<dyn Authenticator>) -> ServerConfig {
    ServerConfig { authenticator, ..ServerConfig::default() }
}

#[tokio::test]
async fn rotated_keys_are_accepted_after_one_refetch() {
    let idp = Idp::start().await;
    idp.set_jwks(vec![jwk("rsa", json!({"kid": "k1", "alg": "RS256", "use": "sig"}))]);
    let server = TestServer::start(server_config(jwks_verifier(&idp, Duration::from_millis(200)))).await;
    RawWs::authed(server.addr, &signed(Algorithm::RS256, Some("k1"), &rsa(), claims("alice"))).await;
    let after_first = idp.jwks_hits();
    assert!(after_first >= 1);

    idp.set_jwks(vec![
        jwk("rsa", json!({"kid": "k1", "alg": "RS256"})),
        jwk("rsa_other", json!({"kid": "k2", "alg": "RS256"})),
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    RawWs::authed(server.addr, &signed(Algorithm::RS256, Some("k2"), &rsa_other(), claims("alice"))).await;
    assert_eq!(idp.jwks_hits(), after_first + 1, "one refetch found the new kid");
    RawWs::authed(server.addr, &signed(Algorithm::RS256, Some("k2"), &rsa_other(), claims("bob"))).await;
    assert_eq!(idp.jwks_hits(), after_first + 1, "now cached");
    // A kid's key signs only with the JWK's alg.
    let (code, close) =
        RawWs::refused(server.addr, &signed(Algorithm::PS256, Some("k2"), &rsa_other(), claims("x"))).await;
    assert_eq!((code.as_str(), close), ("token_invalid", 4001));
    server.stop().await;
}

#[tokio::test]
async fn a_storm_of_unknown_kids_causes_a_handful_of_fetches() {
    let idp = Idp::start().await;
    idp.set_jwks(vec![jwk("rsa", json!({"kid": "k1", "alg": "RS256"}))]);
    let verifier = jwks_verifier(&idp, Duration::from_secs(10));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let verifier = verifier.clone();
        let token = signed(Algorithm::RS256, Some(&format!("unknown-{i}-{}", fastrand::u64(..))), &rsa(), claims("x"));
        tasks.push(tokio::spawn(async move { verifier.verify(&token, now()).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().code.as_str(), "token_invalid");
    }
    assert!(idp.jwks_hits() <= 3, "{} fetches for 1000 unknown kids", idp.jwks_hits());
    // And the known key still works without another fetch.
    let hits = idp.jwks_hits();
    assert!(verifier.verify(&signed(Algorithm::RS256, Some("k1"), &rsa(), claims("ok")), now()).await.is_ok());
    assert_eq!(idp.jwks_hits(), hits);
}

#[tokio::test]
async fn cached_keys_keep_working_when_the_provider_fails() {
    let idp = Idp::start().await;
    idp.set_jwks(vec![jwk("ec256", json!({"kid": "e1", "alg": "ES256"}))]);
    let verifier = jwks_verifier(&idp, Duration::from_millis(1));
    let ec = EncodingKey::from_ec_pem(&fixture("ec256_private.pem")).unwrap();
    assert!(verifier.verify(&signed(Algorithm::ES256, Some("e1"), &ec, claims("a")), now()).await.is_ok());
    idp.state.fail.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(verifier.verify(&signed(Algorithm::ES256, Some("nope"), &ec, claims("a")), now()).await.is_err());
    assert!(
        verifier.verify(&signed(Algorithm::ES256, Some("e1"), &ec, claims("a")), now()).await.is_ok(),
        "stale keys serve on"
    );
}

#[tokio::test]
async fn provider_shaped_key_sets_verify_their_tokens() {
    let x5c = String::from_utf8(fixture("rsa_x5c.b64")).unwrap();
    let secret = b"supabase-legacy-jwt-secret-0123456789";
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
    type Tokens = Vec<(Algorithm, &'static str, EncodingKey)>;
    let cases: Vec<(&str, Vec<Value>, Tokens)> = vec![
        (
            "supabase",
            vec![
                jwk("ec256", json!({"kid": "sb-ec", "alg": "ES256", "use": "sig", "key_ops": ["verify"], "ext": true})),
                // A secret published in a key set is public: it must never verify anything.
                json!({"kty": "oct", "kid": "sb-hs", "alg": "HS256", "k": b64(secret)}),
            ],
            vec![(Algorithm::ES256, "sb-ec", EncodingKey::from_ec_pem(&fixture("ec256_private.pem")).unwrap())],
        ),
        (
            "auth0",
            vec![jwk("rsa", json!({"kid": "a0", "alg": "RS256", "use": "sig", "x5c": [x5c], "x5t": "dGVzdA"}))],
            vec![(Algorithm::RS256, "a0", rsa())],
        ),
        (
            "firebase",
            vec![
                jwk("rsa", json!({"kid": "fb1", "alg": "RS256", "use": "sig"})),
                jwk("rsa_other", json!({"kid": "fb2", "alg": "RS256", "use": "sig"})),
            ],
            vec![(Algorithm::RS256, "fb1", rsa()), (Algorithm::RS256, "fb2", rsa_other())],
        ),
    ];
    for (provider, keys, tokens) in cases {
        let idp = Idp::start().await;
        idp.set_jwks(keys);
        let server = TestServer::start(server_config(jwks_verifier(&idp, Duration::from_secs(10)))).await;
        for (alg, kid, key) in tokens {
            let claims = json!({"sub": "user-1", "aud": "authenticated", "role": "authenticated", "exp": now() + 600, "iat": now()});
            let mut ws = RawWs::connect("/ws", server.addr).await;
            ws.msg().await;
            ws.send(&syncgate::protocol::ClientMessage::Auth { token: Some(signed(alg, Some(kid), &key, claims)) })
                .await;
            assert!(matches!(ws.msg().await, ServerMessage::AuthAck { .. }), "{provider} {alg:?} {kid}");
        }
        server.stop().await;
    }
}

fn introspector(idp: &Idp, ttl: Duration, timeout: Duration, form: bool) -> Arc<Introspector> {
    introspector_of_shape(idp, ttl, timeout, form, IntrospectShape::Rfc7662)
}

fn introspector_of_shape(
    idp: &Idp,
    ttl: Duration,
    timeout: Duration,
    form: bool,
    shape: IntrospectShape,
) -> Arc<Introspector> {
    let settings = IntrospectSettings {
        url: idp.introspect_url(),
        bearer: "internal-admin-token".into(),
        cache_ttl: ttl,
        cache_max_entries: 1000,
        form,
        shape,
        fail_open: false,
        leeway_secs: 0,
    };
    Arc::new(Introspector::new(settings, HttpClient::new(timeout).unwrap()))
}

#[tokio::test]
async fn introspection_accepts_maps_claims_and_refuses_inactive_tokens() {
    let idp = Idp::start().await;
    idp.answer("opaque-good", json!({"userId": "u1", "orgId": "acme", "role": "editor"}));
    idp.answer("rfc-good", json!({"active": true, "sub": "u2", "exp": now() + 600, "scope": "read"}));
    idp.answer("revoked", json!({"active": false}));
    let user_shape = IntrospectShape::User;
    let mut config =
        server_config(introspector_of_shape(&idp, Duration::from_secs(30), Duration::from_secs(2), false, user_shape));
    config.policy = syncgate::rules::Policy::with_rules(
        syncgate::rules::RuleSet::parse(
            "[[rules]]\nroles=[\"editor\"]\nresource=\"orgs/{orgId}/**\"\nactions=[\"read\"]\n",
        )
        .unwrap(),
    );
    let server = TestServer::start(config).await;
    let mut ws = RawWs::connect("/ws", server.addr).await;
    ws.msg().await;
    ws.send(&syncgate::protocol::ClientMessage::Auth { token: Some("opaque-good".into()) }).await;
    assert_eq!(identity_of(ws.msg().await), ("u1".to_string(), vec!["editor".to_string()], None));
    ws.send(&syncgate::protocol::ClientMessage::Sub { id: 1, topic: "orgs/acme/feed".into() }).await;
    assert_eq!(ws.msg().await, ServerMessage::Ok { id: 1 }, "{{orgId}} from the introspection answer");
    assert_eq!(idp.state.last_authorization.lock().unwrap().as_deref(), Some("Bearer internal-admin-token"));
    assert_eq!(idp.state.last_body.lock().unwrap().as_str(), r#"{"token":"opaque-good"}"#);
    server.stop().await;
    // The RFC 7662 shape (the default) for the rest.
    let server =
        TestServer::start(server_config(introspector(&idp, Duration::from_secs(30), Duration::from_secs(2), false)))
            .await;
    RawWs::authed(server.addr, "rfc-good").await;
    assert_eq!(RawWs::refused(server.addr, "revoked").await, ("token_invalid".into(), 4001));
    assert_eq!(RawWs::refused(server.addr, "unknown").await, ("token_invalid".into(), 4001));
    server.stop().await;
}

#[tokio::test]
async fn introspection_fails_closed_when_down_or_slow() {
    let idp = Idp::start().await;
    idp.answer("good", json!({"active": true, "sub": "u1"}));
    let server = TestServer::start(server_config(introspector(
        &idp,
        Duration::from_secs(30),
        Duration::from_millis(300),
        false,
    )))
    .await;
    idp.state.fail.store(true, Ordering::SeqCst);
    assert_eq!(RawWs::refused(server.addr, "good").await, ("introspection_unavailable".into(), 4001));
    idp.state.fail.store(false, Ordering::SeqCst);
    idp.state.stall_ms.store(1000, Ordering::SeqCst);
    assert_eq!(RawWs::refused(server.addr, "good").await, ("introspection_unavailable".into(), 4001));
    idp.state.stall_ms.store(0, Ordering::SeqCst);
    RawWs::authed(server.addr, "good").await;
    server.stop().await;

    // Nothing listening at all.
    let dead = Idp { addr: "127.0.0.1:9".parse().unwrap(), state: Default::default() };
    let server = TestServer::start(server_config(introspector(
        &dead,
        Duration::from_secs(30),
        Duration::from_millis(300),
        false,
    )))
    .await;
    assert_eq!(RawWs::refused(server.addr, "good").await, ("introspection_unavailable".into(), 4001));
    server.stop().await;
}

#[tokio::test]
async fn one_introspection_serves_many_connections_and_form_encoding_works() {
    let idp = Idp::start().await;
    idp.answer("shared-token", json!({"active": true, "sub": "u1"}));
    let server =
        TestServer::start(server_config(introspector(&idp, Duration::from_secs(30), Duration::from_secs(2), true)))
            .await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move { RawWs::authed(addr, "shared-token").await }));
    }
    let mut sockets = Vec::new();
    for task in tasks {
        sockets.push(task.await.unwrap());
    }
    assert_eq!(idp.introspect_hits(), 1, "concurrent checks share one request, later ones hit the cache");
    assert_eq!(idp.state.last_content_type.lock().unwrap().as_deref(), Some("application/x-www-form-urlencoded"));
    assert_eq!(idp.state.last_body.lock().unwrap().as_str(), "token=shared-token");
    server.stop().await;
}

#[tokio::test]
async fn revocation_at_the_provider_closes_live_sessions_within_the_ttl() {
    let idp = Idp::start().await;
    idp.answer("session-token", json!({"active": true, "sub": "u1"}));
    let server =
        TestServer::start(server_config(introspector(&idp, Duration::from_millis(400), Duration::from_secs(2), false)))
            .await;
    let mut ws = RawWs::authed(server.addr, "session-token").await;
    idp.answer("session-token", json!({"active": false}));
    let started = std::time::Instant::now();
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { ref code, .. } if code == "forbidden"));
    assert_eq!(ws.close_code().await, 4003);
    assert!(started.elapsed() < Duration::from_secs(3));
    server.stop().await;
}

#[tokio::test]
async fn cookies_count_only_from_allowed_origins() {
    let config = ServerConfig {
        allowed_origins: vec!["https://app.example.com".into()],
        auth_cookie: Some("sg_token".into()),
        ..jwt_config()
    };
    let server = TestServer::start(config).await;
    let cookie = format!("theme=dark; sg_token={}", token("alice", &["user"]));
    let mut ws = RawWs::connect_with("/ws", server.addr, &[("Origin", "https://app.example.com"), ("Cookie", &cookie)])
        .await
        .unwrap();
    assert!(matches!(ws.msg().await, ServerMessage::AuthAck { ref sub, .. } if sub == "alice"));

    let refused =
        RawWs::connect_with("/ws", server.addr, &[("Origin", "https://evil.example"), ("Cookie", &cookie)]).await;
    assert!(refused.err().unwrap().contains("403"), "cross-site WebSocket hijacking is refused");
    let refused = RawWs::connect_with("/ws", server.addr, &[("Origin", "https://evil.example")]).await;
    assert!(refused.err().unwrap().contains("403"), "every upgrade from another Origin");

    // Without an Origin (not a browser) the cookie is ignored and AUTH is required.
    let mut ws = RawWs::connect_with("/ws", server.addr, &[("Cookie", &cookie)]).await.unwrap();
    assert!(matches!(ws.msg().await, ServerMessage::AuthRequired { .. }));
    server.stop().await;
}

#[tokio::test]
async fn kick_and_revoke_close_exactly_the_matching_connections() {
    let config = ServerConfig { admin_token: Some("admin-secret".into()), ..jwt_config() };
    let server = TestServer::start(config).await;
    let with = |sub: &str, jti: &str, iat: u64| hs256(json!({"sub": sub, "jti": jti, "iat": iat, "exp": now() + 600}));
    let mut alice1 = RawWs::authed(server.addr, &with("alice", "a1", now())).await;
    let mut alice2 = RawWs::authed(server.addr, &with("alice", "a2", now())).await;
    let mut bob = RawWs::authed(server.addr, &with("bob", "b1", now())).await;
    let mut carol_old = RawWs::authed(server.addr, &with("carol", "c1", now() - 100)).await;

    assert_eq!(http(server.addr, "GET", "/admin/connections", Some("wrong"), None).await.0, 401);
    let (status, body) = http(server.addr, "GET", "/admin/connections", Some("admin-secret"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"connections": 4, "bySub": {"alice": 2, "bob": 1, "carol": 1}})
    );

    let (status, body) =
        http(server.addr, "POST", "/admin/disconnect", Some("admin-secret"), Some(r#"{"sub":"alice"}"#)).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"disconnected": 2, "nodesAcknowledged": 0}))
    );
    assert_eq!(alice1.close_code().await, 4003);
    assert_eq!(alice2.close_code().await, 4003);

    let (status, _) = http(server.addr, "POST", "/admin/revoke", Some("admin-secret"), Some(r#"{"jti":"b1"}"#)).await;
    assert_eq!(status, 200);
    assert_eq!(bob.close_code().await, 4003);
    assert_eq!(RawWs::refused(server.addr, &with("bob", "b1", now())).await, ("forbidden".into(), 4003));
    RawWs::authed(server.addr, &with("bob", "b2", now())).await;

    let body = format!(r#"{{"sub":"carol","issuedBefore":{}}}"#, now() - 10);
    assert_eq!(http(server.addr, "POST", "/admin/revoke", Some("admin-secret"), Some(&body)).await.0, 200);
    assert_eq!(carol_old.close_code().await, 4003);
    RawWs::authed(server.addr, &with("carol", "c2", now())).await;
    assert_eq!(http(server.addr, "POST", "/admin/revoke", Some("admin-secret"), Some(r#"{"nope":1}"#)).await.0, 400);
    server.stop().await;

    let server = TestServer::start(jwt_config()).await;
    assert_eq!(
        http(server.addr, "GET", "/admin/connections", Some("anything"), None).await.0,
        404,
        "absent without --admin-token"
    );
    server.stop().await;
}

#[tokio::test]
async fn repeated_failures_from_one_ip_hit_the_rate_limit() {
    let config = ServerConfig { auth_failures_per_minute: 3, ..jwt_config() };
    let server = TestServer::start(config).await;
    let mut waiting = RawWs::connect("/ws", server.addr).await;
    waiting.msg().await;
    for _ in 0..3 {
        assert_eq!(RawWs::refused(server.addr, "guess").await.1, 4001);
    }
    waiting.send(&syncgate::protocol::ClientMessage::Auth { token: Some(token("alice", &[])) }).await;
    assert_eq!(waiting.close_code().await, 4029, "even a good token waits out the minute");
    let refused = RawWs::try_connect("/ws", server.addr).await;
    assert!(refused.err().unwrap().contains("429"));
    server.stop().await;
}

/// An https:// JWKS endpoint on 127.0.0.1 whose certificate comes from a fresh
/// private CA; returns its URL and the CA certificate (PEM).
async fn jwks_behind_a_private_ca(keys: Value) -> (String, String) {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("idp.pem"), dir.path().join("idp.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(syncgate::tls::server_config(&cert_path, &key_path).unwrap());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/jwks", listener.local_addr().unwrap());
    let body = bytes::Bytes::from(json!({ "keys": keys }).to_string());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |_| {
                    let body = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (url, ca.pem())
}

#[tokio::test]
async fn a_jwks_endpoint_behind_a_private_ca_needs_that_ca() {
    let (url, ca_pem) = jwks_behind_a_private_ca(json!([jwk("rsa", json!({"kid": "k1", "alg": "RS256"}))])).await;
    let token = signed(Algorithm::RS256, Some("k1"), &rsa(), claims("alice"));

    // The bundled public roots do not know the CA: the keys cannot be fetched, so the token fails.
    let public_only = HttpClient::new(Duration::from_secs(2)).unwrap();
    let err = public_only.get(&url).await.unwrap_err();
    assert!(err.0.to_lowercase().contains("certificate"), "{err}");
    let source = JwksSource::new(url.clone(), public_only, JwksPolicy::default());
    let verifier = Arc::new(JwtVerifier::new(JwtSettings::new(JwtKey::Jwks(source))).unwrap());
    let server = TestServer::start(server_config(verifier)).await;
    let (_, close) = RawWs::refused(server.addr, &token).await;
    assert_eq!(close, 4001);
    server.stop().await;

    // Trusting the CA (what --idp-ca-file does) makes the same endpoint usable.
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    let with_ca = HttpClient::with_extra_roots(Duration::from_secs(2), vec![ca]).unwrap();
    let source = JwksSource::new(url, with_ca, JwksPolicy::default());
    let verifier = Arc::new(JwtVerifier::new(JwtSettings::new(JwtKey::Jwks(source))).unwrap());
    let server = TestServer::start(server_config(verifier)).await;
    RawWs::authed(server.addr, &token).await;
    server.stop().await;
}
