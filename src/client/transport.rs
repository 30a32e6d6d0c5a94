//! Opening a WebSocket to a syncgate URL (`ws://` or `wss://`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::{WebSocket, handshake};
use http_body_util::Empty;
use hyper::Request;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use super::ClientError;

/// Connects and performs the WebSocket handshake; `bind` picks the local
/// address (the load generator uses it to act as other client IPs).
pub(crate) async fn open(
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
    let request = Request::builder()
        .method("GET")
        .uri(path)
        .header("Host", authority)
        .header("Upgrade", "websocket")
        .header("Connection", "upgrade")
        .header("Sec-WebSocket-Key", handshake::generate_key())
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let ws = if secure {
        let config = tls.ok_or_else(|| ClientError::Config("wss:// needs ClientConfig::tls".into()))?;
        let name =
            ServerName::try_from(bare_host).map_err(|e| ClientError::Config(format!("bad TLS server name: {e}")))?;
        let stream = TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Io(format!("TLS: {e}")))?;
        handshake::client(&SpawnExecutor, request, stream).await
    } else {
        handshake::client(&SpawnExecutor, request, tcp).await
    };
    ws.map(|(ws, _)| ws).map_err(|e| ClientError::Io(format!("WebSocket handshake: {e}")))
}

/// Opens a TCP connection to `host:port`, from `bind` when given (the first
/// resolved address of the same family).
pub(crate) async fn connect(host: &str, port: u16, bind: Option<IpAddr>) -> std::io::Result<TcpStream> {
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

/// Runs hyper's connection future on the tokio runtime.
struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}
