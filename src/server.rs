//! The accept loop and the HTTP side: `/ws` upgrades, `/healthz`, `/readyz`,
//! the server API (`/api/…`, in `api`), TLS, shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::upgrade;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{COOKIE, HeaderValue, ORIGIN, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::connection;
use crate::ip_slots::SlotGuard;
use crate::node::Node;

/// What one accepted connection holds until it ends: a global and a per-IP
/// slot (none for a trusted proxy: each WebSocket it carries takes its
/// client's slot at the upgrade).
type Slots = (OwnedSemaphorePermit, Option<SlotGuard>);

/// Serves syncgate on a bound listener until `shutdown` is cancelled.
///
/// On shutdown the server stops accepting, closes every WebSocket with 1001,
/// waits up to `timeouts.shutdown_grace` for connections to finish, and returns.
/// Tests and embedding apps bind `127.0.0.1:0` and call this directly. The
/// admin API (when configured) shares this listener; see [`run_with_admin`].
pub async fn run(listener: TcpListener, config: ServerConfig, shutdown: CancellationToken) -> std::io::Result<()> {
    run_with_admin(listener, None, config, shutdown).await
}

/// Like [`run`], with the admin API (`/admin/*`) served only on `admin` (for
/// example a loopback address) when it is given, and absent (404) from the
/// public listener.
pub async fn run_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve(listener, admin, Node::open(config, shutdown).await?).await
}

/// Serves an opened [`Node`] (see [`run`]) until its shutdown token is
/// cancelled: for embedders and tests that keep the node to act on it while
/// it serves (reload rules, drain, read metrics).
pub async fn serve(listener: TcpListener, admin: Option<TcpListener>, node: Arc<Node>) -> std::io::Result<()> {
    let config = &node.config;
    let tls = config.tls.clone().map(TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
    let grace = config.timeouts.shutdown_grace;
    let shutdown = node.shutdown.clone();
    let admin_here = admin.is_none();
    info!(addr = %listener.local_addr()?, tls = tls.is_some(), "syncgate listening");
    if let Some(admin) = admin {
        info!(admin_addr = %admin.local_addr()?, "admin API listening");
        node.tracker.spawn(serve_admin(admin, node.clone(), tls.clone()));
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "connection limit reached; closing");
            node.metrics.refused("connections");
            continue;
        };
        let proxied = crate::client_address::is_trusted(&config.trusted_proxies, peer.ip());
        let slot = if proxied { None } else { node.ip_slots.connection(peer.ip()) };
        if slot.is_none() && !proxied {
            debug!(%peer, "per-IP connection limit reached; closing");
            node.metrics.refused("connections_per_ip");
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let surface = Surface::Public { slots: Arc::new((permit, slot)), admin_here };
        // Boxed: the HTTP connection's future is several KiB, and the spawn
        // would otherwise copy it through each of its layers (callgrind:
        // ≈ 4,000 instructions of memcpy per accepted connection).
        node.tracker.spawn(Box::pin(accept_connection(tcp, peer, node.clone(), tls.clone(), surface)));
    }
    drop(listener);
    node.tracker.close();
    if timeout(grace, node.tracker.wait()).await.is_err() {
        warn!("connections still open after the shutdown grace period; dropping them");
    }
    info!("syncgate stopped");
    Ok(())
}

/// Which routes a listener serves.
#[derive(Clone)]
enum Surface {
    /// `/ws`, `/healthz`, `/readyz`, `/api/*` (and `/admin/*` when
    /// `admin_here`, that is when it has no listener of its own); the slots
    /// live as long as the HTTP connection or the WebSocket it became.
    Public { slots: Arc<Slots>, admin_here: bool },
    /// Only `/admin/*`.
    Admin,
}

/// Connections the admin listener holds at once; more are closed at accept.
/// The admin API serves a few operators and scripts, never the public.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Accepts admin API connections until shutdown, at most [`ADMIN_MAX_CONNECTIONS`] at once.
async fn serve_admin(listener: TcpListener, node: Arc<Node>, tls: Option<TlsAcceptor>) {
    let permits = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    debug!(%peer, "admin connection limit reached; closing");
                    node.metrics.refused("admin_connections");
                    continue;
                };
                let connection = accept_connection(tcp, peer, node.clone(), tls.clone(), Surface::Admin);
                node.tracker.spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    node: Arc<Node>,
    tls: Option<TlsAcceptor>,
    surface: Surface,
) {
    match tls {
        None => serve_http(tcp, peer, node, surface).await,
        Some(acceptor) => match timeout(node.config.timeouts.tls_handshake, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => serve_http(stream, peer, node, surface).await,
            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => debug!(%peer, "TLS handshake timed out"),
        },
    }
}

