//! Behind a load balancer: per-address limits follow `X-Forwarded-For` only
//! when the peer is a trusted proxy (`--trusted-proxies`).

mod common;

use common::{RawWs, TestServer, jwt_config};
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, ServerMessage};

/// Presents a bad token through a connection claiming to come from `client`; returns whether the upgrade was let through.
async fn bad_token_from(server: &TestServer, client: &str) -> bool {
    let Ok(mut ws) = RawWs::connect_with("/ws", server.addr, &[("X-Forwarded-For", client)]).await else {
        return false;
    };
    assert!(matches!(ws.msg().await, ServerMessage::AuthRequired { .. }));
    ws.send(&ClientMessage::Auth { token: Some("not a token".into()) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthFail { .. }));
    true
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_client_s_bad_tokens_lock_out_that_client_only() {
    let config = ServerConfig {
        auth_failures_per_minute: 3,
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..jwt_config()
    };
    let server = TestServer::start(config).await;
    for _ in 0..3 {
        assert!(bad_token_from(&server, "198.51.100.7").await);
    }
    assert!(!bad_token_from(&server, "198.51.100.7").await, "the attacker's address is refused at the upgrade");
    assert!(bad_token_from(&server, "198.51.100.8").await, "another client behind the same balancer is not locked out");
    // A spoofed hop to the left of the balancer's own entry changes nothing.
    assert!(!bad_token_from(&server, "203.0.113.1, 198.51.100.7").await);
    server.stop().await;
}

#[tokio::test]
async fn from_an_untrusted_peer_x_forwarded_for_is_ignored() {
    let config = ServerConfig { auth_failures_per_minute: 3, ..jwt_config() };
    let server = TestServer::start(config).await;
    for n in 0..3 {
        assert!(bad_token_from(&server, &format!("198.51.100.{n}")).await);
    }
    assert!(
        !bad_token_from(&server, "198.51.100.99").await,
        "a client cannot escape its limit by claiming another address"
    );
    server.stop().await;
}
