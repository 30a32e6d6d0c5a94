//! The second security pass: one test per finding, against a real server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::idp::{Idp, http};
use common::raw::{self, Event};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::auth::{
    Authenticator, IntrospectSettings, IntrospectShape, Introspector, IssuerSettings, JwksPolicy, JwksSource, JwtKey,
    JwtSettings, JwtVerifier,
};
use syncgate::auth_failures::AuthFailures;
use syncgate::http_client::HttpClient;
use syncgate::protocol::{ClientMessage, ServerMessage};
use syncgate::rules::{Policy, RuleSet};
use syncgate::store::{Durability, SqliteStore, Store, Write};
use tokio::io::AsyncWriteExt;

/// A client that never lets its inbound queue empty (a flood of PINGs, its
/// pongs read as fast as they come) is still closed with 4100 at `exp`, and
/// is answered nothing after it.
#[tokio::test]
async fn a_session_cannot_outlive_its_token_by_keeping_the_socket_busy() {
    let mut config = jwt_config();
    config.session.messages_per_second = 0;
    let server = TestServer::start(config).await;
    let exp = now() + 3;
    let (mut reader, mut write) = raw::authed(server.addr, &hs256(json!({"sub": "busy", "exp": exp}))).await;
    let pings: Vec<u8> = (0..200).flat_map(|i| raw::frame(&ClientMessage::Ping { id: Some(i) })).collect();
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if write.write_all(&pings).await.is_err() {
                return;
            }
        }
    });
    let mut closed = None;
    let mut pongs_after_exp = 0;
    let limit = Instant::now() + Duration::from_secs(15);
    while Instant::now() < limit {
        match reader.next(Duration::from_secs(15)).await {
            Some(Event::Close(code)) => {
                closed = Some(code);
                break;
            }
            Some(Event::Msg(ServerMessage::Pong { .. })) if now() > exp => pongs_after_exp += 1,
            Some(_) => {}
            None => break,
        }
    }
    flood.abort();
    assert_eq!(closed, Some(4100), "the session must end at exp however busy the socket is");
    // One second of slack: `now()` has one-second resolution.
    assert!(pongs_after_exp < 5_000, "requests were served long after expiry ({pongs_after_exp} pongs)");
    server.stop().await;
}

// ---- Introspection: only a clear yes authenticates; refusals count; fail-open only for outages.

fn introspector(idp: &Idp, shape: IntrospectShape, fail_open: bool) -> Arc<Introspector> {
    let settings = IntrospectSettings {
        url: idp.introspect_url(),
        bearer: "internal-admin-token".into(),
        cache_ttl: Duration::from_secs(30),
        cache_max_entries: 1000,
        form: false,
        shape,
        fail_open,
        leeway_secs: 0,
    };
    Arc::new(Introspector::new(settings, HttpClient::new(Duration::from_secs(2)).unwrap()))
}

fn with_authenticator(authenticator: Arc<dyn Authenticator>) -> ServerConfig {
    ServerConfig { authenticator, ..ServerConfig::default() }
}

