//! Conformance checks of [`ProfileStore`].

use time::Duration;

use super::*;

fn profile(name: &str, identifier: &str, bytes: &[u8], at: Timestamp) -> StoredProfile {
    use crate::wire::config_profile::{PayloadSummary, PlistFormat, ProfileInfo};
    StoredProfile {
        meta: ProfileMeta {
            name: name.into(),
            sha256: hex::encode(openssl::sha::sha256(bytes)),
            size: bytes.len() as u64,
            uploaded_at: at,
            profile: ProfileInfo {
                identifier: identifier.into(),
                uuid: format!("UUID-{identifier}"),
                display_name: Some(format!("Profile {name}")),
                description: None,
                organization: None,
                scope: None,
                user_scoped: false,
                removal_disallowed: false,
                format: PlistFormat::Xml,
                signed: false,
                signer: None,
                payloads: vec![PayloadSummary {
                    payload_type: "com.apple.wifi.managed".into(),
                    identifier: format!("{identifier}.wifi"),
                    uuid: format!("UUID-{identifier}.wifi"),
                    display_name: None,
                }],
            },
        },
        bytes: bytes.to_vec(),
    }
}

/// The profile library: create, replace (metadata and bytes together), list by name, delete.
pub async fn profile_library<S: Store + ?Sized>(store: &S) {
    assert!(store.profile("wifi").await.unwrap().is_none());
    assert!(!store.delete_profile("wifi").await.unwrap());
    let t0 = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let wifi = profile("wifi", "com.example.wifi", b"<plist>one</plist>", t0);
    assert!(!store.put_profile(&wifi).await.unwrap(), "created");
    let vpn = profile("a-vpn", "com.example.vpn", &[0u8, 159, 146, 150, 255], t0);
    assert!(!store.put_profile(&vpn).await.unwrap());
    assert_eq!(
        store.profile("wifi").await.unwrap(),
        Some(wifi.clone()),
        "metadata and bytes round-trip"
    );
    assert_eq!(
        store.profile("a-vpn").await.unwrap().unwrap().bytes,
        vpn.bytes,
        "non-UTF-8 bytes are kept exactly"
    );
    let names: Vec<String> = store
        .profiles()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["a-vpn", "wifi"], "listed by name");

    let replaced = profile(
        "wifi",
        "com.example.wifi",
        b"<plist>two, longer</plist>",
        t0 + Duration::minutes(5),
    );
    assert!(store.put_profile(&replaced).await.unwrap(), "replaced");
    let got = store.profile("wifi").await.unwrap().unwrap();
    assert_eq!(got, replaced, "bytes and metadata replaced together");
    assert_eq!(store.profiles().await.unwrap().len(), 2);
    assert_eq!(store.profiles().await.unwrap()[1], replaced.meta);

    assert!(store.delete_profile("wifi").await.unwrap());
    assert!(store.profile("wifi").await.unwrap().is_none());
    assert!(!store.delete_profile("wifi").await.unwrap());
    assert_eq!(store.profiles().await.unwrap(), vec![vpn.meta.clone()]);
    assert!(store.delete_profile("a-vpn").await.unwrap());
    assert!(store.profiles().await.unwrap().is_empty());
}

/// `put_profile_emitting` and `delete_profile_emitting` build their events from the outcome
/// (replaced, existed) and commit them with the change.
pub async fn profile_emitting<S: Store + ?Sized>(store: &S) {
    let t0 = now();
    let p = profile("pe", "com.example.pe", b"<plist>pe</plist>", t0);
    let outcome =
        |what: &'static str| Emit::with(move |b: &bool| vec![ev(&format!("test.{what}.{b}"))]);
    let head = store.event_head().await.unwrap();
    let (replaced, written) = store
        .put_profile_emitting(&p, outcome("put"))
        .await
        .unwrap();
    assert!(!replaced);
    assert_eq!(kinds(&written), ["test.put.false"]);
    let (replaced, _) = store
        .put_profile_emitting(&p, outcome("put"))
        .await
        .unwrap();
    assert!(replaced);
    let (existed, _) = store
        .delete_profile_emitting("pe", outcome("delete"))
        .await
        .unwrap();
    assert!(existed);
    let (existed, written) = store
        .delete_profile_emitting("pe", outcome("delete"))
        .await
        .unwrap();
    assert!(!existed);
    assert_eq!(kinds(&written), ["test.delete.false"]);
    assert_eq!(
        kinds_after(store, head).await,
        [
            "test.put.false",
            "test.put.true",
            "test.delete.true",
            "test.delete.false"
        ]
    );
    assert!(store.profile("pe").await.unwrap().is_none());
}
