//! The Rust client against a real server: token provider, refresh, and
//! reconnection that follows the close codes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use syncgate_client::{Backoff, Client, ClientConfig, ClientEvent, TokenRequest};

fn fast_backoff() -> Backoff {
    Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(200) }
}

/// A provider that records why it was called and answers from `answer`.
fn recording(
    answer: impl Fn(TokenRequest, usize) -> Result<Option<String>, String> + Send + Sync + 'static,
) -> (ClientConfigBuilder, Arc<Mutex<Vec<TokenRequest>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let answer = Arc::new(answer);
    let provider = move |why: TokenRequest| {
        let n = {
            let mut calls = seen.lock().unwrap();
            calls.push(why);
            calls.len() - 1
        };
        let answer = answer.clone();
        async move { answer(why, n) }
    };
    (
        ClientConfigBuilder(Box::new(move |url: String| ClientConfig {
            backoff: fast_backoff(),
            ..ClientConfig::new(url).with_token_provider(provider.clone())
        })),
        calls,
    )
}

struct ClientConfigBuilder(Box<dyn Fn(String) -> ClientConfig>);

#[tokio::test]
async fn connects_with_the_provider_and_answers_requests() {
    let server = TestServer::start(jwt_config()).await;
    let (config, calls) = recording(|_, _| Ok(Some(token("alice", &["user"]))));
    let (client, mut events) = Client::connect((config.0)(server.url())).unwrap();
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    assert!(matches!(seen[0], ClientEvent::Connecting { attempt: 0 }));
    assert!(
        matches!(seen.last(), Some(ClientEvent::Connected { sub, roles, .. }) if sub == "alice" && roles == &["user"])
    );
    client.ping().await.unwrap();
    assert_eq!(*calls.lock().unwrap(), [TokenRequest::Connect]);
    client.close().await;
    until(&mut events, |e| matches!(e, ClientEvent::Stopped { .. })).await;
    server.stop().await;
}

#[tokio::test]
async fn refreshes_in_band_before_expiry() {
    let server = TestServer::start(jwt_config()).await;
    let (config, calls) = recording(|why, _| {
        let ttl = if why == TokenRequest::Connect { 3 } else { 3600 };
        Ok(Some(hs256(json!({"sub": "alice", "exp": now() + ttl}))))
    });
    let (client, mut events) = Client::connect((config.0)(server.url())).unwrap();
    until(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Refreshed { .. })).await;
    assert!(!seen.iter().any(|e| matches!(e, ClientEvent::Disconnected { .. })), "{seen:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    client.ping().await.unwrap();
    assert_eq!(calls.lock().unwrap()[..2], [TokenRequest::Connect, TokenRequest::Refresh]);
    server.stop().await;
}