#[tokio::test]
async fn introspection_answers_that_are_not_a_clear_yes_refuse() {
    let idp = Idp::start().await;
    idp.answer("no-active", json!({"sub": "victim", "role": "admin"}));
    idp.answer("string-false", json!({"active": "false", "sub": "victim"}));
    idp.answer("error", json!({"error": "invalid_token", "user_id": "victim"}));
    idp.answer("user-shape", json!({"userId": "u1", "role": "editor"}));
    idp.answer("user-error", json!({"error": "invalid_token", "userId": "victim"}));
    idp.answer("rfc", json!({"active": true, "sub": "u2"}));
    idp.answer_raw("unauthorized", 401, r#"{"sub": "victim"}"#);
    idp.answer_raw("forbidden", 403, "no");
    idp.answer_raw("broken", 502, "bad gateway");
    idp.answer_raw("html", 200, "<html>login</html>");
    let server = TestServer::start(with_authenticator(introspector(&idp, IntrospectShape::Rfc7662, false))).await;
    for token in ["no-active", "string-false", "error", "user-shape", "unauthorized", "forbidden"] {
        let (code, close) = RawWs::refused(server.addr, token).await;
        assert!(code == "token_invalid" || code == "claim_missing", "{token}: {code}");
        assert_eq!(close, 4001, "{token}");
    }
    for token in ["broken", "html"] {
        assert_eq!(RawWs::refused(server.addr, token).await, ("introspection_unavailable".into(), 4001), "{token}");
    }
    RawWs::authed(server.addr, "rfc").await;
    server.stop().await;

    let server = TestServer::start(with_authenticator(introspector(&idp, IntrospectShape::User, false))).await;
    RawWs::authed(server.addr, "user-shape").await;
    assert_eq!(RawWs::refused(server.addr, "user-error").await.1, 4001);
    assert_eq!(RawWs::refused(server.addr, "no-active").await.1, 4001, "a user-shape answer needs userId");
    server.stop().await;
}

#[tokio::test]
async fn fail_open_covers_outages_only_and_provider_refusals_count() {
    let idp = Idp::start().await;
    let unsigned = format!(
        "e30.{}.x",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            json!({"sub": "mallory", "role": "admin"}).to_string()
        )
    );
    idp.answer_raw(&unsigned, 401, "unauthorized");
    let mut config = with_authenticator(introspector(&idp, IntrospectShape::Rfc7662, true));
    config.auth_failures_per_minute = 2;
    let server = TestServer::start(config).await;
    assert_eq!(RawWs::refused(server.addr, &unsigned).await, ("token_invalid".into(), 4001), "a 401 never fails open");
    assert_eq!(RawWs::refused(server.addr, &unsigned).await.0, "token_invalid");
    // Two provider refusals used up the budget: the third attempt is not even verified.
    let hits = idp.introspect_hits();
    let refused = RawWs::try_connect("/ws", server.addr).await;
    assert!(refused.is_err(), "HTTP 429 at the upgrade once the budget is spent");
    assert_eq!(idp.introspect_hits(), hits);
    server.stop().await;
    // An outage (503) does fail open in development mode.
    idp.state.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let server = TestServer::start(with_authenticator(introspector(&idp, IntrospectShape::Rfc7662, true))).await;
    let mut ws = RawWs::connect("/ws", server.addr).await;
    ws.msg().await;
    ws.send(&ClientMessage::Auth { token: Some(unsigned.clone()) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthAck { sub, .. } if sub == "mallory"));
    server.stop().await;
}

#[tokio::test]
async fn concurrent_bad_tokens_never_exceed_the_failure_limit() {
    let idp = Idp::start().await;
    idp.state.stall_ms.store(300, std::sync::atomic::Ordering::SeqCst);
    let mut config = with_authenticator(introspector(&idp, IntrospectShape::Rfc7662, false));
    config.auth_failures_per_minute = 30;
    let server = TestServer::start(config).await;
    let addr = server.addr;
    let attempts: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                let Ok(mut ws) = RawWs::try_connect("/ws", addr).await else { return };
                if matches!(ws.recv().await, Recv::Msg(ServerMessage::AuthRequired { .. })) {
                    let _ = ws.try_send(&ClientMessage::Auth { token: Some(format!("bad-{i}")) }).await;
                    let _ = ws.recv().await;
                }
            })
        })
        .collect();
    for attempt in attempts {
        attempt.await.unwrap();
    }
    let asked = idp.introspect_hits();
    assert!(asked <= 30, "{asked} bad tokens were sent to the provider against a limit of 30");
    assert!(asked > 0);
    server.stop().await;
}

// ---- Issuers are bound to their keys.

fn bound_config(rules: Option<&str>) -> ServerConfig {
    let table = |iss: &str, secret: &str, name: &str| IssuerSettings {
        name: Some(name.into()),
        ..IssuerSettings::new(iss, vec![JwtKey::Secret(secret.as_bytes().to_vec())])
    };
    let settings = JwtSettings::bound(vec![
        table("https://idp-a.example", "secret-of-provider-a-0123456789abcdef", "a"),
        table("https://idp-b.example", "secret-of-provider-b-0123456789abcdef", "b"),
    ]);
    let mut config = config_with_key(settings);
    if let Some(rules) = rules {
        config.policy = Policy::with_rules(RuleSet::parse(rules).unwrap());
    }
    config
}

