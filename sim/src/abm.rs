//! A fake Apple Business Manager (the DEP API) with real OAuth 1.0a verification, cursors and
//! paging, and scripted faults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pomona::wire::dep::{self, AssignRequest, CursorRequest, Device, OAuthToken, Profile};
use serde_json::json;

/// Faults to inject.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Answer the next authenticated call with 403 FORBIDDEN (session expired).
    pub expire_session: bool,
    /// Return the same cursor with `more_to_follow` once.
    pub same_cursor_once: bool,
    /// Answer the next sync with EXPIRED_CURSOR.
    pub expired_cursor_once: bool,
    /// Answer the next sync with INVALID_CURSOR.
    pub invalid_cursor_once: bool,
    /// Terms not signed: every call 403 T_C_NOT_SIGNED.
    pub terms_not_signed: bool,
    /// Answer the next N calls with 503.
    pub fail_5xx: u32,
    /// Serials to answer THROTTLED, with how many times left.
    pub throttle: HashMap<String, u32>,
    /// `retry_after_seconds` sent with THROTTLED.
    pub retry_after_seconds: Option<u64>,
    /// Serials that are NOT_ACCESSIBLE.
    pub not_accessible: HashSet<String>,
    /// Delay every answer.
    pub delay: Duration,
}

/// What the fake knows.
#[derive(Default)]
pub struct AbmState {
    /// Current devices.
    pub devices: BTreeMap<String, Device>,
    /// Change log for sync.
    pub changes: Vec<Device>,
    /// Defined profiles.
    pub profiles: HashMap<String, Profile>,
    /// Assignments made per serial (profile UUIDs, in order).
    pub assignments: HashMap<String, Vec<String>>,
    /// Calls per endpoint.
    pub calls: BTreeMap<String, u64>,
    /// Faults.
    pub faults: Faults,
    sessions: HashSet<String>,
    clock: u64,
}

/// The fake ABM server.
pub struct FakeAbm {
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The OAuth token its server token carries.
    pub token: OAuthToken,
    /// Shared state (script it, inspect it).
    pub state: Arc<Mutex<AbmState>>,
    page_limit: u32,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Ctx {
    state: Arc<Mutex<AbmState>>,
    token: OAuthToken,
    url: String,
    page_limit: u32,
}

impl FakeAbm {
    /// Start on loopback with pages of `page_limit` devices.
    pub async fn start(page_limit: u32) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let mut k = [0u8; 8];
        openssl::rand::rand_bytes(&mut k)?;
        let token = OAuthToken {
            consumer_key: format!("CK_{}", hex::encode(k)),
            consumer_secret: "CS_fake".into(),
            access_token: "AT_fake".into(),
            access_secret: "AS_fake".into(),
            access_token_expiry: "2099-01-01T00:00:00Z".into(),
        };
        let state = Arc::new(Mutex::new(AbmState::default()));
        let ctx = Ctx {
            state: state.clone(),
            token: token.clone(),
            url: url.clone(),
            page_limit,
        };
        let app = Router::new()
            .route("/session", get(session))
            .route("/account", get(account))
            .route("/server/devices", post(fetch))
            .route("/devices/sync", post(sync))
            .route("/profile", post(define))
            .route("/profile/devices", post(assign))
            .with_state(ctx);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            token,
            state,
            page_limit,
            task,
        })
    }

    /// The page size it advertises.
    pub fn page_limit(&self) -> u32 {
        self.page_limit
    }

    /// A server token (`.p7m`) for the certificate a Pomona DEP server gave out.
    pub fn token_for(&self, cert_pem: &[u8]) -> anyhow::Result<Vec<u8>> {
        let cert = openssl::x509::X509::from_pem(cert_pem)?;
        Ok(dep::encrypt_token(&self.token, &cert)?)
    }

    fn stamp(s: &mut AbmState) -> String {
        s.clock += 1;
        let t = time::OffsetDateTime::from_unix_timestamp(1_700_000_000 + s.clock as i64)
            .expect("valid");
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
    }

    /// A device appears (op `added`).
    pub fn add(&self, serial: &str, family: &str) {
        self.add_model(serial, family, &format!("{family} model"));
    }

    /// A device is added (op `added`) with this model, e.g. `MacBook Pro 14"`.
    pub fn add_model(&self, serial: &str, family: &str, model: &str) {
        let mut s = self.state.lock().expect("lock");
        let d = Device {
            serial_number: serial.into(),
            model: Some(model.into()),
            device_family: Some(family.into()),
            os: Some(if family == "Mac" { "OSX" } else { "iOS" }.into()),
            profile_status: Some("empty".into()),
            ..Default::default()
        };
        let mut change = d.clone();
        change.op_type = Some("added".into());
        change.op_date = Some(Self::stamp(&mut s));
        s.devices.insert(serial.into(), d);
        s.changes.push(change);
    }

    /// A device changes (op `modified`), e.g. moved in from another server or unassigned.
    pub fn modify(&self, serial: &str, profile_status: &str) {
        let mut s = self.state.lock().expect("lock");
        let mut d = s.devices.get(serial).cloned().unwrap_or_else(|| Device {
            serial_number: serial.into(),
            device_family: Some("Mac".into()),
            ..Default::default()
        });
        d.profile_status = Some(profile_status.into());
        if profile_status == "removed" || profile_status == "empty" {
            d.profile_uuid = None;
        }
        let mut change = d.clone();
        change.op_type = Some("modified".into());
        change.op_date = Some(Self::stamp(&mut s));
        s.devices.insert(serial.into(), d);
        s.changes.push(change);
    }

    /// A device leaves (op `deleted`).
    pub fn delete(&self, serial: &str) {
        let mut s = self.state.lock().expect("lock");
        let mut change = s.devices.remove(serial).unwrap_or_else(|| Device {
            serial_number: serial.into(),
            ..Default::default()
        });
        change.op_type = Some("deleted".into());
        change.op_date = Some(Self::stamp(&mut s));
        s.changes.push(change);
    }

    /// Assignments made to `serial`.
    pub fn assignments(&self, serial: &str) -> Vec<String> {
        self.state
            .lock()
            .expect("lock")
            .assignments
            .get(serial)
            .cloned()
            .unwrap_or_default()
    }

    /// Calls made to `path`.
    pub fn calls(&self, path: &str) -> u64 {
        self.state
            .lock()
            .expect("lock")
            .calls
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Change the faults.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.lock().expect("lock").faults);
    }
}

