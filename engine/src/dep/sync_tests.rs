//! The syncer and the assigner against an in-process fake of Apple's DEP API: scripted pages,
//! cursors and errors, no HTTP.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::*;
use crate::dep::{DepOptions, DepService};
use crate::events::Outbox;
use crate::seal::SealKey;
use crate::store::redb::RedbStore;
use crate::store::{DepDeviceQuery, DepStore, Event, EventStore};
use crate::wire::dep::{
    self as wire, Account, AccountUrl, AssignResponse, DefineProfileResponse, DevicePage, Limit,
    OAuthToken,
};

/// One call the fake answered, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Account,
    Fetch(Option<String>, u32),
    Sync(String, u32),
    Define(Option<String>),
    Assign(String, Vec<String>),
}

/// Apple's DEP API, scripted: each call takes the next scripted answer of its kind.
/// `fetch` and `sync` share one script of pages (the order the syncer must ask for them);
/// an unscripted page call fails the run, an unscripted `account` says nothing about limits,
/// an unscripted definition succeeds with a new UUID (`UUID-1`, `UUID-2`, …), an unscripted assignment succeeds.
#[derive(Default)]
struct FakeAbm {
    calls: Mutex<Vec<Call>>,
    defined: AtomicUsize,
    account: Mutex<VecDeque<Result<Account, DepError>>>,
    pages: Mutex<VecDeque<Result<DevicePage, DepError>>>,
    definitions: Mutex<VecDeque<Result<DefineProfileResponse, DepError>>>,
    assignments: Mutex<VecDeque<Result<AssignResponse, DepError>>>,
}

impl FakeAbm {
    fn page(&self, page: Result<DevicePage, DepError>) -> &Self {
        self.pages.lock().unwrap().push_back(page);
        self
    }
    fn account(&self, answer: Result<Account, DepError>) -> &Self {
        self.account.lock().unwrap().push_back(answer);
        self
    }
    fn assignment(&self, answer: Result<AssignResponse, DepError>) -> &Self {
        self.assignments.lock().unwrap().push_back(answer);
        self
    }
    fn definition(&self, answer: Result<DefineProfileResponse, DepError>) -> &Self {
        self.definitions.lock().unwrap().push_back(answer);
        self
    }
    /// The calls since the last look.
    fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
    fn next_page(&self) -> Result<DevicePage, DepError> {
        self.pages.lock().unwrap().pop_front().unwrap_or_else(|| {
            Err(DepError::Transport(
                "fake: no page scripted for this call".into(),
            ))
        })
    }
}

#[async_trait]
impl DepApi for FakeAbm {
    async fn account(&self) -> Result<Account, DepError> {
        self.calls.lock().unwrap().push(Call::Account);
        let scripted = self.account.lock().unwrap().pop_front();
        scripted.unwrap_or_else(|| Ok(Account::default()))
    }
    async fn fetch(&self, cursor: Option<&str>, limit: u32) -> Result<DevicePage, DepError> {
        let call = Call::Fetch(cursor.map(str::to_owned), limit);
        self.calls.lock().unwrap().push(call);
        self.next_page()
    }
    async fn sync(&self, cursor: &str, limit: u32) -> Result<DevicePage, DepError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Sync(cursor.to_owned(), limit));
        self.next_page()
    }
    async fn define_profile(&self, profile: &Profile) -> Result<DefineProfileResponse, DepError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Define(profile.url.clone()));
        let n = self.defined.fetch_add(1, Ordering::SeqCst) + 1;
        let scripted = self.definitions.lock().unwrap().pop_front();
        scripted.unwrap_or_else(|| {
            Ok(DefineProfileResponse {
                profile_uuid: format!("UUID-{n}"),
                ..Default::default()
            })
        })
    }
    async fn assign(
        &self,
        profile_uuid: &str,
        serials: &[String],
    ) -> Result<AssignResponse, DepError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Assign(profile_uuid.to_owned(), serials.to_vec()));
        let scripted = self.assignments.lock().unwrap().pop_front();
        scripted.unwrap_or_else(|| {
            Ok(AssignResponse {
                profile_uuid: profile_uuid.to_owned(),
                devices: serials
                    .iter()
                    .map(|s| (s.clone(), "SUCCESS".to_owned()))
                    .collect(),
                ..Default::default()
            })
        })
    }
}