fn signed_by(secret: &str, claims: serde_json::Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), &claims)
}

#[tokio::test]
async fn a_token_is_checked_only_with_its_issuers_keys() {
    let rules = "[[rules]]\nroles=[\"*\"]\nresource=\"tenants/{iss}/**\"\nactions=[\"read\",\"write\"]\n";
    let server = TestServer::start(bound_config(Some(rules))).await;
    let a = "secret-of-provider-a-0123456789abcdef";
    let claims = |iss: &str| json!({"sub": "u1", "iss": iss, "exp": now() + 600});
    // Signed by A, claiming B: B's keys do not verify it.
    assert_eq!(RawWs::refused(server.addr, &signed_by(a, claims("https://idp-b.example"))).await.0, "token_invalid");
    // An unknown issuer gets the same answer as a known one with a bad signature: nothing to enumerate.
    assert_eq!(RawWs::refused(server.addr, &signed_by(a, claims("https://idp-c.example"))).await.0, "token_invalid");
    let no_iss = signed_by(a, json!({"sub": "u1", "exp": now() + 600}));
    assert_eq!(RawWs::refused(server.addr, &no_iss).await.0, "claim_missing");
    let mut ws = RawWs::authed(server.addr, &signed_by(a, claims("https://idp-a.example"))).await;
    ws.send(&ClientMessage::Sub { id: 1, topic: "tenants/a/feed".into() }).await;
    assert_eq!(ws.msg().await, ServerMessage::Ok { id: 1 }, "{{iss}} is the binding's name");
    ws.send(&ClientMessage::Sub { id: 2, topic: "tenants/b/feed".into() }).await;
    assert!(matches!(ws.msg().await, ServerMessage::Error { id: Some(2), code, .. } if code == "forbidden"));
    server.stop().await;
}

/// Two providers, one the default: the partner's `alice` is `partner:alice`
/// everywhere (rules, `MESSAGE.from`), and the partner may grant only the
/// roles its table lists.
#[tokio::test]
async fn identities_are_namespaced_per_issuer_and_roles_allow_listed() {
    let (main_secret, partner_secret) =
        ("secret-of-the-main-provider-0123456789", "secret-of-the-partner-provider-01234567");
    let main = IssuerSettings {
        name: Some("main".into()),
        default: true,
        ..IssuerSettings::new("https://main.example", vec![JwtKey::Secret(main_secret.as_bytes().to_vec())])
    };
    let partner = IssuerSettings {
        name: Some("partner".into()),
        roles: Some(vec!["user".into()]),
        ..IssuerSettings::new("https://partner.example", vec![JwtKey::Secret(partner_secret.as_bytes().to_vec())])
    };
    let mut config = config_with_key(JwtSettings::bound(vec![main, partner]));
    let rules = "[[rules]]\nroles=[\"user\"]\nresource=\"todos/{sub}/**\"\nactions=[\"read\",\"write\"]\n\n\
                 [[rules]]\nroles=[\"service\"]\nresource=\"**\"\nactions=[\"read\",\"write\"]\n";
    config.policy = Policy::with_rules(RuleSet::parse(rules).unwrap());
    let server = TestServer::start(config).await;
    let token = |secret: &str, iss: &str, roles: &[&str]| {
        signed_by(secret, json!({"sub": "alice", "iss": iss, "roles": roles, "exp": now() + 600}))
    };
    let mut main_alice = RawWs::connect("/ws", server.addr).await;
    main_alice.msg().await;
    main_alice.send(&ClientMessage::Auth { token: Some(token(main_secret, "https://main.example", &["user"])) }).await;
    assert!(matches!(main_alice.msg().await, ServerMessage::AuthAck { ref sub, .. } if sub == "alice"));
    let mut partner_alice = RawWs::connect("/ws", server.addr).await;
    partner_alice.msg().await;
    let partner_token = token(partner_secret, "https://partner.example", &["user", "service"]);
    partner_alice.send(&ClientMessage::Auth { token: Some(partner_token) }).await;
    match partner_alice.msg().await {
        ServerMessage::AuthAck { sub, roles, .. } => {
            assert_eq!(
                (sub.as_str(), roles),
                ("partner:alice", vec!["user".to_string()]),
                "namespaced, service dropped"
            )
        }
        other => panic!("{other:?}"),
    }
    partner_alice.send(&ClientMessage::Sync { id: 1, collection: "todos/alice/list".into(), since: None }).await;
    let refused = partner_alice.msg_where(|m| matches!(m, ServerMessage::Error { id: Some(1), .. })).await;
    assert!(matches!(refused, ServerMessage::Error { ref code, .. } if code == "forbidden"), "{refused:?}");
    partner_alice.send(&ClientMessage::Sync { id: 2, collection: "admin/secrets".into(), since: None }).await;
    let refused = partner_alice.msg_where(|m| matches!(m, ServerMessage::Error { id: Some(2), .. })).await;
    assert!(matches!(refused, ServerMessage::Error { ref code, .. } if code == "forbidden"), "{refused:?}");
    main_alice.send(&ClientMessage::Sub { id: 1, topic: "todos/alice/chat".into() }).await;
    main_alice.msg_where(|m| matches!(m, ServerMessage::Ok { id: 1 })).await;
    partner_alice.send(&ClientMessage::Sub { id: 3, topic: "todos/partner:alice/chat".into() }).await;
    partner_alice.msg_where(|m| matches!(m, ServerMessage::Ok { id: 3 })).await;
    main_alice.send(&ClientMessage::Pub { id: 2, topic: "todos/alice/chat".into(), data: "mine".into() }).await;
    let heard = main_alice.msg_where(|m| matches!(m, ServerMessage::Message { .. })).await;
    assert!(matches!(heard, ServerMessage::Message { ref from, .. } if from == "alice"), "{heard:?}");
    server.stop().await;
}

