//! Opening a WebSocket to a syncgate URL (`ws://` or `wss://`).
//!
//! The upgrade request goes through hyper's HTTP/1 *client* connection and
//! the answer's `Sec-WebSocket-Accept` is checked here, so the client needs
//! neither hyper's server side nor fastwebsockets' `upgrade` feature (which
//! brings both).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use fastwebsockets::{Role, WebSocket};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use super::ClientError;

/// Connects and performs the WebSocket handshake; `bind` picks the local
/// address (the load generator uses it to act as other client IPs).
pub async fn open(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    bind: Option<IpAddr>,
) -> Result<WebSocket<TokioIo<Upgraded>>, ClientError> {
    let uri: hyper::Uri = url.parse().map_err(|e| ClientError::Config(format!("bad URL {url:?}: {e}")))?;
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(ClientError::Config(format!("URL {url:?} must start with ws:// or wss://")));
        }
    };
    let host = uri.host().ok_or_else(|| ClientError::Config(format!("URL {url:?} has no host")))?.to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let tcp = connect(&bare_host, port, bind).await.map_err(|e| ClientError::Io(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let key = BASE64.encode(fastrand::u128(..).to_le_bytes());
    let request = Request::builder()
        .method("GET")
        .uri(path)
        .header("Host", authority)
        .header("Upgrade", "websocket")
        .header("Connection", "upgrade")
        .header("Sec-WebSocket-Key", &key)
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Config(e.to_string()))?;
    if secure {
        let config = tls.ok_or_else(|| ClientError::Config("wss:// needs ClientConfig::tls".into()))?;
        let name =
            ServerName::try_from(bare_host).map_err(|e| ClientError::Config(format!("bad TLS server name: {e}")))?;
        let stream = TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Io(format!("TLS: {e}")))?;
        upgrade(request, &key, stream).await
    } else {
        upgrade(request, &key, tcp).await
    }
}

/// The `Sec-WebSocket-Accept` a server must answer to `key` (RFC 6455, 4.2.2).
fn accept_for(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64.encode(sha1.finalize())
}

/// Sends the upgrade request on `stream` and checks the answer.
async fn upgrade<S>(
    request: Request<Empty<Bytes>>,
    key: &str,
    stream: S,
) -> Result<WebSocket<TokioIo<Upgraded>>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: &dyn std::fmt::Display| ClientError::Io(format!("WebSocket handshake: {e}"));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(failed(&format!("the server answered {}", response.status())));
    }
    let accept = response.headers().get("sec-websocket-accept").and_then(|v| v.to_str().ok());
    if accept != Some(accept_for(key).as_str()) {
        return Err(failed(&"the server's Sec-WebSocket-Accept does not match the key"));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| failed(&e))?;
    Ok(WebSocket::after_handshake(TokioIo::new(upgraded), Role::Client))
}

/// Opens a TCP connection to `host:port`, from `bind` when given (the first
/// resolved address of the same family).
pub async fn connect(host: &str, port: u16, bind: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = bind else {
        return TcpStream::connect((host, port)).await;
    };
    let remote = tokio::net::lookup_host((host, port))
        .await?
        .find(|addr| addr.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| std::io::Error::other(format!("{host} has no address of the family of {local}")))?;
    let socket = if local.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(remote).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_accept_value_is_rfc_6455s() {
        // The example of RFC 6455, section 1.3.
        assert_eq!(super::accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
