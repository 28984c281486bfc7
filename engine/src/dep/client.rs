//! The DEP API client: OAuth 1.0a session, `X-ADM-Auth-Session` on every call, one re-auth and
//! replay on 401 / FORBIDDEN, adoption of rotated session tokens, and jittered backoff on
//! transport errors, 429 and 5xx (honouring `Retry-After`).

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::wire::dep::{
    self, Account, AssignRequest, AssignResponse, CursorRequest, DefineProfileResponse, DevicePage,
    OAuthToken, Profile,
};

/// Errors from the DEP API.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DepError {
    /// The request never got an answer (after retries).
    #[error("DEP transport error: {0}")]
    Transport(String),
    /// Apple's terms changed: someone must accept them in Apple Business Manager.
    #[error(
        "Apple's terms and conditions must be accepted in Apple Business Manager (T_C_NOT_SIGNED)"
    )]
    TermsNotSigned,
    /// The token is refused (ACCESS_DENIED, or 401 after re-authenticating).
    #[error("the server token was refused: {0}")]
    Unauthorized(String),
    /// Any other HTTP error, with Apple's code.
    #[error("DEP API {path} answered {status}: {body}")]
    Api {
        /// The path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The body (Apple's error code).
        body: String,
    },
    /// The answer's body is larger than the client accepts ([`MAX_RESPONSE_BYTES`]).
    #[error("DEP API {path} answered with more than {max} bytes")]
    TooLarge {
        /// The path.
        path: String,
        /// The limit.
        max: usize,
    },
    /// The answer is not the JSON expected.
    #[error(transparent)]
    Decode(#[from] std::sync::Arc<dep::DepWireError>),
}

impl DepError {
    /// Whether the error body names `code`.
    pub fn is(&self, code: &str) -> bool {
        matches!(self, Self::Api { body, .. } if body.contains(code))
    }
}

/// The DEP API calls the syncer and the assigner make. [`DepClient`] makes them over HTTP;
/// tests answer them in-process.
#[async_trait]
pub trait DepApi: Send + Sync {
    /// `GET /account`.
    async fn account(&self) -> Result<Account, DepError>;
    /// `POST /server/devices` (fetch).
    async fn fetch(&self, cursor: Option<&str>, limit: u32) -> Result<DevicePage, DepError>;
    /// `POST /devices/sync`.
    async fn sync(&self, cursor: &str, limit: u32) -> Result<DevicePage, DepError>;
    /// `POST /profile` (define).
    async fn define_profile(&self, profile: &Profile) -> Result<DefineProfileResponse, DepError>;
    /// `POST /profile/devices` (assign ≤ 1000 serials).
    async fn assign(
        &self,
        profile_uuid: &str,
        serials: &[String],
    ) -> Result<AssignResponse, DepError>;
}

#[async_trait]
impl DepApi for DepClient {
    async fn account(&self) -> Result<Account, DepError> {
        DepClient::account(self).await
    }
    async fn fetch(&self, cursor: Option<&str>, limit: u32) -> Result<DevicePage, DepError> {
        DepClient::fetch(self, cursor, limit).await
    }
    async fn sync(&self, cursor: &str, limit: u32) -> Result<DevicePage, DepError> {
        DepClient::sync(self, cursor, limit).await
    }
    async fn define_profile(&self, profile: &Profile) -> Result<DefineProfileResponse, DepError> {
        DepClient::define_profile(self, profile).await
    }
    async fn assign(
        &self,
        profile_uuid: &str,
        serials: &[String],
    ) -> Result<AssignResponse, DepError> {
        DepClient::assign(self, profile_uuid, serials).await
    }
}

/// A client for one server token.
pub struct DepClient {
    http: reqwest::Client,
    base: String,
    token: OAuthToken,
    session: Mutex<Option<String>>,
    protocol_version: u32,
    retries: u32,
    backoff: Duration,
    max_response_bytes: usize,
}