#[test]
fn several_unbound_key_sources_are_refused() {
    let secret = JwtKey::Secret(SECRET.as_bytes().to_vec());
    let pem = JwtKey::PublicKeyPem(fixture("rsa_public.pem"));
    let settings = JwtSettings { keys: vec![secret, pem], ..JwtSettings::new(JwtKey::Secret(Vec::new())) };
    let error = JwtVerifier::new(settings).err().expect("two unbound sources must be refused").to_string();
    assert!(error.contains("[[issuers]]"), "{error}");
}

// ---- A symmetric key published in a JWKS is never used.

#[tokio::test]
async fn an_oct_key_in_a_remote_key_set_verifies_nothing() {
    let idp = Idp::start().await;
    let published = b"this-secret-is-in-a-public-document";
    let k = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, published);
    idp.set_jwks(vec![json!({"kty": "oct", "kid": "hs", "alg": "HS256", "k": k})]);
    let source =
        JwksSource::new(idp.jwks_url(), HttpClient::new(Duration::from_secs(2)).unwrap(), JwksPolicy::default());
    let server = TestServer::start(config_with_key(JwtSettings::new(JwtKey::Jwks(source)))).await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs".into());
    let forged = jsonwebtoken::encode(
        &header,
        &json!({"sub": "admin", "exp": now() + 600}),
        &EncodingKey::from_secret(published),
    )
    .unwrap();
    assert_eq!(RawWs::refused(server.addr, &forged).await, ("token_invalid".into(), 4001));
    server.stop().await;
}

// ---- Tokens: crit, future iat under a subject revocation, the size cap in every mode.

#[tokio::test]
async fn critical_header_extensions_are_refused() {
    let server = TestServer::start(jwt_config()).await;
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
    let header = b64(r#"{"alg":"HS256","typ":"JWT","crit":["x-policy"],"x-policy":"ignore-me"}"#);
    let payload = b64(&json!({"sub": "a", "exp": now() + 600}).to_string());
    let message = format!("{header}.{payload}");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(SECRET.as_bytes()), Algorithm::HS256)
            .unwrap();
    assert_eq!(RawWs::refused(server.addr, &format!("{message}.{signature}")).await, ("token_invalid".into(), 4001));
    server.stop().await;
}