async fn serve_http<IO>(io: IO, peer: SocketAddr, node: Arc<Node>, surface: Surface)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service_node = node.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let node = service_node.clone();
        let surface = surface.clone();
        let peer = crate::client_address::client_address(&node.config.trusted_proxies, peer, request.headers());
        async move {
            Ok::<_, Infallible>(match surface {
                Surface::Public { .. } if request.uri().path().starts_with("/api/") => {
                    crate::api::handle(request, peer, node).await
                }
                Surface::Public { .. } if request.uri().path().starts_with("/vault/") => {
                    crate::api::vault::handle(request, peer, node).await
                }
                Surface::Public { slots, admin_here } => {
                    route(request, peer, node, slots, admin_here).await.map(BodyExt::boxed)
                }
                Surface::Admin if is_admin_path(request.uri().path()) => {
                    crate::admin::handle(request, peer, node).await.map(BodyExt::boxed)
                }
                Surface::Admin => text(StatusCode::NOT_FOUND, "not found\n").map(BodyExt::boxed),
            })
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(node.config.timeouts.header_read)
        .max_buf_size(node.config.limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = node.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = timeout(std::time::Duration::from_secs(1), connection).await;
        }
    }
}

async fn route(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    node: Arc<Node>,
    permit: Arc<Slots>,
    admin_here: bool,
) -> Response<Full<Bytes>> {
    // Only the path is ever logged: the query may hold a token.
    if is_admin_path(request.uri().path()) {
        if !admin_here {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        return crate::admin::handle(request, peer, node).await;
    }
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match node.readiness().await {
            Ok(ready) if ready.backplane_down => {
                text(StatusCode::OK, "ready (the backplane is down: serving this node's clients only)\n")
            }
            Ok(_) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {}\n", why.public)),
        },
        (_, "/ws") => {
            if !upgrade::is_upgrade_request(&request) {
                let mut response = text(StatusCode::UPGRADE_REQUIRED, "this endpoint speaks WebSocket\n");
                response.headers_mut().insert(UPGRADE, HeaderValue::from_static("websocket"));
                return response;
            }
            // Cross-site WebSocket hijacking: a browser on another Origin may not connect at all.
            let origin = request.headers().get(ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
            let allowed = &node.config.allowed_origins;
            let origin_allowed = origin.as_deref().is_some_and(|o| allowed.iter().any(|a| a == o));
            if !allowed.is_empty() && origin.is_some() && !origin_allowed {
                debug!(%peer, "upgrade refused: Origin not allowed");
                node.metrics.refused("origin");
                return text(StatusCode::FORBIDDEN, "origin not allowed\n");
            }
            if node.auth_failures.is_blocked(peer.ip()) {
                node.metrics.refused("auth_failures");
                return text(StatusCode::TOO_MANY_REQUESTS, "too many failed authentications; retry later\n");
            }
            let cookie_token = match &node.config.auth_cookie {
                Some(name) if origin_allowed => cookie(&request, name),
                _ => None,
            };
            let query_token = request.uri().query().and_then(token_from_query).or(cookie_token);
            // Behind a trusted proxy, the client's own connection slot.
            let client_slot = match &permit.1 {
                Some(_) => None,
                None => match node.ip_slots.connection(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        node.metrics.refused("connections_per_ip");
                        return text(StatusCode::TOO_MANY_REQUESTS, "too many connections from this address\n");
                    }
                },
            };
            let Some(pending) = node.ip_slots.unauthenticated(peer.ip()) else {
                node.metrics.refused("unauthenticated_per_ip");
                return text(StatusCode::TOO_MANY_REQUESTS, "too many unauthenticated connections from this address\n");
            };
            let (response, upgrading) = match upgrade::upgrade(&mut request) {
                Ok(pair) => pair,
                Err(e) => {
                    return text(StatusCode::BAD_REQUEST, &format!("bad WebSocket upgrade: {e}\n"));
                }
            };
            let connection_node = node.clone();
            // Boxed for the same reason as the accepted connection: the session's future is large.
            node.tracker.spawn(Box::pin(async move {
                let _permit = permit;
                let _client_slot = client_slot;
                match upgrading.await {
                    Ok(ws) => connection::serve(ws.into_inner(), connection_node, query_token, peer, pending).await,
                    Err(e) => debug!(%peer, error = %e, "upgrade did not complete"),
                }
            }));
            let (parts, _) = response.into_parts();
            Response::from_parts(parts, Full::default())
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The admin surface: `/admin/*` and `/metrics`, behind the admin token.
fn is_admin_path(path: &str) -> bool {
    path.starts_with("/admin/") || path == "/metrics"
}

/// The value of cookie `name`, if present and non-empty.
fn cookie(request: &Request<Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The `token` query parameter, if present and non-empty.
fn token_from_query(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty())
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::token_from_query;

    #[test]
    fn query_tokens_are_url_decoded() {
        assert_eq!(token_from_query("a=1&token=x%2By.z").as_deref(), Some("x+y.z"));
        assert_eq!(token_from_query("token="), None);
        assert_eq!(token_from_query("tokens=1"), None);
    }
}
