//! The Postgres store against a real Postgres (`SYNCGATE_TEST_POSTGRES`):
//! the whole conformance suite, the check for a database several nodes share
//! (two handles writing while a third follows), migrations, epochs and
//! revocations. Each test uses schemas of its own.

mod common;

use std::sync::Arc;

use common::postgres::{fresh_schema, fresh_store, options, sql, url};
use syncgate::store::{PostgresOptions, PostgresStore, RevocationStore, Revoked, Store, postgres_new_epoch};

#[tokio::test]
async fn the_postgres_store_passes_the_conformance_suite() {
    let Some(url) = url("the_postgres_store_passes_the_conformance_suite") else { return };
    syncgate::store::conformance::run(|| fresh_store(&url, "conf")).await;
}

#[tokio::test]
async fn two_handles_on_one_schema_never_let_a_follower_miss_a_change() {
    let Some(url) = url("two_handles_on_one_schema_never_let_a_follower_miss_a_change") else { return };
    for _ in 0..3 {
        syncgate::store::conformance::run_shared(|| async {
            let schema = fresh_schema("shared");
            let open =
                || async { Arc::new(PostgresStore::open(options(&url, &schema)).await.unwrap()) as Arc<dyn Store> };
            [open().await, open().await, open().await]
        })
        .await;
    }
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let Some(url) = url("a_schema_newer_than_this_build_is_refused") else { return };
    let schema = fresh_schema("newer");
    drop(PostgresStore::open(options(&url, &schema)).await.unwrap());
    sql(&url, &format!("INSERT INTO \"{schema}\".migrations (version) VALUES (99)")).await;
    let refused = PostgresStore::open(options(&url, &schema)).await.err().expect("refused");
    assert!(refused.0.contains("version 99, newer than this syncgate knows"), "{refused}");
    let bad = PostgresStore::open(options(&url, "Robert'); DROP TABLE x;--")).await.err().expect("refused");
    assert!(bad.0.contains("--postgres-schema"), "{bad}");
}

#[tokio::test]
async fn an_unreachable_database_is_named_in_one_line() {
    let refused =
        PostgresStore::open(options("postgres://postgres@127.0.0.1:1/test", "syncgate")).await.err().expect("refused");
    assert!(refused.0.contains("127.0.0.1:1"), "{refused}");
    assert!(!refused.0.contains('\n'), "{refused}");
}

#[tokio::test]
async fn a_new_epoch_makes_running_nodes_refuse_until_restarted() {
    let Some(url) = url("a_new_epoch_makes_running_nodes_refuse_until_restarted") else { return };
    let schema = fresh_schema("epoch");
    let running = PostgresStore::open(options(&url, &schema)).await.unwrap();
    let before = running.epoch().await.unwrap();
    running.check().await.unwrap();
    let drawn = postgres_new_epoch(options(&url, &schema)).await.unwrap();
    assert_ne!(drawn, before);
    let refused = running.check().await.expect_err("a node with the old epoch is not ready");
    assert!(refused.0.contains("restart this node"), "{refused}");
    assert!(running.scan_since("c", 0).await.is_err(), "and serves no reads");
    let typo = postgres_new_epoch(options(&url, &fresh_schema("missing"))).await.expect_err("nothing to renew");
    assert!(typo.0.contains("holds no syncgate store"), "{typo}");
    let restarted = PostgresStore::open(options(&url, &schema)).await.unwrap();
    assert_eq!(restarted.epoch().await.unwrap(), drawn);
    restarted.check().await.unwrap();
}

#[tokio::test]
async fn revocations_saved_through_one_node_load_on_another() {
    let Some(url) = url("revocations_saved_through_one_node_load_on_another") else { return };
    let schema = fresh_schema("revoked");
    let (a, b) = (
        PostgresStore::open(options(&url, &schema)).await.unwrap(),
        PostgresStore::open(options(&url, &schema)).await.unwrap(),
    );
    let saved = [Revoked::Jti("t1".into()), Revoked::Subject { sub: "mallory".into(), issued_before: 1_800_000_000 }];
    for revoked in &saved {
        a.save(revoked).await.unwrap();
    }
    assert_eq!(b.load().await.unwrap(), saved);
}

/// TLS to Postgres is verified or not used: `sslmode=require` against a
/// server whose certificate the bundled roots do not vouch for (the test
/// server has none, or Debian's self-signed one) is refused in one line;
/// `prefer` without a CA file stays plain text; an unreadable CA file is refused.
#[tokio::test]
async fn tls_to_postgres_follows_sslmode() {
    let Some(url) = url("tls_to_postgres_follows_sslmode") else { return };
    let with = |mode: &str| {
        let separator = if url.contains('?') { '&' } else { '?' };
        PostgresOptions { url: format!("{url}{separator}sslmode={mode}"), ..options(&url, &fresh_schema("tls")) }
    };
    let refused =
        PostgresStore::open(with("require")).await.err().expect("sslmode=require without a verifiable server");
    assert!(refused.0.contains("does not answer"), "one line naming the failure: {}", refused.0);
    assert!(PostgresStore::open(with("prefer")).await.is_ok(), "prefer without a CA file: plain text, as before");
    let missing =
        PostgresOptions { ca_file: Some("/nonexistent/ca.pem".into()), ..options(&url, &fresh_schema("tls")) };
    let refused = PostgresStore::open(missing).await.err().expect("an unreadable CA file");
    assert!(refused.0.contains("--postgres-ca-file"), "{}", refused.0);
}