#[tokio::test]
async fn a_subject_revocation_catches_tokens_issued_in_the_future() {
    let admin_token = "admin-token-0123456789abcdef0123456789";
    let config = ServerConfig { admin_token: Some(admin_token.into()), ..jwt_config() };
    let server = TestServer::start(config).await;
    let body = json!({"sub": "bob", "issuedBefore": now()}).to_string();
    let (status, _) = http(server.addr, "POST", "/admin/revoke", Some(admin_token), Some(&body)).await;
    assert_eq!(status, 200);
    let future = hs256(json!({"sub": "bob", "iat": now() + 3600, "exp": now() + 7200}));
    assert_eq!(RawWs::refused(server.addr, &future).await, ("forbidden".into(), 4003));
    let fresh = hs256(json!({"sub": "bob", "iat": now() + 1, "exp": now() + 600}));
    RawWs::authed(server.addr, &fresh).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_tokens_never_reach_the_identity_provider() {
    let idp = Idp::start().await;
    idp.answer("good", json!({"active": true, "sub": "u1"}));
    let server = TestServer::start(with_authenticator(introspector(&idp, IntrospectShape::Rfc7662, false))).await;
    let mut ws = RawWs::authed(server.addr, "good").await;
    let hits = idp.introspect_hits();
    ws.send(&ClientMessage::Auth { token: Some("x".repeat(60_000)) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { code, .. } if code == "token_malformed"));
    assert_eq!(ws.close_code().await, 4001);
    assert_eq!(idp.introspect_hits(), hits, "a 60 KB token was forwarded to the provider");
    server.stop().await;
}

#[tokio::test]
async fn dot_segments_are_not_names() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &["user"])).await;
    for (id, name) in [(1, "todos/../bob"), (2, "./todos"), (3, "todos/.")] {
        ws.send(&ClientMessage::Sub { id, topic: name.into() }).await;
        assert!(matches!(ws.msg().await, ServerMessage::Error { code, .. } if code == "invalid"), "{name}");
    }
    ws.send(&ClientMessage::Sync { id: 4, collection: "todos/..".into(), since: None }).await;
    assert!(matches!(ws.msg().await, ServerMessage::Error { code, .. } if code == "invalid"));
    server.stop().await;
}

