use std::io::Cursor;

use plist::Value;

use super::*;
use crate::store::redb::RedbStore;

const WIFI: &[u8] = include_bytes!("../../tests/fixtures/profiles/wifi.mobileconfig");
const WIFI_SIGNED: &[u8] = include_bytes!("../../tests/fixtures/profiles/wifi-signed.mobileconfig");
const RESTRICTIONS: &[u8] =
    include_bytes!("../../tests/fixtures/profiles/restrictions.mobileconfig");
const MISSING_UUID: &[u8] =
    include_bytes!("../../tests/fixtures/profiles/malformed/missing-payload-uuid.mobileconfig");

fn library() -> (ProfileLibrary, Outbox) {
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let outbox = Outbox::new(store.clone(), 64);
    (ProfileLibrary::new(store, outbox.clone()), outbox)
}

async fn events(outbox: &Outbox) -> Vec<(String, serde_json::Value)> {
    outbox
        .after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.data))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_list_replace_delete() {
    let (lib, outbox) = library();
    let created = lib.put("office-wifi", WIFI.to_vec()).await.unwrap();
    assert_eq!(created.change, Change::Created);
    assert_eq!(created.meta.name, "office-wifi");
    assert_eq!(created.meta.size, WIFI.len() as u64);
    assert_eq!(created.meta.sha256, hex::encode(openssl::sha::sha256(WIFI)));
    assert_eq!(created.meta.profile.identifier, "com.example.wifi.office");

    let stored = lib.get("office-wifi").await.unwrap().unwrap();
    assert_eq!(stored.bytes, WIFI, "the exact bytes");
    assert_eq!(stored.meta, created.meta);
    assert!(lib.get("nope").await.unwrap().is_none());
    assert!(lib.get("../etc").await.unwrap().is_none());

    lib.put("baseline", RESTRICTIONS.to_vec()).await.unwrap();
    let names: Vec<String> = lib
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["baseline", "office-wifi"]);

    let same = lib.put("office-wifi", WIFI.to_vec()).await.unwrap();
    assert_eq!(same.change, Change::Unchanged);
    assert_eq!(same.meta.uploaded_at, created.meta.uploaded_at);

    let replaced = lib.put("office-wifi", WIFI_SIGNED.to_vec()).await.unwrap();
    assert_eq!(replaced.change, Change::Replaced);
    assert!(replaced.meta.profile.signed);
    assert_eq!(
        lib.get("office-wifi").await.unwrap().unwrap().bytes,
        WIFI_SIGNED
    );

    lib.delete("office-wifi").await.unwrap();
    assert!(lib.get("office-wifi").await.unwrap().is_none());
    assert!(matches!(
        lib.delete("office-wifi").await,
        Err(ProfileLibraryError::NotFound(_))
    ));

    let ev = events(&outbox).await;
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            kind::PROFILE_CHANGED,
            kind::PROFILE_CHANGED,
            kind::PROFILE_CHANGED,
            kind::PROFILE_DELETED
        ],
        "an unchanged upload emits nothing"
    );
    assert_eq!(ev[0].1["change"], "created");
    assert_eq!(ev[0].1["identifier"], "com.example.wifi.office");
    assert_eq!(ev[0].1["previous_sha256"], serde_json::Value::Null);
    assert_eq!(ev[2].1["change"], "replaced");
    assert_eq!(ev[2].1["signed"], true);
    assert_eq!(ev[2].1["previous_sha256"], created.meta.sha256.as_str());
    assert_eq!(ev[3].1["name"], "office-wifi");
    assert_eq!(ev[3].1["sha256"], replaced.meta.sha256.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upload_changes_nothing() {
    let (lib, outbox) = library();
    lib.put("wifi", WIFI.to_vec()).await.unwrap();
    let before = lib.get("wifi").await.unwrap().unwrap();

    let e = lib.put("wifi", MISSING_UUID.to_vec()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "payload 3 (com.apple.wifi.managed): missing PayloadUUID"
    );
    assert!(matches!(
        lib.put("wifi", Vec::new()).await,
        Err(ProfileLibraryError::Invalid(InvalidProfile::Empty))
    ));
    assert!(matches!(
        lib.put("wifi", vec![b' '; MAX_PROFILE_BYTES + 1]).await,
        Err(ProfileLibraryError::TooLarge { .. })
    ));
    for bad in ["", ".hidden", "a/b", "with space", &"x".repeat(65)] {
        assert!(
            matches!(
                lib.put(bad, WIFI.to_vec()).await,
                Err(ProfileLibraryError::InvalidName(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(lib.get("wifi").await.unwrap().unwrap(), before);
    assert_eq!(lib.list().await.unwrap().len(), 1);
    assert_eq!(events(&outbox).await.len(), 1, "only the first upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_command_carries_the_stored_bytes() {
    let (lib, _) = library();
    lib.put("signed-wifi", WIFI_SIGNED.to_vec()).await.unwrap();
    let c = lib
        .install_command("signed-wifi", "SETUP-1-wifi")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.uuid, "SETUP-1-wifi");
    assert_eq!(c.request_type, "InstallProfile");
    let root = Value::from_reader(Cursor::new(&c.raw)).unwrap();
    let payload = root.as_dictionary().unwrap()["Command"]
        .as_dictionary()
        .unwrap()["Payload"]
        .as_data()
        .unwrap()
        .to_vec();
    assert_eq!(payload, WIFI_SIGNED);
    assert_eq!(
        lib.get("signed-wifi")
            .await
            .unwrap()
            .unwrap()
            .install_command("SETUP-1-wifi"),
        c
    );
    assert!(lib.install_command("missing", "X").await.unwrap().is_none());
}

#[test]
fn names() {
    for ok in ["a", "office-wifi", "Wi_Fi.v2", &"x".repeat(64)] {
        assert!(valid_name(ok), "{ok:?}");
    }
    for bad in ["", ".", "..", ".x", "a/b", "a b", "é", &"x".repeat(65)] {
        assert!(!valid_name(bad), "{bad:?}");
    }
}