impl std::fmt::Debug for DepClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Longest TCP (and proxy) connect to Apple's DEP service.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while reading an answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request, connect to the last byte of the answer (a sync page can be large).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest DEP response body read (a page of 1,000 devices is about 1 MiB). Bodies are read up
/// to this size before any JSON parsing; serde_json also caps nesting at 128 levels.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Read `resp`'s body, refusing more than `max` bytes before buffering them.
async fn read_capped(
    mut resp: reqwest::Response,
    path: &str,
    max: usize,
) -> Result<Vec<u8>, DepError> {
    let too_large = || DepError::TooLarge {
        path: path.to_owned(),
        max,
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| DepError::Transport(e.to_string()))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The User-Agent Pomona sends (Apple rejects requests without one).
pub const USER_AGENT: &str = concat!("pomona/", env!("CARGO_PKG_VERSION"));

fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    openssl::rand::rand_bytes(&mut b).expect("the OpenSSL RNG works");
    d.mul_f64(0.75 + 0.5 * f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX))
}

impl DepClient {
    /// A client; `base` is Apple's URL unless overridden.
    pub fn new(base: &str, token: OAuthToken, protocol_version: u32) -> Self {
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("an HTTP client with default TLS builds"),
            base: base.trim_end_matches('/').to_owned(),
            token,
            session: Mutex::new(None),
            protocol_version,
            retries: 4,
            backoff: Duration::from_millis(500),
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }

    /// Accept response bodies up to `max` bytes (default [`MAX_RESPONSE_BYTES`]).
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Shorter backoff (tests).
    pub fn with_backoff(mut self, backoff: Duration, retries: u32) -> Self {
        self.backoff = backoff;
        self.retries = retries;
        self
    }