/// Connections authenticate while an administrator revokes their subject:
/// every one ends refused or closed with 4003; none lives on.
#[tokio::test]
async fn a_revocation_racing_new_connections_leaves_none_alive() {
    let admin_token = "admin-token-0123456789abcdef0123456789";
    // Refused attempts must not run into the failure limit (4029) instead.
    let config = ServerConfig { admin_token: Some(admin_token.into()), auth_failures_per_minute: 0, ..jwt_config() };
    let server = TestServer::start(config).await;
    let addr = server.addr;
    let victim = hs256(json!({"sub": "victim", "iat": now() - 10, "exp": now() + 600}));
    let mut sockets = Vec::new();
    for _ in 0..60 {
        let token = victim.clone();
        sockets.push(tokio::spawn(async move {
            let mut ws = RawWs::connect("/ws", addr).await;
            ws.msg().await;
            ws.send(&ClientMessage::Auth { token: Some(token) }).await;
            ws
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let body = json!({"sub": "victim", "issuedBefore": now() + 1}).to_string();
    assert_eq!(http(addr, "POST", "/admin/revoke", Some(admin_token), Some(&body)).await.0, 200);
    for socket in sockets {
        let mut ws = socket.await.unwrap();
        assert_eq!(ws.close_code().await, 4003, "a connection of a revoked subject stayed open");
    }
    server.stop().await;
}

// ---- Pre-authentication size: what the largest token needs, no more.

#[tokio::test]
async fn before_auth_ack_only_a_message_the_size_of_an_auth_is_read() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::connect("/ws", server.addr).await;
    ws.msg().await;
    ws.send(&ClientMessage::Auth { token: Some("t".repeat(syncgate::auth::MAX_TOKEN_BYTES)) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { .. }), "the largest token is still read");
    let mut ws = RawWs::connect("/ws", server.addr).await;
    ws.msg().await;
    ws.send(&ClientMessage::Ping { id: Some(1) }).await;
    ws.msg().await;
    ws.send_bytes(&vec![0xc0; 20 * 1024]).await;
    assert_eq!(ws.close_code().await, 1009, "20 KiB before AUTH_ACK is more than any AUTH needs");
    server.stop().await;
}

#[test]
fn failed_authentications_count_an_ipv6_client_by_its_64() {
    let failures = AuthFailures::new(2);
    assert!(failures.try_reserve("2001:db8:0:1::1".parse().unwrap()));
    assert!(failures.try_reserve("2001:db8:0:1::2".parse().unwrap()));
    assert!(failures.is_blocked("2001:db8:0:1:dead:beef:0:1".parse().unwrap()), "one /64, one budget");
    assert!(!failures.is_blocked("2001:db8:0:2::1".parse().unwrap()));
}

// ---- The data directory is private.

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_its_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = SqliteStore::open(&dir, Durability::Full).unwrap();
    let write = Write { collection: "c".into(), key: "k".into(), value: "v".into(), hlc: "1:0:n".parse().unwrap() };
    store.apply(&[write]).await.unwrap();
    let mode = |name: &str| std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(""), 0o700, "the directory");
    for file in ["syncgate.db", "syncgate.db-wal", "syncgate.db-shm", "syncgate.lock"] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
}

// ---- The admin API.

#[tokio::test]
async fn wrong_admin_credentials_are_rate_limited_and_the_scheme_is_case_insensitive() {
    let admin_token = "admin-token-0123456789abcdef0123456789";
    let config = ServerConfig { admin_token: Some(admin_token.into()), auth_failures_per_minute: 3, ..jwt_config() };
    let server = TestServer::start(config).await;
    let lower = format!("bearer {admin_token}");
    assert_eq!(raw_http(server.addr, "GET /admin/connections", &lower).await, 200, "`bearer` in any case");
    for _ in 0..3 {
        assert_eq!(http(server.addr, "GET", "/admin/connections", Some("wrong"), None).await.0, 401);
    }
    assert_eq!(http(server.addr, "GET", "/admin/connections", Some(admin_token), None).await.0, 429);
    server.stop().await;
}

#[tokio::test]
async fn the_admin_api_can_have_its_own_listener() {
    let admin_token = "admin-token-0123456789abcdef0123456789";
    let config = ServerConfig { admin_token: Some(admin_token.into()), ..jwt_config() };
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(syncgate::server::run_with_admin(public, Some(admin), config, shutdown.clone()));
    assert_eq!(http(public_addr, "GET", "/admin/connections", Some(admin_token), None).await.0, 404);
    assert_eq!(http(admin_addr, "GET", "/admin/connections", Some(admin_token), None).await.0, 200);
    assert_eq!(http(admin_addr, "GET", "/healthz", None, None).await.0, 404, "only the admin API there");
    RawWs::authed(public_addr, &token("alice", &[])).await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// A request with a literal Authorization header value; returns the status.
async fn raw_http(addr: std::net::SocketAddr, request_line: &str, authorization: &str) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("{request_line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {authorization}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A revocation another node saved in the shared store (no backplane message
/// reached this node) is read back within seconds and closes the matching
/// session with 4003; a new connection with the same token is refused.
#[tokio::test]
async fn a_revocation_saved_by_another_node_is_read_back_and_enforced() {
    use syncgate::store::{MemoryRevocationStore, RevocationStore, Revoked};
    let shared = Arc::new(MemoryRevocationStore::default());
    let server = TestServer::start(ServerConfig { revocation_store: shared.clone(), ..jwt_config() }).await;
    let mallory = token("mallory", &[]);
    let mut session = RawWs::authed(server.addr, &mallory).await;
    shared.save(&Revoked::Subject { sub: "mallory".into(), issued_before: now() + 60 }).await.unwrap();
    assert_eq!(session.close_code().await, 4003, "closed once the node read the revocation back");
    let (code, close) = RawWs::refused(server.addr, &mallory).await;
    assert_eq!((code.as_str(), close), ("forbidden", 4003));
    server.stop().await;
}
