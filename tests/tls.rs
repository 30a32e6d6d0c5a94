//! `wss://`: the server with a generated certificate, the real client trusting it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use syncgate_client::{Client, ClientConfig, ClientEvent};

#[tokio::test]
async fn wss_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let mut config = jwt_config();
    config.tls = Some(syncgate::tls::server_config(&cert_path, &key_path).unwrap());
    let server = TestServer::start(config).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let client_config = ClientConfig {
        tls: Some(Arc::new(tls)),
        ..ClientConfig::new(url).with_token_provider(|_| async { Ok(Some(token("alice", &[]))) })
    };
    let (client, mut events) = Client::connect(client_config).unwrap();
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.recv().await {
            if let ClientEvent::Connected { sub, .. } = event {
                return sub;
            }
        }
        String::new()
    })
    .await
    .unwrap();
    assert_eq!(connected, "alice");
    client.ping().await.unwrap();

    // A plain-text client gets nowhere on the TLS port.
    assert!(RawWs::try_connect("/ws", server.addr).await.is_err());
    server.stop().await;
}

#[test]
fn mismatched_or_missing_tls_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.path().join("a.pem");
    let key = dir.path().join("b.key");
    std::fs::write(&cert, a.cert.pem()).unwrap();
    std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
    assert!(syncgate::tls::server_config(&cert, &key).is_err());
    assert!(syncgate::tls::server_config(&dir.path().join("missing.pem"), &key).is_err());
}
