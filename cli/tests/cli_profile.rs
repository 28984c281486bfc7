//! `pomona profile put|list|show|delete` against an engine serving on loopback.

mod common;

use std::process::Output;

const KEY: &str = "pomona-cli-profile-test-key-0123";
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../engine/tests/fixtures/profiles"
);

async fn pomona(url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pomona"))
        .args(args)
        .env("POMONA_URL", url)
        .env("POMONA_API_KEY", KEY)
        .output()
        .await
        .expect("run pomona")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_subcommands_round_trip_through_the_api() {
    let served = common::Served::start(KEY).await;
    let url = served.url.clone();

    let wifi = format!("{FIXTURES}/wifi.mobileconfig");
    let out = pomona(&url, &["profile", "put", "office-wifi", &wifi]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let put: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(put["change"], "created");
    assert_eq!(put["profile"]["identifier"], "com.example.wifi.office");

    let out = pomona(&url, &["profile", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["profiles"][0]["name"], "office-wifi");

    let out = pomona(&url, &["profile", "show", "office-wifi"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["sha256"], put["sha256"]);

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.mobileconfig");
    let out = pomona(
        &url,
        &[
            "profile",
            "show",
            "office-wifi",
            "--out",
            copy.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&wifi).unwrap(),
        "the downloaded bytes are the uploaded ones"
    );

    let bad = format!("{FIXTURES}/malformed/missing-payload-uuid.mobileconfig");
    let out = pomona(&url, &["profile", "put", "office-wifi", &bad]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("payload 3 (com.apple.wifi.managed): missing PayloadUUID"),
        "{}",
        text(&out.stderr)
    );
    let out = pomona(&url, &["profile", "put", "x", "/nonexistent.mobileconfig"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent.mobileconfig"));

    let out = pomona(&url, &["profile", "delete", "office-wifi"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Deleted profile \"office-wifi\""));
    let out = pomona(&url, &["profile", "show", "office-wifi"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    served.stop().await;
}
