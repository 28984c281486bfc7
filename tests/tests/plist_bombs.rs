//! Issue 11, attacks 1 and 2 against the real `pomona serve` binary: a ~200-byte binary plist
//! whose shared references expand to 2^30 (and 2^40) values, and a 750 KB XML plist of 50,000
//! nested arrays, PUT to `/mdm/checkin` anonymously and signed by an enrolled device. Each is
//! refused with a 4xx, the process stays up and answers, and its resident memory stays near what
//! it was before.

use std::time::{Duration, Instant};

use pomona_testkit::device::{Device, DeviceIdentity};
use pomona_testkit::server::{ServeCa, ServeProcess};

const CHECKIN: &str = "application/x-apple-aspen-mdm-checkin";

const BOMBS: [(&str, &[u8]); 3] = [
    (
        "bplist-bomb-30",
        include_bytes!("../../fuzz/corpus/checkin/bplist-bomb-30"),
    ),
    (
        "bplist-bomb-40",
        include_bytes!("../../fuzz/corpus/checkin/bplist-bomb-40"),
    ),
    (
        "xml-deep-50000",
        include_bytes!("../../fuzz/corpus/checkin/xml-deep-50000"),
    ),
];

/// Resident memory of `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test]
async fn plist_bombs_are_refused_and_the_server_survives() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve_ca = ServeCa::write(dir.path()).unwrap();
    let key = "plist-bomb-api-key-0123456789";
    let mut p = ServeProcess::start(&data, &serve_ca.env(key), &[])
        .await
        .unwrap();
    let pid = p.child.id().unwrap();
    let client = reqwest::Client::new();
    let device = Device::new(
        DeviceIdentity::issue(&serve_ca.ca, "bomb-device").unwrap(),
        &p.url,
        client.clone(),
    );
    device.enroll().await.unwrap();
    assert!(device.idle().await.unwrap().is_none());
    let before = rss_kib(pid);
    let checkin_url = format!("{}/mdm/checkin", p.url);

    for (name, bomb) in BOMBS {
        for signed in [false, true] {
            let started = Instant::now();
            let send = async {
                if signed {
                    device
                        .put(&checkin_url, CHECKIN, bomb.to_vec())
                        .await
                        .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
                } else {
                    let r = client
                        .put(&checkin_url)
                        .header("Content-Type", CHECKIN)
                        .body(bomb.to_vec())
                        .send()
                        .await?;
                    Ok((r.status().as_u16(), r.text().await?))
                }
            };
            let (status, body) = tokio::time::timeout(Duration::from_secs(30), send)
                .await
                .unwrap_or_else(|_| panic!("{name} (signed: {signed}): no answer in 30 s"))
                .unwrap_or_else(|e| panic!("{name} (signed: {signed}): {e}"));
            let took = started.elapsed();
            assert!(
                (400..500).contains(&status),
                "{name} (signed: {signed}): {status} {body}"
            );
            assert!(
                took < Duration::from_secs(5),
                "{name} (signed: {signed}) took {took:?}"
            );
            if signed {
                // The parser saw it: the answer names the limit.
                assert!(
                    body.contains("plist nesting deeper than 64")
                        || body.contains("plist has more than"),
                    "{name}: {body}"
                );
            }
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "{name} (signed: {signed}) killed the server"
            );
            let health = client
                .get(format!("{}/health", p.url))
                .send()
                .await
                .unwrap();
            assert!(health.status().is_success());
            assert!(
                device.idle().await.unwrap().is_none(),
                "the device still works"
            );
            let now = rss_kib(pid);
            eprintln!(
                "{name} (signed: {signed}): {status} in {took:?}; VmRSS {now} KiB, before {before} KiB"
            );
            assert!(
                now <= before * 3,
                "{name} (signed: {signed}): resident memory {now} KiB, was {before} KiB"
            );
        }
    }
}
