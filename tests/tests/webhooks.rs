//! Webhooks end to end over real HTTP: a local receiver that verifies every signature, fails on
//! command, or hangs; ordered at-least-once delivery with retries; resumption after a restart on
//! the same data directory; isolation of a slow receiver; test deliveries; pruned events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use pomona::seal::SealKey;
use pomona::store::redb::RedbStore;
use pomona::webhooks::WebhookOptions;
use pomona_testkit::server::{TEST_API_KEY, TestServer};
use serde_json::{Value, json};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    seq: u64,
    kind: String,
    /// What the receiver answered.
    status: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answer 2xx (after `fail_next` 500s).
    Normal,
    /// Never answer (the engine must time out).
    Hang,
}

struct ReceiverState {
    secret: Mutex<Vec<u8>>,
    /// Answer this many requests with 500 before accepting again.
    fail_next: AtomicUsize,
    mode: Mutex<Mode>,
    got: Mutex<Vec<Got>>,
    /// Requests whose signature or headers did not check out.
    rejected: Mutex<Vec<String>>,
}

/// A webhook receiver on a loopback port.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// HMAC-SHA256 computed here, independently of the engine's signing code.
fn hmac_hex(secret: &[u8], message: &[u8]) -> String {
    let key = PKey::hmac(secret).unwrap();
    let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
    s.update(message).unwrap();
    hex::encode(s.sign_to_vec().unwrap())
}

