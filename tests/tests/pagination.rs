//! One pagination convention across the admin API's lists: `after` and `limit` in, `next` out
//! (`docs/api.md`, *Pagination*). `GET /v1/devices` still answers the deprecated `next_after`,
//! equal to `next`, until 0.2.

use std::time::{Duration, Instant};

use pomona_testkit::api::ApiClient;
use pomona_testkit::server::TestServer;
use serde_json::Value;

/// Read `path` two items at a time, passing each page's `next` as the next `after`, and check
/// the convention on every page: a full page's `next` is its last item's `key`, a short page's
/// is null. Returns the items in order.
async fn walk(api: &ApiClient, path: &str, items: &str, key: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(a) => format!("{path}?limit=2&after={a}"),
            None => format!("{path}?limit=2"),
        };
        let r = api.get(&url).await.unwrap();
        assert_eq!(r.status, 200, "{url}: {}", r.json);
        let page = r.json[items].as_array().unwrap().clone();
        assert!(
            r.json.as_object().unwrap().contains_key("next"),
            "{url}: no `next` in {}",
            r.json
        );
        let next = &r.json["next"];
        if page.len() == 2 {
            assert_eq!(next, &page[1][key], "{url}: `next` is the last {key}");
        } else {
            assert!(
                next.is_null(),
                "{url}: a short page ends the list: {}",
                r.json
            );
        }
        if path == "/v1/devices" {
            assert!(r.json.as_object().unwrap().contains_key("next_after"));
            assert_eq!(
                r.json["next_after"], *next,
                "{url}: the deprecated `next_after` equals `next`"
            );
        }
        all.extend(page);
        match next.as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return all,
        }
    }
}

#[tokio::test]
async fn enrollments_and_devices_page_with_after_and_next() {
    let s = TestServer::start().await.unwrap();
    let api = s.api();
    for _ in 0..5 {
        s.device().await.unwrap().enroll().await.unwrap();
    }
    // Device records are written by the setup flow, which follows the event outbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get("/v1/devices").await.unwrap().json["devices"]
        .as_array()
        .unwrap()
        .len()
        < 5
    {
        assert!(Instant::now() < deadline, "device records were not written");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    for (path, items, key) in [
        ("/v1/enrollments", "enrollments", "id"),
        ("/v1/devices", "devices", "serial_number"),
    ] {
        let paged = walk(&api, path, items, key).await;
        let whole = api.get(&format!("{path}?limit=1000")).await.unwrap().json;
        assert_eq!(&Value::Array(paged), &whole[items], "{path}: pages add up");
        assert_eq!(whole[items].as_array().unwrap().len(), 5, "{path}");
        assert!(whole["next"].is_null(), "{path}: {whole}");
    }
    s.stop().await;
}

#[tokio::test]
async fn events_page_with_after_and_next() {
    let s = TestServer::start().await.unwrap();
    let api = s.api();
    for _ in 0..2 {
        s.device().await.unwrap().enroll().await.unwrap();
    }
    let whole = api.get("/v1/events?limit=1000").await.unwrap().json;
    let whole = whole["events"].as_array().unwrap().clone();
    assert!(whole.len() >= 4, "{whole:?}");
    // The event log is followed, not just listed: `next` is always the `after` to poll with.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let r = api
            .get(&format!("/v1/events?limit=3&after={after}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.json);
        let page = r.json["events"].as_array().unwrap().clone();
        let next = r.json["next"].as_u64().unwrap();
        match page.last() {
            Some(last) => assert_eq!(next, last["seq"].as_u64().unwrap()),
            None => {
                assert_eq!(next, after, "an empty page keeps the cursor");
                break;
            }
        }
        paged.extend(page);
        after = next;
    }
    assert_eq!(paged[..whole.len()], whole[..]);
    s.stop().await;
}