impl Drop for FakeAbm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn err(status: StatusCode, code: &str) -> Response {
    (status, format!("\"{code}\"")).into_response()
}

/// Common checks; returns an error response to send instead, if any.
async fn gate(ctx: &Ctx, path: &str, headers: &HeaderMap, session: bool) -> Option<Response> {
    let delay = {
        let mut s = ctx.state.lock().expect("lock");
        *s.calls.entry(path.to_owned()).or_default() += 1;
        s.faults.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = ctx.state.lock().expect("lock");
    if headers.get("user-agent").is_none() {
        return Some(err(StatusCode::BAD_REQUEST, "USER_AGENT_MISSING"));
    }
    if s.faults.terms_not_signed {
        return Some(err(StatusCode::FORBIDDEN, "T_C_NOT_SIGNED"));
    }
    if s.faults.fail_5xx > 0 {
        s.faults.fail_5xx -= 1;
        return Some(err(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"));
    }
    if session {
        let ok = headers
            .get("x-adm-auth-session")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| s.sessions.contains(t));
        if !ok {
            return Some(err(StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
        }
        if s.faults.expire_session {
            s.faults.expire_session = false;
            s.sessions.clear();
            return Some(err(StatusCode::FORBIDDEN, "FORBIDDEN"));
        }
    }
    None
}

async fn session(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&ctx, "/session", &headers, false).await {
        return r;
    }
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return err(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    };
    let params = dep::parse_oauth_header(auth);
    let given = params.get("oauth_signature").cloned().unwrap_or_default();
    let signed: BTreeMap<&str, &str> = params
        .iter()
        .filter(|(k, _)| k.starts_with("oauth_") && *k != "oauth_signature")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected =
        dep::oauth_signature(&ctx.token, "GET", &format!("{}/session", ctx.url), &signed);
    if given != expected || params.get("oauth_consumer_key") != Some(&ctx.token.consumer_key) {
        return err(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let t = uuid::Uuid::new_v4().to_string();
    ctx.state.lock().expect("lock").sessions.insert(t.clone());
    axum::Json(json!({"auth_session_token": t})).into_response()
}

async fn account(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&ctx, "/account", &headers, true).await {
        return r;
    }
    let limit = json!({"default": ctx.page_limit, "maximum": 1000});
    axum::Json(json!({
        "server_name": "Fake MDM server", "server_uuid": "FAKE-UUID", "org_name": "Fake Org",
        "urls": [
            {"uri": "/server/devices", "http_method": ["POST"], "limit": limit},
            {"uri": "/devices/sync", "http_method": ["POST"], "limit": limit},
        ]
    }))
    .into_response()
}

fn page_size(req: &CursorRequest, ctx: &Ctx) -> usize {
    req.limit.unwrap_or(ctx.page_limit).clamp(1, 1000) as usize
}

async fn fetch(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = gate(&ctx, "/server/devices", &headers, true).await {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<CursorRequest>(&body) else {
        return err(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST_BODY");
    };
    let mut s = ctx.state.lock().expect("lock");
    let offset = match req.cursor.as_deref() {
        None => 0,
        Some(c) if c.starts_with('F') => c[1..].parse().unwrap_or(0),
        Some(_) => return err(StatusCode::BAD_REQUEST, "EXHAUSTED_CURSOR"),
    };
    let n = page_size(&req, &ctx);
    let devices: Vec<Device> = s.devices.values().skip(offset).take(n).cloned().collect();
    let more = offset + devices.len() < s.devices.len();
    let mut cursor = if more {
        format!("F{}", offset + devices.len())
    } else {
        format!("S{}", s.changes.len())
    };
    if let Some(sent) = req
        .cursor
        .as_ref()
        .filter(|_| more && s.faults.same_cursor_once)
    {
        s.faults.same_cursor_once = false;
        cursor = sent.clone();
    }
    axum::Json(json!({"cursor": cursor, "devices": devices, "more_to_follow": more, "fetched_until": "2024-01-01T00:00:00Z"})).into_response()
}

async fn sync(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = gate(&ctx, "/devices/sync", &headers, true).await {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<CursorRequest>(&body) else {
        return err(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST_BODY");
    };
    let mut s = ctx.state.lock().expect("lock");
    if s.faults.expired_cursor_once {
        s.faults.expired_cursor_once = false;
        return err(StatusCode::BAD_REQUEST, "EXPIRED_CURSOR");
    }
    if s.faults.invalid_cursor_once {
        s.faults.invalid_cursor_once = false;
        return err(StatusCode::BAD_REQUEST, "INVALID_CURSOR");
    }
    let Some(pos) = req
        .cursor
        .as_deref()
        .and_then(|c| c.strip_prefix('S'))
        .and_then(|c| c.parse::<usize>().ok())
    else {
        return err(StatusCode::BAD_REQUEST, "INVALID_CURSOR");
    };
    let n = page_size(&req, &ctx);
    let changes: Vec<Device> = s.changes.iter().skip(pos).take(n).cloned().collect();
    let next = pos + changes.len();
    let more = next < s.changes.len();
    let mut cursor = format!("S{next}");
    if more && s.faults.same_cursor_once {
        s.faults.same_cursor_once = false;
        cursor = format!("S{pos}");
    }
    axum::Json(json!({"cursor": cursor, "devices": changes, "more_to_follow": more}))
        .into_response()
}

async fn define(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = gate(&ctx, "/profile", &headers, true).await {
        return r;
    }
    let Ok(p) = serde_json::from_slice::<Profile>(&body) else {
        return err(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST_BODY");
    };
    if p.profile_name.is_empty() || p.profile_name.len() > 125 {
        return err(StatusCode::BAD_REQUEST, "CONFIG_NAME_INVALID");
    }
    if p.url
        .as_deref()
        .is_some_and(|u| u.len() > 2000 || !u.starts_with("http"))
    {
        return err(StatusCode::BAD_REQUEST, "CONFIG_URL_INVALID");
    }
    let uuid = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    ctx.state
        .lock()
        .expect("lock")
        .profiles
        .insert(uuid.clone(), p);
    axum::Json(json!({"profile_uuid": uuid, "devices": {}})).into_response()
}

async fn assign(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = gate(&ctx, "/profile/devices", &headers, true).await {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<AssignRequest>(&body) else {
        return err(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST_BODY");
    };
    if req.devices.len() > 1000 {
        return err(StatusCode::BAD_REQUEST, "DEVICE_LIMIT_EXCEEDED");
    }
    let mut s = ctx.state.lock().expect("lock");
    if !s.profiles.contains_key(&req.profile_uuid) {
        return err(StatusCode::BAD_REQUEST, "PROFILE_NOT_FOUND");
    }
    let mut out = BTreeMap::new();
    let mut throttled = false;
    for serial in &req.devices {
        let status = if s.faults.not_accessible.contains(serial) || !s.devices.contains_key(serial)
        {
            "NOT_ACCESSIBLE"
        } else if let Some(left) = s.faults.throttle.get_mut(serial).filter(|l| **l > 0) {
            *left -= 1;
            throttled = true;
            "THROTTLED"
        } else {
            s.assignments
                .entry(serial.clone())
                .or_default()
                .push(req.profile_uuid.clone());
            if let Some(d) = s.devices.get_mut(serial) {
                d.profile_status = Some("assigned".into());
                d.profile_uuid = Some(req.profile_uuid.clone());
            }
            "SUCCESS"
        };
        out.insert(serial.clone(), status);
    }
    let mut body = json!({"profile_uuid": req.profile_uuid, "devices": out});
    if throttled && let Some(r) = s.faults.retry_after_seconds {
        body["retry_after_seconds"] = json!(r);
    }
    axum::Json(body).into_response()
}