const SERVER: &str = "abm";
const PROFILE: &str = "default";

struct Harness {
    store: Arc<RedbStore>,
    dep: DepService,
    fake: Arc<FakeAbm>,
}

impl Harness {
    /// A server with a token and a default profile, whose API calls go to a fresh fake.
    async fn new() -> Self {
        Self::with_options(DepOptions::new("https://mdm.example")).await
    }

    async fn with_options(options: DepOptions) -> Self {
        let store = Arc::new(RedbStore::in_memory().unwrap());
        let fake = Arc::new(FakeAbm::default());
        let mut dep = DepService::new(
            store.clone(),
            SealKey::generate(),
            Outbox::new(store.clone(), 64),
            options,
        );
        let api = fake.clone();
        dep.connect = Box::new(move |_, _, _| api.clone());
        let s = dep.create_server(SERVER).await.unwrap();
        let cert = openssl::x509::X509::from_pem(s.current_keys.unwrap().cert_pem.as_bytes())
            .expect("server certificate");
        let token = OAuthToken {
            consumer_key: "CK".into(),
            consumer_secret: "CS".into(),
            access_token: "AT".into(),
            access_secret: "AS".into(),
            access_token_expiry: "2099-01-01T00:00:00Z".into(),
        };
        let p7m = wire::encrypt_token(&token, &cert).unwrap();
        dep.upload_token(SERVER, &p7m, false).await.unwrap();
        let template = Profile {
            profile_name: "Default".into(),
            ..Default::default()
        };
        dep.put_profile(PROFILE, template).await.unwrap();
        dep.patch_server(
            SERVER,
            crate::dep::ServerPatch {
                default_profile: Some(PROFILE.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        Self { store, dep, fake }
    }

    async fn server(&self) -> DepServer {
        self.store.dep_server(SERVER).await.unwrap().unwrap()
    }

    async fn device(&self, serial: &str) -> DepDeviceRecord {
        self.store
            .dep_device(SERVER, serial)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{serial} is not recorded"))
    }

    async fn devices(&self) -> Vec<DepDeviceRecord> {
        self.store
            .dep_devices(&DepDeviceQuery {
                server: Some(SERVER.into()),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// Events logged after sequence number `after`.
    async fn events_after(&self, after: u64) -> Vec<Event> {
        self.store.events_after(after, 1000).await.unwrap()
    }

    async fn last_seq(&self) -> u64 {
        self.events_after(0).await.last().map_or(0, |e| e.seq)
    }

    /// Store a cursor as if earlier runs had left it there.
    async fn set_cursor(&self, phase: SyncPhase, cursor: &str, started: time::Duration) {
        let mut s = self.server().await;
        s.phase = phase;
        s.cursor = Some(cursor.into());
        s.cursor_started_at = Some(now() - started);
        self.store.put_dep_server(&s).await.unwrap();
    }
}

fn device(serial: &str) -> Device {
    Device {
        serial_number: serial.into(),
        model: Some("Mac".into()),
        device_family: Some("Mac".into()),
        os: Some("OSX".into()),
        ..Default::default()
    }
}

fn synced(serial: &str, op: &str, op_date: &str) -> Device {
    Device {
        op_type: Some(op.into()),
        op_date: Some(op_date.into()),
        ..device(serial)
    }
}

fn page(cursor: &str, more_to_follow: bool, devices: Vec<Device>) -> Result<DevicePage, DepError> {
    Ok(DevicePage {
        cursor: cursor.into(),
        devices,
        more_to_follow,
        ..Default::default()
    })
}

fn api_error(code: &str) -> DepError {
    DepError::Api {
        path: "/devices/sync".into(),
        status: 400,
        body: code.into(),
    }
}

fn limit(n: u32) -> Account {
    Account {
        urls: vec![AccountUrl {
            uri: "/server/devices".into(),
            limit: Some(Limit {
                default: n,
                maximum: 1000,
            }),
        }],
        ..Default::default()
    }
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn serials(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_full_fetch_follows_more_to_follow_then_moves_to_sync() {
    let h = Harness::new().await;
    h.fake
        .account(Ok(limit(2)))
        .page(page("c1", true, vec![device("A"), device("B")]))
        .page(page("c2", false, vec![device("C")]));
    let before = h.last_seq().await;

    let report = h.dep.sync_server(SERVER, false).await.unwrap();

    assert_eq!(
        report,
        SyncReport {
            pages: 2,
            devices: 3,
            queued: 3,
            same_cursor: false
        }
    );
    let calls = h.fake.take_calls();
    assert_eq!(
        calls[..3],
        [
            Call::Account,
            Call::Fetch(None, 2),
            Call::Fetch(Some("c1".into()), 2)
        ]
    );
    // Then the assigner: the default profile is defined once (pointed at the engine) and the
    // three new devices are assigned in one request.
    assert_eq!(
        calls[3..],
        [
            Call::Define(Some("https://mdm.example/mdm/enroll".into())),
            Call::Assign("UUID-1".into(), serials(&["A", "B", "C"])),
        ]
    );
    let s = h.server().await;
    assert_eq!(s.cursor.as_deref(), Some("c2"));
    assert_eq!(s.phase, SyncPhase::Sync);
    assert!(s.cursor_started_at.is_some() && s.last_sync_at.is_some());
    for d in h.devices().await {
        assert!(d.present);
        assert_eq!(d.history.last().unwrap().op, "fetched");
        assert_eq!(d.assigned_profile.as_deref(), Some(PROFILE));
        assert_eq!(d.assign_result, Some(AssignResult::Success));
        assert_eq!(d.assign_due_at, None, "{} is done", d.serial_number);
    }
    let log = h.events_after(before).await;
    assert_eq!(
        kinds(&log),
        [
            kind::DEP_DEVICE_ADDED,
            kind::DEP_DEVICE_ADDED,
            kind::DEP_DEVICE_ADDED,
            kind::DEP_PROFILE_DEFINED,
            kind::DEP_DEVICE_ASSIGNED,
            kind::DEP_DEVICE_ASSIGNED,
            kind::DEP_DEVICE_ASSIGNED,
        ]
    );
    assert_eq!(log[0].data["serial_number"], "A");
    assert_eq!(log[0].data["op_type"], "fetched");
    assert_eq!(log[3].data["profile_uuid"], "UUID-1");
}

#[tokio::test]
async fn sync_pages_apply_ops_and_queue_only_what_the_builtin_rule_wants() {
    let h = Harness::new().await;
    h.fake
        .page(page("c1", false, vec![device("KEEP"), device("GONE")]));
    h.dep.sync_server(SERVER, false).await.unwrap();
    h.fake.take_calls();
    let before = h.last_seq().await;

    h.fake.page(page(
        "c2",
        false,
        vec![
            // Known and still assigned: nothing to do.
            synced("KEEP", "modified", "2024-01-02T00:00:00Z"),
            synced("GONE", "deleted", "2024-01-02T00:00:00Z"),
            synced("NEW", "added", "2024-01-02T00:00:00Z"),
            // Unassigned in ABM: assign again.
            Device {
                profile_status: Some("removed".into()),
                ..synced("BACK", "modified", "2024-01-02T00:00:00Z")
            },
            // Twice in one page: the later op_date wins.
            synced("TWICE", "added", "2024-01-03T00:00:00Z"),
            synced("TWICE", "deleted", "2024-01-01T00:00:00Z"),
        ],
    ));
    let report = h.dep.sync_server(SERVER, false).await.unwrap();

    assert_eq!(report.pages, 1);
    assert_eq!(report.devices, 5, "one entry per serial");
    assert_eq!(report.queued, 3, "NEW, BACK and TWICE");
    let calls = h.fake.take_calls();
    // Unscripted `/account` has no limits: the default page size.
    assert_eq!(calls[..2], [Call::Account, Call::Sync("c1".into(), 1000)]);
    assert_eq!(
        calls[2..],
        [Call::Assign(
            "UUID-1".into(),
            serials(&["BACK", "NEW", "TWICE"])
        )],
        "the profile defined by the first run is reused"
    );
    assert!(!h.device("GONE").await.present);
    assert!(h.device("TWICE").await.present);
    assert_eq!(h.device("TWICE").await.history.last().unwrap().op, "added");
    assert_eq!(h.device("KEEP").await.history.len(), 2);
    let log = h.events_after(before).await;
    let dep_events: Vec<(&str, &str)> = log
        .iter()
        .filter(|e| e.kind.starts_with("dep.device."))
        .map(|e| {
            (
                e.kind.as_str(),
                e.data["serial_number"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        dep_events,
        [
            (kind::DEP_DEVICE_MODIFIED, "BACK"),
            (kind::DEP_DEVICE_DELETED, "GONE"),
            (kind::DEP_DEVICE_MODIFIED, "KEEP"),
            (kind::DEP_DEVICE_ADDED, "NEW"),
            (kind::DEP_DEVICE_ADDED, "TWICE"),
        ]
    );
    let back = log
        .iter()
        .find(|e| e.data["serial_number"] == "BACK")
        .unwrap();
    assert_eq!(back.data["unassigned"], true);
    assert_eq!(back.data["known"], false);
    assert_eq!(back.data["unknown_modified"], true);
}

#[tokio::test]
async fn the_same_cursor_with_more_to_follow_stops_the_run_after_committing_the_page() {
    let h = Harness::new().await;
    h.set_cursor(SyncPhase::Sync, "LOOP", time::Duration::hours(1))
        .await;
    h.fake.page(page(
        "LOOP",
        true,
        vec![synced("A", "added", "2024-01-01T00:00:00Z")],
    ));

    let report = h.dep.sync_server(SERVER, false).await.unwrap();

    assert!(report.same_cursor);
    assert_eq!((report.pages, report.devices), (1, 1));
    let calls = h.fake.take_calls();
    assert_eq!(calls[..2], [Call::Account, Call::Sync("LOOP".into(), 1000)]);
    assert!(
        !calls.iter().skip(2).any(|c| matches!(c, Call::Sync(..))),
        "asked again: {calls:?}"
    );
    assert!(h.device("A").await.present);
    assert_eq!(h.server().await.cursor.as_deref(), Some("LOOP"));
}

#[tokio::test]
async fn exhausted_cursor_moves_a_fetch_to_sync_and_ends_a_sync() {
    let h = Harness::new().await;
    h.fake
        .page(page("c1", true, vec![device("A")]))
        .page(Err(api_error("EXHAUSTED_CURSOR")))
        .page(page("c2", true, vec![]))
        .page(Err(api_error("EXHAUSTED_CURSOR")));

    let report = h.dep.sync_server(SERVER, true).await.unwrap();

    assert_eq!((report.pages, report.devices), (2, 1));
    assert_eq!(
        h.fake.take_calls()[..5],
        [
            Call::Account,
            Call::Fetch(None, 1000),
            Call::Fetch(Some("c1".into()), 1000),
            Call::Sync("c1".into(), 1000),
            Call::Sync("c2".into(), 1000),
        ]
    );
    let s = h.server().await;
    assert_eq!(
        (s.phase, s.cursor.as_deref()),
        (SyncPhase::Sync, Some("c2"))
    );
    assert_eq!(s.last_error, None);
}

#[tokio::test]
async fn a_refused_cursor_restarts_a_full_fetch_once_per_run() {
    for code in ["EXPIRED_CURSOR", "INVALID_CURSOR", "CURSOR_REQUIRED"] {
        let h = Harness::new().await;
        h.set_cursor(SyncPhase::Sync, "OLD", time::Duration::days(1))
            .await;
        let chain_before = h.server().await.cursor_started_at.unwrap();
        h.fake
            .page(Err(api_error(code)))
            .page(page("NEW", false, vec![device("A")]));

        let report = h.dep.sync_server(SERVER, false).await.unwrap();

        assert_eq!(report.pages, 1, "{code}");
        assert_eq!(
            h.fake.take_calls()[..3],
            [
                Call::Account,
                Call::Sync("OLD".into(), 1000),
                Call::Fetch(None, 1000)
            ],
            "{code}"
        );
        let s = h.server().await;
        assert_eq!(s.cursor.as_deref(), Some("NEW"));
        assert!(
            s.cursor_started_at.unwrap() > chain_before,
            "{code}: a new chain"
        );
        assert_eq!(h.device("A").await.history.last().unwrap().op, "fetched");
    }

    // Refused again by the fresh fetch: the run fails instead of looping.
    let h = Harness::new().await;
    h.set_cursor(SyncPhase::Sync, "OLD", time::Duration::days(1))
        .await;
    h.fake
        .page(Err(api_error("EXPIRED_CURSOR")))
        .page(Err(api_error("EXPIRED_CURSOR")))
        .page(page("NEVER", false, vec![]));
    let err = h.dep.sync_server(SERVER, false).await.unwrap_err();
    assert!(
        matches!(&err, DepServiceError::Api(e) if e.is("EXPIRED_CURSOR")),
        "{err}"
    );
    assert_eq!(h.fake.take_calls().len(), 3, "account and two page calls");
    let s = h.server().await;
    assert_eq!(s.cursor.as_deref(), Some("OLD"));
    assert!(s.last_error.unwrap().contains("EXPIRED_CURSOR"));
    assert_eq!(s.token_state, TokenState::Valid, "not a token problem");
}

#[tokio::test]
async fn an_old_cursor_chain_or_a_full_run_starts_from_no_cursor() {
    let h = Harness::new().await;
    h.set_cursor(
        SyncPhase::Sync,
        "OLD",
        time::Duration::days(6) + time::Duration::hours(1),
    )
    .await;
    h.fake.page(page("c1", false, vec![]));
    h.dep.sync_server(SERVER, false).await.unwrap();
    assert_eq!(h.fake.take_calls()[1], Call::Fetch(None, 1000));

    h.set_cursor(SyncPhase::Sync, "FRESH", time::Duration::days(5))
        .await;
    h.fake.page(page("c2", false, vec![]));
    h.dep.sync_server(SERVER, false).await.unwrap();
    assert_eq!(h.fake.take_calls()[1], Call::Sync("FRESH".into(), 1000));

    h.fake.page(page("c3", false, vec![]));
    h.dep.sync_server(SERVER, true).await.unwrap();
    assert_eq!(h.fake.take_calls()[1], Call::Fetch(None, 1000));
}

#[tokio::test]
async fn token_errors_set_the_token_state_and_a_good_answer_clears_it() {
    let h = Harness::new().await;
    assert_eq!(h.server().await.token_state, TokenState::Valid);
    for (error, state) in [
        (DepError::TermsNotSigned, TokenState::TermsNotSigned),
        (
            DepError::Unauthorized("ACCESS_DENIED".into()),
            TokenState::Invalid,
        ),
    ] {
        let before = h.last_seq().await;
        h.fake.account(Err(error.clone()));
        let err = h.dep.sync_server(SERVER, false).await.unwrap_err();
        assert!(matches!(err, DepServiceError::Api(_)), "{err}");
        assert_eq!(
            h.fake.take_calls(),
            [Call::Account],
            "no page asked for with a refused token"
        );
        let s = h.server().await;
        assert_eq!(s.token_state, state);
        assert_eq!(s.last_error.as_deref(), Some(error.to_string().as_str()));
        let log = h.events_after(before).await;
        assert_eq!(kinds(&log), [kind::DEP_TOKEN_STATE]);
        assert_eq!(log[0].data["state"], serde_json::to_value(state).unwrap());

        // The same refusal again changes nothing more: no second event.
        h.fake.account(Err(error.clone()));
        h.dep.sync_server(SERVER, false).await.unwrap_err();
        h.fake.take_calls();
        assert!(h.events_after(before + 1).await.is_empty());
    }
    // Apple answers again: the token works.
    h.fake.page(page("c1", false, vec![]));
    h.dep.sync_server(SERVER, false).await.unwrap();
    let s = h.server().await;
    assert_eq!(s.token_state, TokenState::Valid);
    assert_eq!(s.last_error, None);
}

#[tokio::test]
async fn other_account_errors_fall_back_to_the_default_page_size() {
    let h = Harness::new().await;
    h.fake
        .account(Err(DepError::Transport("down".into())))
        .page(page("c1", false, vec![]));
    h.dep.sync_server(SERVER, false).await.unwrap();
    assert_eq!(
        h.fake.take_calls(),
        [Call::Account, Call::Fetch(None, DEFAULT_PAGE)]
    );
    // A page error that is not about the cursor fails the run without touching the token.
    h.fake.page(Err(DepError::Transport("reset".into())));
    let err = h.dep.sync_server(SERVER, false).await.unwrap_err();
    assert!(matches!(err, DepServiceError::Api(DepError::Transport(_))));
    let s = h.server().await;
    assert_eq!(s.token_state, TokenState::Valid);
    assert_eq!(s.cursor.as_deref(), Some("c1"));
    assert!(s.last_error.unwrap().contains("reset"));
}

/// One answer per serial, as Apple gives them.
fn answer(statuses: &[(&str, &str)], retry_after: Option<u64>) -> Result<AssignResponse, DepError> {
    Ok(AssignResponse {
        profile_uuid: "UUID-1".into(),
        devices: statuses
            .iter()
            .map(|(s, r)| (s.to_string(), r.to_string()))
            .collect(),
        retry_after_seconds: retry_after,
    })
}

/// Seconds between the last assignment attempt and the next one.
fn retry_in(d: &DepDeviceRecord) -> Option<i64> {
    d.assign_due_at
        .map(|due| (due - d.updated_at).whole_seconds())
}

#[tokio::test]
async fn per_device_results_decide_the_retry() {
    let mut options = DepOptions::new("https://mdm.example");
    options.failed_retry = std::time::Duration::from_secs(60);
    options.throttle_cooldown = std::time::Duration::from_secs(900);
    let h = Harness::with_options(options).await;
    let all = ["FAIL", "GONE", "MISSING", "OK", "SLOW"];
    h.fake
        .page(page("c1", false, all.iter().map(|s| device(s)).collect()))
        .assignment(answer(
            &[
                ("FAIL", "FAILED"),
                ("GONE", "NOT_ACCESSIBLE"),
                ("OK", "SUCCESS"),
                ("SLOW", "THROTTLED"),
            ],
            Some(120),
        ));
    let before = h.last_seq().await;
    h.dep.sync_server(SERVER, false).await.unwrap();

    let ok = h.device("OK").await;
    assert_eq!(
        (ok.assign_result, retry_in(&ok)),
        (Some(AssignResult::Success), None)
    );
    let gone = h.device("GONE").await;
    assert_eq!(
        (gone.assign_result, retry_in(&gone)),
        (Some(AssignResult::NotAccessible), None),
        "never retried"
    );
    let slow = h.device("SLOW").await;
    assert_eq!(
        (slow.assign_result, retry_in(&slow)),
        (Some(AssignResult::Throttled), Some(120)),
        "Apple's retry_after_seconds"
    );
    for serial in ["FAIL", "MISSING"] {
        let d = h.device(serial).await;
        assert_eq!(d.assign_result, Some(AssignResult::Failed), "{serial}");
        assert_eq!((d.assign_attempts, retry_in(&d)), (1, Some(60)), "{serial}");
    }
    assert!(
        h.device("MISSING")
            .await
            .assign_error
            .unwrap()
            .contains("FAILED")
    );
    let log = h.events_after(before).await;
    let results: Vec<(&str, &str)> = log
        .iter()
        .filter(|e| e.kind == kind::DEP_DEVICE_ASSIGNED || e.kind == kind::DEP_ASSIGNMENT_FAILED)
        .map(|e| (e.kind.as_str(), e.data["serial_number"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            (kind::DEP_ASSIGNMENT_FAILED, "FAIL"),
            (kind::DEP_ASSIGNMENT_FAILED, "GONE"),
            (kind::DEP_ASSIGNMENT_FAILED, "MISSING"),
            (kind::DEP_DEVICE_ASSIGNED, "OK"),
            (kind::DEP_ASSIGNMENT_FAILED, "SLOW"),
        ]
    );

    // Nothing is due yet: the assigner asks Apple nothing.
    h.fake.take_calls();
    h.dep.assign_due(SERVER).await.unwrap();
    assert_eq!(h.fake.take_calls(), []);

    // THROTTLED without a delay from Apple waits the configured cool-down.
    h.store
        .request_assignments(SERVER, PROFILE, &serials(&["SLOW"]), now())
        .await
        .unwrap();
    h.fake.assignment(answer(&[("SLOW", "THROTTLED")], None));
    h.dep.assign_due(SERVER).await.unwrap();
    assert_eq!(retry_in(&h.device("SLOW").await), Some(900));
}

#[tokio::test]
async fn failed_assignments_back_off_exponentially_up_to_an_hour() {
    let h = Harness::new().await;
    let delays: Vec<u64> = [0, 1, 2, 5, 6, 7, 40]
        .into_iter()
        .map(|n| h.dep.failed_delay(n).as_secs())
        .collect();
    assert_eq!(delays, [60, 120, 240, 1920, 3600, 3600, 3600]);

    // The attempts recorded with the device feed the delay of its next failure.
    h.fake
        .page(page("c1", false, vec![device("A")]))
        .assignment(answer(&[("A", "FAILED")], None));
    h.dep.sync_server(SERVER, false).await.unwrap();
    let a = h.device("A").await;
    assert_eq!((a.assign_attempts, retry_in(&a)), (1, Some(60)));
    // Time passes: make the retry due now (recording an outcome also counts an attempt).
    h.store
        .record_assignments(
            SERVER,
            vec![("A".into(), AssignResult::Failed, None, Some(now()))],
            Vec::new(),
            now(),
        )
        .await
        .unwrap();
    h.fake.take_calls();
    h.fake.assignment(answer(&[("A", "FAILED")], None));
    h.dep.assign_due(SERVER).await.unwrap();
    assert_eq!(
        h.fake.take_calls(),
        [Call::Assign("UUID-1".into(), serials(&["A"]))]
    );
    let a = h.device("A").await;
    assert_eq!((a.assign_attempts, retry_in(&a)), (3, Some(240)));
}

#[tokio::test]
async fn a_request_that_fails_as_a_whole_fails_its_devices_without_events() {
    let h = Harness::new().await;
    h.fake
        .page(page("c1", false, vec![device("A"), device("B")]))
        .assignment(Err(DepError::Api {
            path: "/profile/devices".into(),
            status: 400,
            body: "BAD_REQUEST".into(),
        }));
    let before = h.last_seq().await;
    h.dep.sync_server(SERVER, false).await.unwrap();
    for serial in ["A", "B"] {
        let d = h.device(serial).await;
        assert_eq!(d.assign_result, Some(AssignResult::Failed));
        assert_eq!(retry_in(&d), Some(60));
        assert!(d.assign_error.unwrap().contains("BAD_REQUEST"));
    }
    let log = h.events_after(before).await;
    assert!(
        !log.iter().any(|e| e.kind == kind::DEP_ASSIGNMENT_FAILED),
        "{:?}",
        kinds(&log)
    );
    assert_eq!(h.server().await.token_state, TokenState::Valid);

    // A refused token while assigning also records the token state.
    h.store
        .request_assignments(SERVER, PROFILE, &serials(&["A"]), now())
        .await
        .unwrap();
    h.fake.assignment(Err(DepError::TermsNotSigned));
    h.dep.assign_due(SERVER).await.unwrap();
    let s = h.server().await;
    assert_eq!(s.token_state, TokenState::TermsNotSigned);
    assert_eq!(
        h.device("A").await.assign_result,
        Some(AssignResult::Failed)
    );
}

#[tokio::test]
async fn a_profile_apple_refuses_fails_its_devices_and_is_defined_again_next_time() {
    let h = Harness::new().await;
    h.fake
        .page(page("c1", false, vec![device("A")]))
        .definition(Err(DepError::Api {
            path: "/profile".into(),
            status: 400,
            body: "CONFIG_URL_INVALID".into(),
        }));
    h.dep.sync_server(SERVER, false).await.unwrap();
    let calls = h.fake.take_calls();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Assign(..))),
        "{calls:?}"
    );
    let a = h.device("A").await;
    assert_eq!(a.assign_result, Some(AssignResult::Failed));
    assert!(
        a.assign_error
            .unwrap()
            .starts_with("profile definition failed")
    );
    let p = h.store.dep_profile(PROFILE).await.unwrap().unwrap();
    let def = &p.definitions[SERVER];
    assert_eq!(def.profile_uuid, None);
    assert!(def.error.as_deref().unwrap().contains("CONFIG_URL_INVALID"));

    // Due again: a refused definition is not reused.
    h.store
        .request_assignments(SERVER, PROFILE, &serials(&["A"]), now())
        .await
        .unwrap();
    h.dep.assign_due(SERVER).await.unwrap();
    let calls = h.fake.take_calls();
    assert!(matches!(calls[0], Call::Define(_)), "{calls:?}");
    assert!(matches!(&calls[1], Call::Assign(_, s) if *s == serials(&["A"])));
    assert_eq!(
        h.device("A").await.assign_result,
        Some(AssignResult::Success)
    );
}