    async fn new_session(&self) -> Result<String, DepError> {
        let url = format!("{}/session", self.base);
        let mut nonce = [0u8; 16];
        openssl::rand::rand_bytes(&mut nonce).expect("the OpenSSL RNG works");
        let ts = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let auth = dep::oauth_header(&self.token, &url, &hex::encode(nonce), ts);
        let resp = self
            .http
            .get(&url)
            .header("Authorization", auth)
            .header("User-Agent", USER_AGENT)
            .header(
                "X-Server-Protocol-Version",
                self.protocol_version.to_string(),
            )
            .send()
            .await
            .map_err(|e| DepError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, "/session", self.max_response_bytes).await?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body).into_owned();
            return Err(if text.contains("T_C_NOT_SIGNED") {
                DepError::TermsNotSigned
            } else if status == 401 || status == 403 {
                DepError::Unauthorized(format!("{status} {text}"))
            } else {
                DepError::Api {
                    path: "/session".into(),
                    status,
                    body: text,
                }
            });
        }
        #[derive(serde::Deserialize)]
        struct Session {
            auth_session_token: String,
        }
        let s: Session = dep::parse(&body, "session").map_err(|e| DepError::Decode(e.into()))?;
        Ok(s.auth_session_token)
    }

    async fn session_token(&self) -> Result<String, DepError> {
        let mut s = self.session.lock().await;
        if let Some(t) = s.as_ref() {
            return Ok(t.clone());
        }
        let t = self.new_session().await?;
        *s = Some(t.clone());
        Ok(t)
    }

    /// Send a request; returns the body of a 2xx answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, DepError> {
        let mut reauthed = false;
        let mut attempt = 0;
        loop {
            let session = match self.session_token().await {
                Ok(s) => s,
                Err(DepError::Transport(e)) if attempt < self.retries => {
                    attempt += 1;
                    tokio::time::sleep(jitter(self.backoff * 2u32.pow(attempt))).await;
                    tracing::debug!(error = %e, "retrying DEP session");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header("X-ADM-Auth-Session", &session)
                .header(
                    "X-Server-Protocol-Version",
                    self.protocol_version.to_string(),
                )
                .header("User-Agent", USER_AGENT);
            if let Some(b) = &body {
                req = req
                    .header("Content-Type", "application/json;charset=UTF8")
                    .body(b.clone());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < self.retries => {
                    attempt += 1;
                    tracing::debug!(error = %e, path, "DEP transport error; retrying");
                    tokio::time::sleep(jitter(self.backoff * 2u32.pow(attempt))).await;
                    continue;
                }
                Err(e) => return Err(DepError::Transport(e.to_string())),
            };
            if let Some(rotated) = resp
                .headers()
                .get("X-ADM-Auth-Session")
                .and_then(|v| v.to_str().ok())
                .filter(|v| *v != session)
            {
                *self.session.lock().await = Some(rotated.to_owned());
            }
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let bytes = read_capped(resp, path, self.max_response_bytes).await?;
            let text = || String::from_utf8_lossy(&bytes).into_owned();
            match status {
                200..=299 => return Ok(bytes),
                401 | 403 if text().contains("T_C_NOT_SIGNED") => {
                    return Err(DepError::TermsNotSigned);
                }
                403 if text().contains("ACCESS_DENIED") => {
                    return Err(DepError::Unauthorized(text()));
                }
                401 | 403 if (status == 401 || text().contains("FORBIDDEN")) && !reauthed => {
                    reauthed = true;
                    *self.session.lock().await = None;
                    continue;
                }
                401 => return Err(DepError::Unauthorized(text())),
                429 | 500..=599 if attempt < self.retries => {
                    attempt += 1;
                    let wait = retry_after
                        .map(Duration::from_secs)
                        .unwrap_or_else(|| jitter(self.backoff * 2u32.pow(attempt)));
                    tokio::time::sleep(wait).await;
                    continue;
                }
                _ => {
                    return Err(DepError::Api {
                        path: path.to_owned(),
                        status,
                        body: text(),
                    });
                }
            }
        }
    }

    async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        what: &'static str,
    ) -> Result<T, DepError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("requests serialize"));
        let bytes = self.call(method, path, body).await?;
        dep::parse(&bytes, what).map_err(|e| DepError::Decode(e.into()))
    }

    /// `GET /account`.
    pub async fn account(&self) -> Result<Account, DepError> {
        self.json::<(), _>(reqwest::Method::GET, "/account", None, "account")
            .await
    }

    /// `POST /server/devices` (fetch).
    pub async fn fetch(&self, cursor: Option<&str>, limit: u32) -> Result<DevicePage, DepError> {
        let req = CursorRequest {
            cursor: cursor.map(str::to_owned),
            limit: Some(limit),
        };
        self.json(
            reqwest::Method::POST,
            "/server/devices",
            Some(&req),
            "fetch",
        )
        .await
    }

    /// `POST /devices/sync`.
    pub async fn sync(&self, cursor: &str, limit: u32) -> Result<DevicePage, DepError> {
        let req = CursorRequest {
            cursor: Some(cursor.to_owned()),
            limit: Some(limit),
        };
        self.json(reqwest::Method::POST, "/devices/sync", Some(&req), "sync")
            .await
    }

    /// `POST /profile` (define).
    pub async fn define_profile(
        &self,
        profile: &Profile,
    ) -> Result<DefineProfileResponse, DepError> {
        self.json(
            reqwest::Method::POST,
            "/profile",
            Some(profile),
            "profile definition",
        )
        .await
    }

    /// `POST /profile/devices` (assign ≤ 1000 serials).
    pub async fn assign(
        &self,
        profile_uuid: &str,
        serials: &[String],
    ) -> Result<AssignResponse, DepError> {
        let req = AssignRequest {
            profile_uuid: profile_uuid.to_owned(),
            devices: serials.to_vec(),
        };
        self.json(
            reqwest::Method::POST,
            "/profile/devices",
            Some(&req),
            "assignment",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP server answering every request with `body` (one connection per request).
    async fn serve(body: &'static [u8], chunked: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0; 8192];
                    let _ = s.read(&mut buf).await;
                    let head = if chunked {
                        format!(
                            "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                            body.len()
                        )
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                    };
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body).await;
                    if chunked {
                        let _ = s.write_all(b"\r\n0\r\n\r\n").await;
                    }
                });
            }
        });
        url
    }

    fn token() -> OAuthToken {
        OAuthToken {
            consumer_key: "ck".into(),
            consumer_secret: "cs".into(),
            access_token: "at".into(),
            access_secret: "as".into(),
            access_token_expiry: "2099-01-01T00:00:00Z".into(),
        }
    }

    #[tokio::test]
    async fn oversized_answers_are_refused_before_parsing() {
        static BIG: &[u8] = &[b' '; 4096];
        for chunked in [false, true] {
            let url = serve(BIG, chunked).await;
            let client = DepClient::new(&url, token(), 3)
                .with_backoff(Duration::from_millis(1), 0)
                .with_max_response_bytes(1024);
            let err = client.account().await.unwrap_err();
            assert!(
                matches!(&err, DepError::TooLarge { path, max: 1024 } if path == "/session"),
                "{err}"
            );
        }
        let small = serve(br#"{"auth_session_token":"t"}"#, false).await;
        let client = DepClient::new(&small, token(), 3).with_max_response_bytes(1024);
        assert_eq!(client.session_token().await.unwrap(), "t");
    }
}
