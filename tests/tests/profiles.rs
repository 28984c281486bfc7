//! The configuration-profile library over real HTTP: upload, list, download, replace, refused
//! uploads that leave the stored profile alone, delete; a profile converted to binary by
//! `plistutil`; and an `InstallProfile` built from the library reaching a simulated device.

use std::path::Path;
use std::process::Command;

use pomona::wire::enrollment_id::EnrollmentId;
use pomona_testkit::server::{TEST_API_KEY, TestServer};
use serde_json::Value;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../engine/tests/fixtures/profiles"
);
const WIFI: &[u8] = include_bytes!("../../engine/tests/fixtures/profiles/wifi.mobileconfig");
const WIFI_SIGNED: &[u8] =
    include_bytes!("../../engine/tests/fixtures/profiles/wifi-signed.mobileconfig");
const RESTRICTIONS: &[u8] =
    include_bytes!("../../engine/tests/fixtures/profiles/restrictions.mobileconfig");
const USER_DOCK: &[u8] =
    include_bytes!("../../engine/tests/fixtures/profiles/user-dock.mobileconfig");
const MISSING_UUID: &[u8] = include_bytes!(
    "../../engine/tests/fixtures/profiles/malformed/missing-payload-uuid.mobileconfig"
);
const TAMPERED: &[u8] =
    include_bytes!("../../engine/tests/fixtures/profiles/malformed/tampered-signed.mobileconfig");
const BARE_PAYLOAD: &[u8] =
    include_bytes!("../../engine/tests/fixtures/profiles/malformed/bare-payload.mobileconfig");

struct Http<'a> {
    server: &'a TestServer,
}

struct Reply {
    status: u16,
    content_type: Option<String>,
    disposition: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Http<'_> {
    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let r = req.bearer_auth(TEST_API_KEY).send().await.unwrap();
        let header = |name| {
            r.headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let disposition = header(reqwest::header::CONTENT_DISPOSITION);
        Reply {
            status: r.status().as_u16(),
            content_type,
            disposition,
            body: r.bytes().await.unwrap().to_vec(),
        }
    }

    async fn put(&self, name: &str, body: &[u8]) -> Reply {
        let url = format!("{}/v1/profiles/{name}", self.server.url);
        self.send(self.server.client.put(url).body(body.to_vec()))
            .await
    }

    async fn get(&self, path: &str) -> Reply {
        let url = format!("{}{path}", self.server.url);
        self.send(self.server.client.get(url)).await
    }

    async fn delete(&self, name: &str) -> Reply {
        let url = format!("{}/v1/profiles/{name}", self.server.url);
        self.send(self.server.client.delete(url)).await
    }

    async fn download(&self, name: &str) -> Reply {
        self.get(&format!("/v1/profiles/{name}?download=1")).await
    }

    async fn names(&self) -> Vec<String> {
        let r = self.get("/v1/profiles").await;
        assert_eq!(r.status, 200);
        r.json()["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_download_replace_refuse_delete() {
    let server = TestServer::start().await.unwrap();
    let http = Http { server: &server };
    assert!(http.names().await.is_empty());

    // Upload: 201 with the metadata.
    let r = http.put("office-wifi", WIFI).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["change"], "created");
    assert_eq!(j["name"], "office-wifi");
    assert_eq!(j["sha256"], sha256_hex(WIFI));
    assert_eq!(j["size"], WIFI.len());
    assert_eq!(j["profile"]["identifier"], "com.example.wifi.office");
    assert_eq!(j["profile"]["display_name"], "Office Wi-Fi");
    assert_eq!(j["profile"]["scope"], "System");
    assert_eq!(j["profile"]["user_scoped"], false);
    assert_eq!(j["profile"]["removal_disallowed"], true);
    assert_eq!(j["profile"]["signed"], false);
    assert_eq!(j["profile"]["format"], "xml");
    assert_eq!(
        j["profile"]["payloads"][0]["type"],
        "com.apple.wifi.managed"
    );
    assert_eq!(
        j["profile"]["payloads"][0]["identifier"],
        "com.example.wifi.office.payload"
    );

    assert_eq!(http.put("baseline", RESTRICTIONS).await.status, 201);
    let r = http.put("dock", USER_DOCK).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["profile"]["user_scoped"], true);