/// Check the headers and signature of one delivery; returns the event.
fn check(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(format!("missing {n}"))
    };
    if h("content-type")? != "application/json" {
        return Err("content type".into());
    }
    let sig = h("pomona-signature")?;
    let (t, v1) = sig
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .ok_or(format!("signature header {sig:?}"))?;
    let ts: i64 = t.parse().map_err(|_| format!("timestamp {t:?}"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if (now - ts).abs() > 300 {
        return Err(format!("timestamp {ts} outside the replay window"));
    }
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    let expected = hmac_hex(secret, &message);
    if !openssl::memcmp::eq(expected.as_bytes(), v1.as_bytes()) {
        return Err(format!("bad signature {v1} (expected {expected})"));
    }
    let event: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if h("pomona-event")? != event["kind"].as_str().unwrap_or_default() {
        return Err("Pomona-Event differs from the body's kind".into());
    }
    if h("pomona-delivery")?.parse::<u64>().ok() != event["seq"].as_u64() {
        return Err("Pomona-Delivery differs from the body's seq".into());
    }
    Ok(event)
}

async fn receive(
    State(st): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let secret = st.secret.lock().unwrap().clone();
    let event = match check(&secret, &headers, &body) {
        Ok(e) => e,
        Err(why) => {
            st.rejected.lock().unwrap().push(why);
            return StatusCode::BAD_REQUEST;
        }
    };
    let mode = *st.mode.lock().unwrap();
    if mode == Mode::Hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let fail = st
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    st.got.lock().unwrap().push(Got {
        seq: event["seq"].as_u64().unwrap(),
        kind: event["kind"].as_str().unwrap().to_owned(),
        status: status.as_u16(),
    });
    status
}

impl Receiver {
    async fn start(secret: &str, fail_first: usize) -> Self {
        let state = Arc::new(ReceiverState {
            secret: Mutex::new(secret.as_bytes().to_vec()),
            fail_next: AtomicUsize::new(fail_first),
            mode: Mutex::new(Mode::Normal),
            got: Mutex::new(Vec::new()),
            rejected: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    fn set_secret(&self, s: &str) {
        *self.state.secret.lock().unwrap() = s.as_bytes().to_vec();
    }

    fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    fn got(&self) -> Vec<Got> {
        self.state.got.lock().unwrap().clone()
    }

    /// Sequence numbers the receiver accepted (answered 2xx).
    fn accepted(&self) -> Vec<u64> {
        self.got()
            .iter()
            .filter(|g| g.status < 300)
            .map(|g| g.seq)
            .collect()
    }

    fn assert_no_rejections(&self) {
        let r = self.state.rejected.lock().unwrap();
        assert!(r.is_empty(), "the receiver rejected deliveries: {r:?}");
    }
}

/// Poll `check` until it returns `Some`, or panic after `secs` seconds.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put_hook(server: &TestServer, name: &str, body: &Value) -> (u16, Value) {
    let r = server
        .client
        .put(format!("{}/v1/webhooks/{name}", server.url))
        .bearer_auth(TEST_API_KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn hook(server: &TestServer, name: &str) -> Value {
    let r = server
        .api()
        .get(&format!("/v1/webhooks/{name}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    r.json
}

/// Every durable event with `seq > after`.
async fn events_after(server: &TestServer, mut after: u64) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let r = server
            .api()
            .get(&format!("/v1/events?after={after}&limit=1000"))
            .await
            .unwrap();
        let page = r.json["events"].as_array().unwrap().clone();
        if page.is_empty() {
            return out;
        }
        after = r.json["next"].as_u64().unwrap();
        out.extend(page);
    }
}

/// Short backoffs and polling; `timeout_ms` bounds one delivery (generous where a receiver is
/// expected to answer, so a loaded machine does not turn answers into timeouts).
fn fast_options(timeout_ms: u64) -> WebhookOptions {
    WebhookOptions::default()
        .with_timeout(Duration::from_millis(timeout_ms))
        .with_initial_backoff(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(200))
        .with_poll_interval(Duration::from_millis(500))
        .with_batch(100)
}

fn matches_filter(kind: &str) -> bool {
    kind.starts_with("command.") || kind == "enrollment.completed"
}

async fn open_store(path: &std::path::Path, seal: &SealKey) -> RedbStore {
    // After a shutdown the previous writer thread may still hold the file for a moment.
    eventually("the database to reopen", 10, || async {
        RedbStore::open(path, seal).ok()
    })
    .await
}

async fn start_on(path: &std::path::Path, seal: &SealKey) -> TestServer {
    let store = open_store(path, seal).await;
    let seal = seal.clone();
    TestServer::start_with(move |b| {
        b.store(Arc::new(store))
            .seal_key(seal)
            .webhook_options(fast_options(5000))
    })
    .await
    .unwrap()
}

async fn command(server: &TestServer, udid: &str) -> String {
    server
        .api()
        .command(&[udid], "ProfileList", json!({}))
        .await
        .unwrap()
}

/// Failing deliveries are retried until accepted, every matching event arrives in order, and
/// after a restart delivery resumes from the durable cursor without losing events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_at_least_once_with_retries_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pomona.redb");
    let seal = SealKey::generate();
    let server = start_on(&db, &seal).await;
    let receiver = Receiver::start("not-known-yet", 3).await;

    let (status, created) = put_hook(
        &server,
        "ops",
        &json!({"url": receiver.url, "events": ["command.*", "enrollment.completed"]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64, "a generated 32-byte secret, in hex");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    receiver.set_secret(&secret);
    let start = created["cursor"].as_u64().unwrap();
    let shown = hook(&server, "ops").await;
    assert!(shown.get("secret").is_none(), "the secret is shown once");
    assert_eq!(
        shown["events"],
        json!(["command.*", "enrollment.completed"])
    );
    let listed = server.api().get("/v1/webhooks").await.unwrap();
    assert!(listed.json["webhooks"][0].get("secret").is_none());
    assert_eq!(listed.json["webhooks"][0]["name"], "ops");

    // Events: an enrollment, commands queued and acknowledged.
    let dev = server.device().await.unwrap();
    dev.enroll().await.unwrap();
    let mut uuids = Vec::new();
    for _ in 0..4 {
        uuids.push(command(&server, &dev.udid).await);
    }
    let mut next = dev.idle().await.unwrap();
    while let Some(c) = next {
        next = dev.acknowledge(&c.uuid).await.unwrap();
    }

    let all = events_after(&server, start).await;
    let expected: Vec<u64> = all
        .iter()
        .filter(|e| matches_filter(e["kind"].as_str().unwrap()))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        expected.len() >= 9,
        "completed + 4 enqueued + 4 results: {all:?}"
    );
    let head = all.last().unwrap()["seq"].as_u64().unwrap();
    let state = eventually("every matching event delivered", 20, || async {
        let h = hook(&server, "ops").await;
        (h["cursor"].as_u64() >= Some(head)).then_some(h)
    })
    .await;
    receiver.assert_no_rejections();
    let accepted: Vec<u64> = receiver
        .accepted()
        .into_iter()
        .filter(|s| *s <= head)
        .collect();
    assert_eq!(accepted, expected, "each event once, in order");
    let got = receiver.got();
    assert!(
        got[..3]
            .iter()
            .all(|g| g.status == 500 && g.seq == expected[0]),
        "the first event was retried through the failures: {got:?}"
    );
    assert_eq!(got[3].seq, expected[0]);
    assert!(
        got.iter().all(|g| matches_filter(&g.kind)),
        "only matching kinds: {got:?}"
    );
    assert!(state["delivered"].as_u64().unwrap() >= expected.len() as u64);
    assert_eq!(state["failures"], 3);
    assert_eq!(state["attempts"], 0);
    assert!(
        state["last_error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("event {}: HTTP 500", expected[0])),
        "{state}"
    );
    assert!(state["last_success_at"].is_string());
    assert!(state["next_attempt_at"].is_null());

    // An outage: the receiver fails everything; new events pile up behind the cursor.
    receiver.fail_next(usize::MAX);
    let before_outage = hook(&server, "ops").await["cursor"].as_u64().unwrap();
    for _ in 0..3 {
        command(&server, &dev.udid).await;
    }
    let stuck = eventually("retries against the failing receiver", 20, || async {
        let h = hook(&server, "ops").await;
        (h["attempts"].as_u64().unwrap_or(0) >= 2).then_some(h)
    })
    .await;
    assert!(stuck["next_attempt_at"].is_string(), "{stuck}");
    let cursor = stuck["cursor"].as_u64().unwrap();
    assert!(cursor >= before_outage);
    let pending: Vec<u64> = events_after(&server, cursor)
        .await
        .iter()
        .filter(|e| matches_filter(e["kind"].as_str().unwrap()))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(pending.len(), 3, "three enqueued commands undelivered");

    // Restart on the same data directory; then the receiver recovers.
    server.stop().await;
    let seen_before_restart = receiver.got().len();
    let server = start_on(&db, &seal).await;
    let resumed = hook(&server, "ops").await;
    assert_eq!(
        resumed["cursor"].as_u64(),
        Some(cursor),
        "the cursor is durable"
    );
    receiver.fail_next(0);
    let extra = command(&server, &dev.udid).await;
    let all = events_after(&server, cursor).await;
    let want: Vec<u64> = all
        .iter()
        .filter(|e| matches_filter(e["kind"].as_str().unwrap()))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let extra_seq = all
        .iter()
        .find(|e| e["data"]["command_uuid"] == extra.as_str())
        .expect("the new command's event")["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(want.len(), pending.len() + 1);
    let head = all.last().unwrap()["seq"].as_u64().unwrap();
    eventually("delivery to resume after the restart", 20, || async {
        (hook(&server, "ops").await["cursor"].as_u64() >= Some(head)).then_some(())
    })
    .await;
    receiver.assert_no_rejections();
    let after: Vec<Got> = receiver.got()[seen_before_restart..].to_vec();
    assert!(
        after.iter().all(|g| g.seq > cursor),
        "nothing at or before the durable cursor is redelivered: {after:?}"
    );
    let mut accepted_after: Vec<u64> = after
        .iter()
        .filter(|g| g.status < 300 && g.seq <= head)
        .map(|g| g.seq)
        .collect();
    // At least once: a delivery cut off by the shutdown may be repeated, never reordered.
    assert!(
        accepted_after.windows(2).all(|w| w[0] <= w[1]),
        "{accepted_after:?}"
    );
    accepted_after.dedup();
    assert_eq!(
        accepted_after, want,
        "the backlog, then the new event, in order"
    );
    assert_eq!(want[..pending.len()], pending[..], "the backlog first");
    assert_eq!(want.last(), Some(&extra_seq));
    server.stop().await;
}

/// A receiver that never answers delays only its own subscription; the test endpoint reports
/// the receiver's answer; validation and unknown names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_test_deliveries_and_validation() {
    let server = TestServer::start_with(|b| b.webhook_options(fast_options(1000)))
        .await
        .unwrap();
    let secret = "an-admin-chosen-secret-0123456789";
    let good = Receiver::start(secret, 0).await;
    let slow = Receiver::start(secret, 0).await;
    *slow.state.mode.lock().unwrap() = Mode::Hang;
    let (s, j) = put_hook(&server, "good", &json!({"url": good.url, "secret": secret})).await;
    assert_eq!(s, 201, "{j}");
    assert!(j.get("secret").is_none(), "a given secret is not echoed");
    let (s, j) = put_hook(&server, "slow", &json!({"url": slow.url, "secret": secret})).await;
    assert_eq!(s, 201, "{j}");

    let dev = server.device().await.unwrap();
    dev.enroll().await.unwrap();
    for _ in 0..3 {
        command(&server, &dev.udid).await;
    }
    let head = events_after(&server, 0).await.last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    eventually("the good receiver to get everything", 20, || async {
        (hook(&server, "good").await["cursor"].as_u64() >= Some(head)).then_some(())
    })
    .await;
    let slow_state = eventually("the slow receiver to time out", 20, || async {
        let h = hook(&server, "slow").await;
        (h["failures"].as_u64().unwrap_or(0) >= 1).then_some(h)
    })
    .await;
    assert!(
        slow_state["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within 1000 ms"),
        "{slow_state}"
    );
    assert!(slow_state["cursor"].as_u64().unwrap() < head);
    assert!(slow_state["last_status"].is_null());
    good.assert_no_rejections();
    let kinds: Vec<String> = good.got().iter().map(|g| g.kind.clone()).collect();
    assert!(
        kinds.iter().any(|k| k == "webhook.changed"),
        "an empty filter is every event: {kinds:?}"
    );

    // A test delivery goes to one subscription only, now, and reports the answer.
    let r = server
        .api()
        .post_json("/v1/webhooks/good/test", &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["ok"], true);
    assert_eq!(r.json["status"], 204);
    let test = good.got().into_iter().rfind(|g| g.kind == "webhook.test");
    assert_eq!(test.map(|g| g.seq), Some(0), "test deliveries carry seq 0");
    good.fail_next(1);
    let r = server
        .api()
        .post_json("/v1/webhooks/good/test", &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json["ok"], false);
    assert_eq!(r.json["status"], 500);
    assert!(r.json["error"].as_str().unwrap().contains("HTTP 500"));
    assert!(
        events_after(&server, 0)
            .await
            .iter()
            .all(|e| e["kind"] != "webhook.test"),
        "test events are not in the outbox"
    );
    good.assert_no_rejections();

    // Validation: precise 400s.
    let head = events_after(&server, 0).await.last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let cases = [
        (
            "bad name!",
            json!({"url": good.url}),
            "webhook name \"bad name!\" must be 1-64",
        ),
        (
            "x",
            json!({"url": "ftp://example.com/"}),
            "must use http or https, not \"ftp\"",
        ),
        (
            "x",
            json!({"url": "not a url"}),
            "url \"not a url\" is not a URL",
        ),
        (
            "x",
            json!({"url": good.url, "events": ["ok", "Setup.*"]}),
            "events[1] \"Setup.*\"",
        ),
        (
            "x",
            json!({"url": good.url, "events": ["setup*"]}),
            "uses '*' in the wrong place",
        ),
        (
            "x",
            json!({"url": good.url, "secret": "short"}),
            "secret must be 16 to 256 characters",
        ),
        (
            "x",
            json!({"url": good.url, "secret": "has spaces in it, many"}),
            "printable ASCII",
        ),
        (
            "x",
            json!({"url": good.url, "from_seq": head + 2}),
            &format!("from_seq {} is past the next event", head + 2),
        ),
        (
            "x",
            json!({"url": good.url, "colour": "red"}),
            "unknown field `colour`",
        ),
        ("x", json!({"events": []}), "missing field `url`"),
    ];
    for (name, body, want) in cases {
        let (s, j) = put_hook(&server, name, &body).await;
        assert_eq!(s, 400, "{name} {body}: {j}");
        assert!(
            j["error"].as_str().unwrap().contains(want),
            "{body}: {j} should say {want:?}"
        );
    }
    assert_eq!(
        server.api().get("/v1/webhooks/x").await.unwrap().status,
        404
    );
    assert_eq!(
        server.api().delete("/v1/webhooks/x").await.unwrap().status,
        404
    );
    let r = server
        .api()
        .post_json("/v1/webhooks/x/test", &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json["error"], "no webhook named \"x\"");
    let unauthenticated = server
        .client
        .get(format!("{}/v1/webhooks", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // Replacing keeps the secret and the cursor unless told otherwise; from_seq replays.
    let before = hook(&server, "good").await;
    let (s, j) = put_hook(
        &server,
        "good",
        &json!({"url": good.url, "events": ["command.*"], "from_seq": 1}),
    )
    .await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["cursor"], 0);
    assert_eq!(j["created_at"], before["created_at"]);
    assert_eq!(j["delivered"], before["delivered"]);
    let enqueued = events_after(&server, 0)
        .await
        .iter()
        .filter(|e| e["kind"] == "command.enqueued")
        .count();
    eventually("the replay from seq 1", 20, || async {
        let n = good
            .got()
            .iter()
            .filter(|g| g.kind == "command.enqueued" && g.status < 300)
            .count();
        (n == 2 * enqueued).then_some(())
    })
    .await;
    good.assert_no_rejections();

    // Deletion stops delivery to it.
    assert_eq!(
        server
            .api()
            .delete("/v1/webhooks/slow")
            .await
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        server.api().get("/v1/webhooks/slow").await.unwrap().status,
        404
    );
    let listed = server.api().get("/v1/webhooks").await.unwrap();
    let names: Vec<&str> = listed.json["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good"]);
    server.stop().await;
}

/// A subscription whose undelivered events were pruned says so, emits an event, and continues
/// from the oldest retained one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_events_are_reported_and_delivery_continues() {
    let server = TestServer::start_with(|b| b.webhook_options(fast_options(5000)))
        .await
        .unwrap();
    let secret = "another-secret-for-pruning-tests";
    let receiver = Receiver::start(secret, 0).await;
    let (s, j) = put_hook(
        &server,
        "late",
        &json!({"url": receiver.url, "secret": secret, "events": ["test.*"], "enabled": false, "from_seq": 1}),
    )
    .await;
    assert_eq!(s, 201, "{j}");
    assert_eq!(j["cursor"], 0);
    let store = server.engine.store();
    let ev = |k: &str| pomona::store::NewEvent {
        kind: k.into(),
        enrollment_id: None,
        data: json!({}),
    };
    let now = time::OffsetDateTime::now_utc();
    store
        .append_events(vec![ev("test.old"), ev("test.old")], now)
        .await
        .unwrap();
    // Retention removes everything so far, before the disabled subscription saw any of it.
    store
        .prune_events(now + time::Duration::seconds(1))
        .await
        .unwrap();
    let fresh = store
        .append_events(vec![ev("test.fresh")], now + time::Duration::seconds(2))
        .await
        .unwrap()[0]
        .seq;
    let (s, j) = put_hook(
        &server,
        "late",
        &json!({"url": receiver.url, "events": ["test.*"]}),
    )
    .await;
    assert_eq!(s, 200, "{j}");
    let state = eventually("the fresh event", 20, || async {
        let h = hook(&server, "late").await;
        (h["delivered"] == 1).then_some(h)
    })
    .await;
    receiver.assert_no_rejections();
    let got = receiver.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].seq, got[0].kind.as_str()), (fresh, "test.fresh"));
    assert_eq!(
        state["last_error"].as_str().unwrap(),
        format!(
            "events 1..={} were pruned from the outbox before they were delivered; continuing from {fresh}",
            fresh - 1
        )
    );
    let pruned = events_after(&server, fresh)
        .await
        .into_iter()
        .find(|e| e["kind"] == "webhook.events_pruned")
        .expect("a webhook.events_pruned event");
    assert_eq!(
        pruned["data"],
        json!({"name": "late", "first_lost": 1, "last_lost": fresh - 1, "resumed_at": fresh})
    );
    server.stop().await;
}
