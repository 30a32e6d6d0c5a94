//! One request, two surfaces: the HTTP API and the WebSocket session refuse
//! the same request with the same code and the same message, because both
//! go through the node's one set of checks.

mod common;

use common::idp::http;
use common::{RawWs, TestServer, jwt_config, now, token};
use rmpv::Value;
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use syncgate::rules::{Policy, RuleSet};

const RULES: &str = r#"
[[rules]]
roles = ["user"]
resource = "open/**"
actions = ["read", "write"]
"#;

fn config() -> ServerConfig {
    let mut config = jwt_config();
    config.policy = Policy::with_rules(RuleSet::parse(RULES).unwrap());
    config.session.max_value_bytes = 64;
    config.session.max_batch_ops = 3;
    config
}

/// A request as each surface spells it.
enum Request {
    Publish { topic: &'static str, data: serde_json::Value },
    Write { collection: &'static str, values: Vec<serde_json::Value> },
    Read { collection: &'static str, since: Option<&'static str> },
}

fn msgpack(value: &serde_json::Value) -> Value {
    rmpv::ext::to_value(value).unwrap()
}

/// `(code, message)` of the WebSocket session's refusal (a request-level
/// `ERROR`, or the first refused op of an `OP_RESULT`).
async fn over_the_socket(ws: &mut RawWs, id: u64, request: &Request) -> (String, String) {
    let message = match request {
        Request::Publish { topic, data } => ClientMessage::Pub { id, topic: topic.to_string(), data: msgpack(data) },
        Request::Write { collection, values } => ClientMessage::OpBatch {
            id,
            ops: values
                .iter()
                .enumerate()
                .map(|(n, value)| {
                    OpInput::Op(RawOp {
                        op_id: Value::from(n),
                        collection: collection.to_string(),
                        key: format!("k{n}"),
                        value: msgpack(value),
                        hlc: format!("{}:0:device", now() * 1000),
                    })
                })
                .collect(),
        },
        Request::Read { collection, since } => {
            ClientMessage::Sync { id, collection: collection.to_string(), since: since.map(str::to_string) }
        }
    };
    ws.send(&message).await;
    match ws.msg_where(|m| matches!(m, ServerMessage::Error { id: Some(i), .. } | ServerMessage::OpResult { id: i, .. } if *i == id)).await {
        ServerMessage::Error { code, message, .. } => (code, message),
        ServerMessage::OpResult { results, .. } => {
            let refused = results.into_iter().find(|r| !r.ok).expect("a refused op");
            (refused.code.unwrap(), refused.message.unwrap())
        }
        other => panic!("{other:?}"),
    }
}

/// `(code, message)` of the HTTP API's refusal (the body, or the first refused op's result).
async fn over_http(server: &TestServer, bearer: &str, request: &Request) -> (String, String) {
    let (method, path, body) = match request {
        Request::Publish { topic, data } => {
            ("POST", "/api/publish".to_string(), Some(json!({"topic": topic, "data": data})))
        }
        Request::Write { collection, values } => {
            let ops: Vec<_> =
                values.iter().enumerate().map(|(n, v)| json!({"key": format!("k{n}"), "value": v})).collect();
            ("POST", format!("/api/collections/{collection}/ops"), Some(json!({ "ops": ops })))
        }
        Request::Read { collection, since } => {
            let query = since.map(|s| format!("?since={s}")).unwrap_or_default();
            ("GET", format!("/api/collections/{collection}{query}"), None)
        }
    };
    let body = body.map(|b| b.to_string());
    let (status, text) = http(server.addr, method, &path, Some(bearer), body.as_deref()).await;
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
    let refusal = match answer.get("results") {
        Some(results) => {
            results.as_array().unwrap().iter().find(|r| r["ok"] == json!(false)).expect("a refused op").clone()
        }
        None => answer,
    };
    (refusal["code"].as_str().unwrap().to_string(), refusal["message"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn the_http_api_and_the_socket_refuse_alike() {
    let server = TestServer::start(config()).await;
    let bearer = token("alice", &["user"]);
    let mut ws = RawWs::authed(server.addr, &bearer).await;
    let big = json!("x".repeat(100));
    let table = [
        (Request::Publish { topic: "closed/room", data: json!("hi") }, "forbidden"),
        (Request::Publish { topic: "open/./room", data: json!("hi") }, "invalid"),
        (Request::Publish { topic: "open/room", data: big.clone() }, "invalid"),
        (Request::Write { collection: "closed/todos", values: vec![json!(1)] }, "forbidden"),
        (Request::Write { collection: "open/todos", values: vec![big.clone()] }, "invalid"),
        (Request::Write { collection: "open/todos", values: vec![json!(1); 4] }, "invalid"),
        (Request::Read { collection: "closed/todos", since: None }, "forbidden"),
        (Request::Read { collection: "open/todos", since: Some("not-a-cursor") }, "invalid"),
    ];
    for (id, (request, code)) in table.iter().enumerate() {
        let socket = over_the_socket(&mut ws, id as u64 + 1, request).await;
        let api = over_http(&server, &bearer, request).await;
        assert_eq!(socket.0, *code, "{socket:?}");
        assert_eq!(socket, api, "request {id}: the same code and message on both surfaces");
    }
    server.stop().await;
}
