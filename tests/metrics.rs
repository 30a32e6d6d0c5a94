//! `GET /metrics`: OpenMetrics text that a parser accepts, behind the admin
//! token, whose counters move as a scripted session runs.

mod common;

use common::idp::http;
use common::{RawWs, TestServer, hs256, jwt_config, now, token};
use openmetrics_parser::{MetricNumber, OpenMetricsValue, openmetrics::parse_openmetrics};
use rmpv::Value;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};

/// The value of `family{label}` in an exposition (0 when absent).
fn value(text: &str, family: &str, label: &[&str]) -> f64 {
    let exposition = parse_openmetrics(text).unwrap_or_else(|e| panic!("not OpenMetrics text: {e:?}\n{text}"));
    let Some(family) = exposition.families.get(family) else { return 0.0 };
    let labels: Vec<String> = label.iter().map(|l| l.to_string()).collect();
    let number = |n: &MetricNumber| n.as_f64();
    match family.get_sample_by_label_values(&labels).map(|s| &s.value) {
        Some(OpenMetricsValue::Counter(c)) => number(&c.value),
        Some(OpenMetricsValue::Gauge(g)) => number(g),
        Some(other) => panic!("unexpected sample {other:?}"),
        None => 0.0,
    }
}

async fn scrape(server: &TestServer) -> String {
    let (status, body) = http(server.addr, "GET", "/metrics", Some("admin-secret"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn counters_move_as_a_session_runs_and_parse_as_openmetrics() {
    let mut config = ServerConfig { admin_token: Some("admin-secret".into()), ..jwt_config() };
    config.limits.outbound_queue = 8;
    let server = TestServer::start(config).await;
    assert_eq!(http(server.addr, "GET", "/metrics", None, None).await.0, 401, "behind the admin token");
    let before = scrape(&server).await;
    assert_eq!(value(&before, "syncgate_auth_failures", &["token_expired"]), 0.0);

    let expired = hs256(serde_json::json!({"sub": "late", "exp": now() - 600}));
    assert_eq!(RawWs::refused(server.addr, &expired).await.0, "token_expired");
    let mut slow = RawWs::authed(server.addr, &token("slow", &[])).await;
    let mut publisher = RawWs::authed(server.addr, &token("pub", &[])).await;
    slow.send(&ClientMessage::Sub { id: 1, topic: "firehose".into() }).await;
    slow.msg_where(|m| matches!(m, ServerMessage::Ok { id: 1 })).await;
    let op = RawOp {
        op_id: Value::from("o1"),
        collection: "c".into(),
        key: "k".into(),
        value: Value::from(1),
        hlc: format!("{}:0:n", now() * 1000),
    };
    publisher.send(&ClientMessage::OpBatch { id: 2, ops: vec![OpInput::Op(op)] }).await;
    publisher.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await;
    let during = scrape(&server).await;
    assert_eq!(value(&during, "syncgate_connections", &["authenticated"]), 2.0, "{during}");
    // The slow subscriber reads nothing while 18 MB are published: 4200.
    let big = Value::Binary(vec![7; 60 * 1024]);
    for i in 0..300u64 {
        publisher.send(&ClientMessage::Pub { id: 10 + i, topic: "firehose".into(), data: big.clone() }).await;
        publisher.msg_where(|m| matches!(m, ServerMessage::Ok { .. })).await;
    }
    assert_eq!(slow.close_code().await, 4200);

    let after = common::eventually("the 4200 close is counted", || {
        let server = &server;
        async move {
            let text = scrape(server).await;
            (value(&text, "syncgate_closes", &["4200"]) == 1.0).then_some(text)
        }
    })
    .await;
    assert_eq!(value(&after, "syncgate_auth_failures", &["token_expired"]), 1.0, "{after}");
    assert_eq!(value(&after, "syncgate_ops", &["ok"]), 1.0);
    assert!(value(&after, "syncgate_deliveries", &[]) >= 1.0, "the slow subscriber got some before falling behind");
    assert!(value(&after, "syncgate_messages_in", &["PUB"]) >= 300.0);
    assert_eq!(value(&after, "syncgate_handshakes", &["failed"]), 1.0);
    server.stop().await;
}
