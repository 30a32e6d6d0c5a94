//! A real local HTTP server standing in for an identity provider: serves a
//! JWKS and an introspection endpoint, counts requests, and can stall or fail.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Default)]
pub struct IdpState {
    pub jwks: Mutex<Value>,
    pub jwks_hits: AtomicUsize,
    pub introspect_hits: AtomicUsize,
    /// token → introspection answer (status 200).
    pub answers: Mutex<HashMap<String, Value>>,
    /// token → a raw answer (status, body), taking precedence over `answers`.
    pub raw_answers: Mutex<HashMap<String, (u16, String)>>,
    /// Delay every answer by this many milliseconds.
    pub stall_ms: AtomicU64,
    /// Answer 503 to everything.
    pub fail: AtomicBool,
    pub last_authorization: Mutex<Option<String>>,
    pub last_content_type: Mutex<Option<String>>,
    pub last_body: Mutex<String>,
}

pub struct Idp {
    pub addr: SocketAddr,
    pub state: Arc<IdpState>,
}

impl Idp {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(IdpState::default());
        *state.jwks.lock().unwrap() = serde_json::json!({"keys": []});
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(request, state.clone()));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub fn introspect_url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }

    pub fn set_jwks(&self, keys: Vec<Value>) {
        *self.state.jwks.lock().unwrap() = serde_json::json!({ "keys": keys });
    }

    pub fn answer(&self, token: &str, answer: Value) {
        self.state.answers.lock().unwrap().insert(token.to_string(), answer);
    }

    /// Answers introspections of `token` with exactly this status and body.
    pub fn answer_raw(&self, token: &str, status: u16, body: &str) {
        self.state.raw_answers.lock().unwrap().insert(token.to_string(), (status, body.to_string()));
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn introspect_hits(&self) -> usize {
        self.state.introspect_hits.load(Ordering::SeqCst)
    }
}

async fn answer(request: Request<Incoming>, state: Arc<IdpState>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let authorization = header("authorization");
    let content_type = header("content-type");
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let stall = state.stall_ms.load(Ordering::SeqCst);
    if stall > 0 {
        tokio::time::sleep(Duration::from_millis(stall)).await;
    }
    let respond = |status: u16, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        response
    };
    if state.fail.load(Ordering::SeqCst) {
        if path == "/jwks" {
            state.jwks_hits.fetch_add(1, Ordering::SeqCst);
        } else {
            state.introspect_hits.fetch_add(1, Ordering::SeqCst);
        }
        return Ok(respond(503, "unavailable".into()));
    }
    Ok(match path.as_str() {
        "/jwks" => {
            state.jwks_hits.fetch_add(1, Ordering::SeqCst);
            let mut response = respond(200, state.jwks.lock().unwrap().to_string());
            response.headers_mut().insert("cache-control", "public, max-age=300".parse().unwrap());
            response
        }
        "/introspect" => {
            state.introspect_hits.fetch_add(1, Ordering::SeqCst);
            *state.last_authorization.lock().unwrap() = authorization;
            *state.last_content_type.lock().unwrap() = content_type.clone();
            let text = String::from_utf8_lossy(&body).to_string();
            *state.last_body.lock().unwrap() = text.clone();
            let token = if content_type.as_deref() == Some("application/json") {
                serde_json::from_str::<Value>(&text).ok().and_then(|v| v["token"].as_str().map(str::to_string))
            } else {
                form_urlencoded::parse(text.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
            };
            if let Some((status, body)) = token.as_ref().and_then(|t| state.raw_answers.lock().unwrap().get(t).cloned())
            {
                return Ok(respond(status, body));
            }
            let answer = token
                .and_then(|t| state.answers.lock().unwrap().get(&t).cloned())
                .unwrap_or(serde_json::json!({"active": false}));
            respond(200, answer.to_string())
        }
        _ => respond(404, "not found".into()),
    })
}

/// A plain HTTP request to the syncgate server (admin API), returning status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// An RFC 7662 introspector against `idp`, caching answers for `ttl` (and so
/// revalidating sessions every `ttl`).
pub fn introspector(idp: &Idp, ttl: std::time::Duration) -> std::sync::Arc<syncgate::auth::Introspector> {
    let settings = syncgate::auth::IntrospectSettings {
        url: idp.introspect_url(),
        bearer: "internal-admin-token".into(),
        cache_ttl: ttl,
        cache_max_entries: 100,
        form: false,
        shape: syncgate::auth::IntrospectShape::Rfc7662,
        fail_open: false,
        leeway_secs: 0,
    };
    let client = syncgate::http_client::HttpClient::new(std::time::Duration::from_secs(2)).unwrap();
    std::sync::Arc::new(syncgate::auth::Introspector::new(settings, client))
}