#[tokio::test]
async fn a_token_source_whose_tokens_keep_being_refused_is_stopped_after_three() {
    let server = TestServer::start(jwt_config()).await;
    let (config, calls) = recording(|_, _| Ok(Some("not a valid token".to_string())));
    let (_client, mut events) = Client::connect((config.0)(server.url())).unwrap();
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Stopped { .. })).await;
    assert!(
        matches!(seen.last(), Some(ClientEvent::Stopped { code: Some(4001), .. })),
        "stopped with the refusal's code: {:?}",
        seen.last()
    );
    assert_eq!(
        *calls.lock().unwrap(),
        [TokenRequest::Connect, TokenRequest::Rejected, TokenRequest::Rejected],
        "three tokens tried, then no more attempts against the server's failure limit"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_rejected_token_is_replaced_on_reconnect() {
    let server = TestServer::start(jwt_config()).await;
    let (config, calls) = recording(|_, n| Ok(Some(if n == 0 { "stale-garbage".into() } else { token("alice", &[]) })));
    let (client, mut events) = Client::connect((config.0)(server.url())).unwrap();
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    assert!(seen.iter().any(|e| matches!(e, ClientEvent::Disconnected { code: Some(4001), reason } if reason.contains("token_malformed"))), "{seen:?}");
    assert_eq!(*calls.lock().unwrap(), [TokenRequest::Connect, TokenRequest::Rejected]);
    client.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn forbidden_stops_the_client() {
    let server = TestServer::start(jwt_config()).await;
    // The refresh returns a token for someone else: the server answers 4003.
    let (config, _) = recording(|why, _| {
        let sub = if why == TokenRequest::Connect { "alice" } else { "mallory" };
        Ok(Some(hs256(json!({"sub": sub, "exp": now() + 3}))))
    });
    let (client, mut events) = Client::connect((config.0)(server.url())).unwrap();
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Stopped { .. })).await;
    assert!(matches!(seen.last(), Some(ClientEvent::Stopped { code: Some(4003), .. })), "{seen:?}");
    assert!(client.ping().await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn expiry_leads_to_a_refresh_on_reconnect() {
    let server = TestServer::start(jwt_config()).await;
    let exp = now() + 2;
    // The identity provider is "down" until after the first token expired.
    let (config, calls) = recording(move |why, _| match why {
        TokenRequest::Connect => Ok(Some(hs256(json!({"sub": "alice", "exp": exp})))),
        _ if now() <= exp => Err("identity provider unavailable".into()),
        _ => Ok(Some(token("alice", &[]))),
    });
    let (client, mut events) = Client::connect((config.0)(server.url())).unwrap();
    until(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Disconnected { .. })).await;
    assert!(matches!(seen.last(), Some(ClientEvent::Disconnected { code: Some(4100), .. })), "{seen:?}");
    until(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    client.ping().await.unwrap();
    assert!(calls.lock().unwrap()[1..].iter().all(|why| *why == TokenRequest::Refresh));
    server.stop().await;
}

#[tokio::test]
async fn reconnects_after_a_restart_and_delivers_queued_requests() {
    let first = TestServer::start(jwt_config()).await;
    let addr = first.addr;
    let (config, _) = recording(|_, _| Ok(Some(token("alice", &[]))));
    let (client, mut events) = Client::connect((config.0)(first.url())).unwrap();
    until(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    first.stop().await;
    until(&mut events, |e| matches!(e, ClientEvent::Disconnected { code: Some(1001), .. })).await;
    // A request made while the server is down waits for the next connection.
    let queued = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let second = TestServer::on(listener, jwt_config()).await;
    until(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    queued.await.unwrap().unwrap();
    second.stop().await;
}

#[tokio::test]
async fn a_signed_out_provider_stops_the_client() {
    let server = TestServer::start(jwt_config()).await;
    let (config, _) = recording(|_, _| Ok(None));
    let (_client, mut events) = Client::connect((config.0)(server.url())).unwrap();
    let seen = until(&mut events, |e| matches!(e, ClientEvent::Stopped { .. })).await;
    assert!(matches!(seen.last(), Some(ClientEvent::Stopped { reason, .. }) if reason.contains("no token")));
    server.stop().await;
}

/// With 2 messages a second and a burst of 3, a client with three synced
/// collections and queued writes reconnects after a restart: it paces its
/// `SYNC`s and replay within the limits `AUTH_ACK` announced and is never
/// closed with 4029 (before: refused, retried, closed, again, without end).
#[tokio::test]
async fn resubscribing_under_a_tight_message_rate_is_paced() {
    let limited = || {
        let mut config = jwt_config();
        config.session.messages_per_second = 2;
        config.session.message_burst = 3;
        config
    };
    let first = TestServer::start(limited()).await;
    let addr = first.addr;
    let (config, _) = recording(|_, _| Ok(Some(token("alice", &[]))));
    let (client, mut events) = Client::connect((config.0)(first.url())).unwrap();
    for name in ["a", "b", "c"] {
        client.sync(name);
    }
    until(&mut events, |e| matches!(e, ClientEvent::Synced { collection, .. } if collection == "c")).await;
    first.stop().await;
    until(&mut events, |e| matches!(e, ClientEvent::Disconnected { code: Some(1001), .. })).await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(client.write(name, "k", name.into()).await.unwrap());
    }
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let second = TestServer::on(listener, limited()).await;
    let mut seen = Vec::new();
    let mut synced = std::collections::HashSet::new();
    let mut settled = std::collections::HashSet::new();
    while synced.len() < 3 || settled.len() < 3 {
        let more =
            until(&mut events, |e| matches!(e, ClientEvent::Synced { .. } | ClientEvent::OpSettled { .. })).await;
        match more.last() {
            Some(ClientEvent::Synced { collection, .. }) => synced.insert(collection.clone()),
            Some(ClientEvent::OpSettled { op_id, rejected: None, .. }) => settled.insert(op_id.clone()),
            other => panic!("{other:?}"),
        };
        seen.extend(more);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    let trouble: Vec<_> = seen
        .iter()
        .filter(|e| matches!(e, ClientEvent::Disconnected { .. } | ClientEvent::OpRetrying { .. }))
        .collect();
    assert!(trouble.is_empty(), "paced within the limits, nothing refused: {trouble:?}");
    second.stop().await;
}
