//! Outbound HTTP for identity providers (JWKS, introspection): bounded in
//! time and size, HTTPS by default, plain HTTP only to loopback addresses.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

/// Largest response body read from an identity provider.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A failed request: the provider is unreachable, slow, or answered nonsense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// A response, already read.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Cache-Control: max-age`, if given.
    pub max_age: Option<Duration>,
    /// The body (at most [`MAX_RESPONSE_BYTES`]).
    pub body: Bytes,
}

/// A small HTTP(S) client with a per-request timeout.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("timeout", &self.timeout).finish()
    }
}

impl HttpClient {
    /// A client whose requests fail after `timeout` (connect, send and read together).
    pub fn new(timeout: Duration) -> Result<Self, HttpError> {
        Self::with_extra_roots(timeout, Vec::new())
    }

    /// Like [`HttpClient::new`], also trusting `extra_roots` (the CA of an
    /// internal identity provider) besides the bundled Mozilla roots.
    pub fn with_extra_roots(timeout: Duration, extra_roots: Vec<CertificateDer<'static>>) -> Result<Self, HttpError> {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for (n, cert) in extra_roots.into_iter().enumerate() {
            roots.add(cert).map_err(|e| HttpError(format!("CA certificate {}: {e}", n + 1)))?;
        }
        // The provider is named so no process-wide default has to exist.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        Ok(Self { inner: Client::builder(TokioExecutor::new()).build(connector), timeout })
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<HttpResponse, HttpError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpError(e.to_string()))?;
        self.send(request).await
    }

    /// `POST url` with a body of `content_type`, optionally with a bearer token.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<HttpResponse, HttpError> {
        let mut builder = Request::builder().method(Method::POST).uri(url).header(CONTENT_TYPE, content_type);
        if let Some(token) = bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder.body(Full::new(body)).map_err(|e| HttpError(e.to_string()))?;
        self.send(request).await
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<HttpResponse, HttpError> {
        let exchange = async {
            let response =
                self.inner.request(request).await.map_err(|e| HttpError(format!("request failed: {}", causes(&e))))?;
            let status = response.status().as_u16();
            let max_age = response.headers().get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(HttpResponse { status, max_age, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError(format!("no answer within {:?}", self.timeout)))?
    }
}

/// An error with its causes ("client error (Connect): invalid peer
/// certificate: UnknownIssuer"): hyper's own message alone hides why.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `max-age=N` from a Cache-Control header.
fn max_age(header: &str) -> Option<Duration> {
    header
        .split(',')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("max-age="))
        .and_then(|n| n.trim_matches('"').parse().ok())
        .map(Duration::from_secs)
}

/// Accepts `https://` URLs, and `http://` only to a loopback address (a sidecar or a test).
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!("{url:?}: plain http:// is only allowed to loopback addresses; use https://"))
            }
        }
        _ => Err(format!("{url:?} must be an https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_policy() {
        assert!(check_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(check_url("http://127.0.0.1:9000/jwks").is_ok());
        assert!(check_url("http://[::1]:9000/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(check_url("http://10.0.0.5/jwks").is_err());
        assert!(check_url("http://idp.example.com/jwks").is_err());
        assert!(check_url("ftp://x/y").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(max_age("public, max-age=300, must-revalidate"), Some(Duration::from_secs(300)));
        assert_eq!(max_age("no-store"), None);
    }
}