    // List: metadata only, by name.
    assert_eq!(http.names().await, ["baseline", "dock", "office-wifi"]);
    let listed = http.get("/v1/profiles").await.json();
    assert_eq!(
        listed["profiles"][0]["profile"]["payloads"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Metadata and download.
    let r = http.get("/v1/profiles/office-wifi").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["profile"]["uuid"],
        "0E6F3C1B-2A94-4D7E-8B50-C3D1A9F27E16"
    );
    let r = http.download("office-wifi").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/x-apple-aspen-config")
    );
    assert!(
        r.disposition
            .as_deref()
            .is_some_and(|d| d.contains("office-wifi.mobileconfig")),
        "{:?}",
        r.disposition
    );
    assert_eq!(r.body, WIFI, "byte for byte");

    // Replace with the signed version.
    let r = http.put("office-wifi", WIFI_SIGNED).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["change"], "replaced");
    assert_eq!(j["profile"]["signed"], true);
    assert_eq!(
        j["profile"]["signer"]["subject"],
        "CN=Pomona Fixture Signer, O=Example Inc."
    );
    assert_eq!(http.download("office-wifi").await.body, WIFI_SIGNED);
    let r = http.put("office-wifi", WIFI_SIGNED).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["change"], "unchanged");

    // Refused uploads leave the stored profile alone.
    let refused: [(&str, &[u8], &str); 5] = [
        (
            "office-wifi",
            MISSING_UUID,
            "payload 3 (com.apple.wifi.managed): missing PayloadUUID",
        ),
        (
            "office-wifi",
            TAMPERED,
            "signed profile: the signature does not match",
        ),
        ("office-wifi", BARE_PAYLOAD, "not \"Configuration\""),
        ("office-wifi", b"", "empty body"),
        (
            "office-wifi",
            b"{ PayloadType = Configuration; }",
            "not a valid XML property list",
        ),
    ];
    for (name, body, message) in refused {
        let r = http.put(name, body).await;
        assert_eq!(r.status, 400, "{message}");
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains(message),
            "{error:?} should contain {message:?}"
        );
    }
    for bad in [".hidden", "with%20space", &"x".repeat(65)] {
        let r = http.put(bad, WIFI).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("invalid profile name")
        );
    }
    let too_big = vec![b' '; pomona::profiles::MAX_PROFILE_BYTES + 1];
    assert_eq!(http.put("office-wifi", &too_big).await.status, 413);
    assert_eq!(http.download("office-wifi").await.body, WIFI_SIGNED);
    assert_eq!(http.names().await, ["baseline", "dock", "office-wifi"]);

    // Query and lookup errors.
    assert_eq!(
        http.get("/v1/profiles/office-wifi?download=maybe")
            .await
            .status,
        400
    );
    assert_eq!(
        http.get("/v1/profiles/office-wifi?format=raw").await.status,
        400
    );
    assert_eq!(
        http.get("/v1/profiles/office-wifi?download=0").await.json()["name"],
        "office-wifi"
    );
    assert_eq!(http.get("/v1/profiles/nope").await.status, 404);
    assert_eq!(http.download("nope").await.status, 404);
    let anonymous = server
        .client
        .get(format!("{}/v1/profiles", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Delete.
    assert_eq!(http.delete("office-wifi").await.status, 204);
    let r = http.delete("office-wifi").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("office-wifi"));
    assert_eq!(http.get("/v1/profiles/office-wifi").await.status, 404);
    assert_eq!(http.names().await, ["baseline", "dock"]);

    // Every change is an event; refused and unchanged uploads are not.
    let events = http.get("/v1/events?after=0&limit=1000").await.json();
    let profile_events: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("profile."))
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["data"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("profile.changed", "office-wifi"),
        ("profile.changed", "baseline"),
        ("profile.changed", "dock"),
        ("profile.changed", "office-wifi"),
        ("profile.deleted", "office-wifi"),
    ];
    assert_eq!(
        profile_events,
        expected.map(|(k, n)| (k.to_owned(), n.to_owned()))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_profile_reaches_a_device_as_install_profile() {
    let server = TestServer::start().await.unwrap();
    let http = Http { server: &server };
    assert_eq!(http.put("baseline", RESTRICTIONS).await.status, 201);
    let device = server.device().await.unwrap();
    device.enroll().await.unwrap();

    let library = server.engine.profiles();
    assert!(
        library
            .install_command("missing", "X")
            .await
            .unwrap()
            .is_none()
    );
    let command = library
        .install_command("baseline", "INSTALL-baseline-1")
        .await
        .unwrap()
        .unwrap();
    let outcome = server
        .engine
        .commands()
        .enqueue(&command, &[EnrollmentId::new(&device.udid)], false)
        .await
        .unwrap();
    assert_eq!(outcome.queued(), 1);

    let received = device.idle().await.unwrap().expect("a command");
    assert_eq!(received.uuid, "INSTALL-baseline-1");
    assert_eq!(received.request_type, "InstallProfile");
    let root = plist::Value::from_reader(std::io::Cursor::new(&received.raw)).unwrap();
    let payload = root.as_dictionary().unwrap()["Command"]
        .as_dictionary()
        .unwrap()["Payload"]
        .as_data()
        .unwrap();
    assert_eq!(payload, RESTRICTIONS, "the device gets the uploaded bytes");
    assert!(
        device
            .acknowledge("INSTALL-baseline-1")
            .await
            .unwrap()
            .is_none()
    );
    server.stop().await;
}

/// `plistutil` (Debian `libplist-utils`), a third-party plist implementation. CI installs it
/// (`.ci/run`) and sets `POMONA_REQUIRE_PLISTUTIL=1`; elsewhere the test is skipped with a note.
fn plistutil() -> Option<&'static str> {
    let found = Command::new("plistutil")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty());
    if found {
        return Some("plistutil");
    }
    assert!(
        std::env::var_os("POMONA_REQUIRE_PLISTUTIL").is_none(),
        "POMONA_REQUIRE_PLISTUTIL is set but plistutil is not installed (apt-get install libplist-utils)"
    );
    eprintln!(
        "note: plistutil not found (apt-get install libplist-utils); skipping the plistutil check"
    );
    None
}

