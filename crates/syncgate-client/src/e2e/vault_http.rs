//! The client of the server's key vault: `GET /vault/{sub}`,
//! `PUT /vault/{sub}/{item}`, `DELETE /vault/{sub}/{item}` (see
//! `proto/E2E.md`), and the mode-3 flows on top of them: enrol, unlock on
//! a new device, restore with the recovery code.
//!
//! Each request authenticates with a bearer token from the app's
//! [`TokenProvider`], like the WebSocket. What travels is only ever wraps:
//! the password, the recovery code and every key stay on the device.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::E2eError;
use super::keys::DataKey;
use super::vault::{self, MASTER_BY_PASSWORD, Unlocked};
use super::wrap::KdfParams;
use crate::{TokenProvider, TokenRequest};

/// Talks to one server's vault as one user.
#[derive(Clone)]
pub struct VaultClient {
    secure: bool,
    host: String,
    port: u16,
    authority: String,
    sub: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    tokens: Arc<dyn TokenProvider>,
}

#[derive(Deserialize)]
struct Listing {
    items: BTreeMap<String, String>,
}

impl VaultClient {
    /// A vault client for `sub` on the server of `url` (`ws://`, `wss://`,
    /// `http://` or `https://`; the path is ignored).
    pub fn new(
        url: &str,
        sub: &str,
        tokens: Arc<dyn TokenProvider>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, E2eError> {
        let uri: hyper::Uri = url.parse().map_err(|e| E2eError::Invalid(format!("bad URL {url:?}: {e}")))?;
        let secure = match uri.scheme_str() {
            Some("ws" | "http") => false,
            Some("wss" | "https") => true,
            _ => return Err(E2eError::Invalid(format!("URL {url:?} has no ws/wss/http/https scheme"))),
        };
        let host = uri.host().ok_or_else(|| E2eError::Invalid(format!("URL {url:?} has no host")))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.to_string());
        if sub.is_empty() {
            return Err(E2eError::Invalid("an empty sub".into()));
        }
        Ok(Self {
            secure,
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            authority,
            sub: sub.to_string(),
            tls,
            tokens,
        })
    }

    fn path(&self, item: Option<&str>) -> String {
        let sub = utf8_percent_encode(&self.sub, NON_ALPHANUMERIC);
        match item {
            None => format!("/vault/{sub}"),
            Some(item) => format!("/vault/{sub}/{}", utf8_percent_encode(item, NON_ALPHANUMERIC)),
        }
    }

    /// Every item of the vault, by name.
    pub async fn items(&self) -> Result<BTreeMap<String, Vec<u8>>, E2eError> {
        let body = self.send("GET", self.path(None), Bytes::new()).await?;
        let listing: Listing = serde_json::from_slice(&body)
            .map_err(|e| E2eError::Vault(format!("a listing that does not parse: {e}")))?;
        listing
            .items
            .into_iter()
            .map(|(name, value)| {
                let bytes = BASE64.decode(value).map_err(|e| E2eError::Vault(format!("item {name:?}: {e}")))?;
                Ok((name, bytes))
            })
            .collect()
    }

    /// Stores (or replaces) one item.
    pub async fn put(&self, item: &str, bytes: &[u8]) -> Result<(), E2eError> {
        let body = serde_json::json!({ "value": BASE64.encode(bytes) }).to_string();
        self.send("PUT", self.path(Some(item)), Bytes::from(body)).await.map(drop)
    }

    /// Deletes one item.
    pub async fn delete(&self, item: &str) -> Result<(), E2eError> {
        self.send("DELETE", self.path(Some(item)), Bytes::new()).await.map(drop)
    }

    /// Mode 3, first device: creates the vault. Returns it unlocked and the
    /// recovery code to show the user once. Refused when the vault exists
    /// (enrolling again would orphan every key wrapped under the old master key).
    pub async fn enrol(&self, password: &str, params: KdfParams) -> Result<(Unlocked, String), E2eError> {
        if self.items().await?.contains_key(MASTER_BY_PASSWORD) {
            return Err(E2eError::Vault(format!("{} already has a vault: unlock it instead", self.sub)));
        }
        let enrolment = vault::enrol(&self.sub, password, params)?;
        for (name, bytes) in &enrolment.items {
            self.put(name, bytes).await?;
        }
        Ok((enrolment.unlocked, enrolment.recovery_code))
    }

    /// Mode 3, another device: fetches the wraps and opens them with the password.
    pub async fn unlock(&self, password: &str) -> Result<Unlocked, E2eError> {
        vault::unlock_with_password(&self.sub, password, &self.items().await?)
    }

    /// A lost password: opens the vault with the recovery code and stores a
    /// wrap under `new_password`.
    pub async fn restore(&self, code: &str, new_password: &str, params: KdfParams) -> Result<Unlocked, E2eError> {
        let unlocked = vault::unlock_with_recovery_code(&self.sub, code, &self.items().await?)?;
        let (name, bytes) = unlocked.password_item(new_password, params)?;
        self.put(&name, &bytes).await?;
        Ok(unlocked)
    }

    /// Stores `key` of `space` in the vault, wrapped under the master key.
    pub async fn store_key(&self, unlocked: &Unlocked, space: &str, key: &DataKey) -> Result<(), E2eError> {
        let (name, bytes) = unlocked.key_item(space, key)?;
        self.put(&name, &bytes).await
    }

    /// One request on a fresh connection (the vault is used at login, not per write).
    async fn send(&self, method: &str, path: String, body: Bytes) -> Result<Bytes, E2eError> {
        let token = self
            .tokens
            .token(TokenRequest::Connect)
            .await
            .map_err(|e| E2eError::Vault(format!("no token: {e}")))?
            .ok_or_else(|| E2eError::Vault("signed out: no token".into()))?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", &self.authority)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .body(Full::new(body))
            .map_err(|e| E2eError::Invalid(e.to_string()))?;
        let io = |e: &dyn std::fmt::Display| E2eError::Vault(e.to_string());
        let tcp = crate::transport::connect(&self.host, self.port, None).await.map_err(|e| io(&e))?;
        if !self.secure {
            return exchange(tcp, request).await;
        }
        let config = self.tls.clone().ok_or_else(|| E2eError::Invalid("https needs a TLS configuration".into()))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| E2eError::Invalid(e.to_string()))?;
        let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| io(&e))?;
        exchange(tls, request).await
    }
}

async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<Bytes, E2eError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = |e: &dyn std::fmt::Display| E2eError::Vault(e.to_string());
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| io(&e))?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| io(&e))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| io(&e))?.to_bytes();
    if status != StatusCode::OK {
        return Err(E2eError::Vault(format!("{status}: {}", String::from_utf8_lossy(&body))));
    }
    Ok(body)
}
