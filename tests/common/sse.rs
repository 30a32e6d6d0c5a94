//! A Server-Sent Events reader for the change feed tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

/// Events of a Server-Sent Events stream: `(event, id, data)`.
pub struct Feed {
    body: hyper::body::Incoming,
    buffer: String,
}

impl Feed {
    pub async fn open(addr: SocketAddr, path: &str, bearer: &str, last_event_id: Option<&str>) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        let mut request =
            hyper::Request::get(path).header("host", "x").header("authorization", format!("Bearer {bearer}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { body: response.into_body(), buffer: String::new() }
    }

    pub async fn next(&mut self) -> (String, Option<String>, serde_json::Value) {
        self.next_or_end().await.expect("the feed is still open")
    }

    /// The next event, or `None` once the server ended the stream.
    pub async fn next_or_end(&mut self) -> Option<(String, Option<String>, serde_json::Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), None, serde_json::Value::Null);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.into();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).unwrap();
                    }
                }
                if !event.is_empty() {
                    return Some((event, id, data));
                }
                continue;
            }
            let frame = tokio::time::timeout(std::time::Duration::from_secs(15), self.body.frame())
                .await
                .expect("an event within 15 s");
            let Some(Ok(frame)) = frame else { return None };
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}