fn convert(tool: &str, input: &Path, output: &Path, format: &str) {
    let out = Command::new(tool)
        .arg("-i")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["-f", format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plistutil failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_converted_to_binary_by_plistutil_is_accepted() {
    let Some(tool) = plistutil() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin_path = dir.path().join("restrictions.bin.mobileconfig");
    convert(
        tool,
        &Path::new(FIXTURES).join("restrictions.mobileconfig"),
        &bin_path,
        "bin",
    );
    let bin = std::fs::read(&bin_path).unwrap();
    assert!(
        bin.starts_with(b"bplist00"),
        "plistutil wrote a binary plist"
    );

    let server = TestServer::start().await.unwrap();
    let http = Http { server: &server };
    let xml = http.put("baseline-xml", RESTRICTIONS).await.json();
    let r = http.put("baseline-bin", &bin).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["profile"]["format"], "binary");
    let mut binary_profile = j["profile"].clone();
    binary_profile["format"] = "xml".into();
    assert_eq!(
        binary_profile, xml["profile"],
        "the same profile in either encoding"
    );

    // What the library serves back is still the binary plist plistutil wrote, and it reads it.
    let served = http.download("baseline-bin").await.body;
    assert_eq!(served, bin);
    let served_path = dir.path().join("served.mobileconfig");
    std::fs::write(&served_path, &served).unwrap();
    let back = dir.path().join("back.xml");
    convert(tool, &served_path, &back, "xml");
    let text = std::fs::read_to_string(&back).unwrap();
    assert!(
        text.contains("com.example.restrictions.screensaver"),
        "{text}"
    );
    server.stop().await;
}
