//! The load generator's flood (`syncgate bench ops --flood-*`) against a real
//! server: it must produce the attack it reports, and the server must refuse
//! all of it while the writers carry on. No timings are asserted here; the
//! figures belong in the report. `--batches` bounds the work exactly, as the
//! instruction counts (`scripts/instructions.sh`) need.

mod common;

use std::time::Duration;

use common::{SECRET, TestServer, jwt_config};
use syncgate_tools::Seconds;
use syncgate_tools::loadgen::flood::FloodArgs;
use syncgate_tools::loadgen::{Credentials, OpsArgs, run_ops};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_auth_flood_from_another_ip_is_refused_while_writers_write() {
    let mut config = jwt_config();
    config.auth_failures_per_minute = 10;
    config.session.auth_timeout = Duration::from_secs(1);
    config.timeouts.header_read = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    let report = run_ops(OpsArgs {
        url: server.url(),
        credentials: Credentials { token_secret: Some(SECRET.into()), token: None },
        writers: 4,
        batch: 5,
        duration: Seconds(Duration::from_secs(3)),
        batches: None,
        value_bytes: 16,
        flood: FloodArgs {
            flood_idle: 20,
            flood_slowloris: 5,
            flood_bad_tokens: 50,
            // Another loopback address: the attacker's IP is blocked, the writers' is not.
            flood_from: vec!["127.0.0.2".parse().unwrap()],
        },
        reference: false,
    })
    .await
    .unwrap();

    eprintln!("{report}");
    assert_eq!(report.failed_writers(), 0, "{report}");
    assert!(report.accepted() > 0 && report.rejected() == 0, "{report}");
    let flood = report.flood().expect("flood report");
    assert_eq!(flood.bad_tokens_accepted(), 0, "{report}");
    assert!(flood.bad_tokens_failed() >= 10, "the first failures get AUTH_FAIL: {report}");
    assert!(flood.bad_tokens_refused() > 0, "then the IP is refused at the upgrade: {report}");
    assert!(flood.slowloris_cut() >= 5, "the header-read timeout cuts half-sent requests: {report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_bound_each_writer_to_exactly_that_many_answered_batches() {
    let server = TestServer::start(jwt_config()).await;
    let report = run_ops(OpsArgs {
        url: server.url(),
        credentials: Credentials { token_secret: Some(SECRET.into()), token: None },
        writers: 3,
        batch: 4,
        // Far longer than the work takes: only the bound can end the writers this early.
        duration: Seconds(Duration::from_secs(60)),
        batches: Some(5),
        value_bytes: 8,
        flood: FloodArgs::default(),
        reference: false,
    })
    .await
    .unwrap();

    assert_eq!(report.failed_writers(), 0, "{report}");
    assert_eq!(report.accepted() + report.rejected(), 3 * 5 * 4, "{report}");
}
