//! A full disk: writes get `Unavailable` (HTTP 503), the store reopens the database by itself
//! once space returns, and nothing committed is lost. Runs on a small tmpfs mounted for the test
//! (the suite runs as root); without one it skips, unless `POMONA_REQUIRE_TMPFS=1` (set by CI).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use pomona::Engine;
use pomona::store::redb::RedbStore;
use pomona::store::{SecretStore, StoreError};
use tower::ServiceExt;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `mib` MiB, or explain why not (a skip, unless CI requires it).
    fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Self { dir }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        assert!(
            std::env::var("POMONA_REQUIRE_TMPFS").as_deref() != Ok("1"),
            "POMONA_REQUIRE_TMPFS=1 but a tmpfs cannot be mounted: {why}"
        );
        eprintln!("skipped: cannot mount a tmpfs ({why})");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a store thread still holding the file cannot keep the mount busy.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the filesystem with one file until the disk is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
            break;
        }
    }
    // Whatever fits in the last partial block too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    path
}

/// The same key on every open of the test's database.
fn seal_key() -> pomona::seal::SealKey {
    pomona::seal::SealKey::from_hex(&"2a".repeat(32)).expect("a 32-byte hex key")
}

async fn open(path: &Path) -> RedbStore {
    // A previous store's writer thread may still hold the file for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match RedbStore::open(path, &seal_key()) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot reopen {}: {e}", path.display()),
        }
    }
}

/// Write until the disk refuses; the refusal must be `Unavailable`. Returns the names committed.
async fn write_until_full(store: &RedbStore, prefix: &str) -> Vec<String> {
    let mut committed = Vec::new();
    for i in 0..400 {
        let name = format!("{prefix}-{i}");
        match store.put_secret(&name, vec![7u8; 64 * 1024]).await {
            Ok(()) => committed.push(name),
            Err(StoreError::Unavailable { .. }) => return committed,
            Err(e) => panic!("a full disk must be Unavailable, got: {e:?}"),
        }
    }
    panic!("400 writes of 64 KiB fitted on a full 8 MiB filesystem");
}

async fn all_there(store: &RedbStore, names: &[String]) {
    for n in names {
        let v = store.secret(n).await.unwrap();
        assert!(v.is_some(), "committed secret {n} is lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_then_recovers_without_a_restart() {
    let Some(fs) = Tmpfs::mount(8) else { return };
    let db = fs.path().join("pomona.redb");
    let store = open(&db).await;
    let mut committed = Vec::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        store.put_secret(&name, vec![1u8; 1024]).await.unwrap();
        committed.push(name);
    }
    let filler = fill(fs.path());
    committed.extend(write_until_full(&store, "filling").await);

    // Full: small writes are refused as Unavailable too; reads answer or say Unavailable.
    match store.put_secret("small", b"x".to_vec()).await {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable while the disk is full, got {other:?}"),
    }
    match store.secret("before-0").await {
        Ok(v) => assert_eq!(v, Some(vec![1u8; 1024])),
        Err(StoreError::Unavailable { .. }) => {}
        Err(e) => panic!("a read on a full disk: {e:?}"),
    }

    // Space returns: the same store writes again by itself, within a generous bound.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.put_secret("after", b"back".to_vec()).await {
            Ok(()) => break,
            Err(StoreError::Unavailable { reason: e, .. }) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover after space returned: {e:?}"),
        }
    }
    committed.push("after".into());
    all_there(&store, &committed).await;

    // And it is all on disk: a fresh open finds every committed record.
    drop(store);
    let store = open(&db).await;
    all_there(&store, &committed).await;
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_answer_503_while_the_disk_is_full() {
    let Some(fs) = Tmpfs::mount(8) else { return };
    let store = open(&fs.path().join("pomona.redb")).await;
    let engine = Engine::builder()
        .store(Arc::new(store.clone()))
        .build()
        .await
        .unwrap();
    let routes = pomona::http::Routes::new(&engine, pomona::http::HttpOptions::new().api_key("k"));
    let put_team = |name: &str| {
        Request::put(format!("/v1/teams/{name}"))
            .header("authorization", "Bearer k")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap()
    };
    let status = |req: Request<Body>| {
        let router = routes.router();
        async move { router.oneshot(req).await.unwrap().status() }
    };
    assert!(status(put_team("a")).await.is_success());

    let filler = fill(fs.path());
    write_until_full(&store, "filling").await;
    assert_eq!(status(put_team("b")).await.as_u16(), 503);

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(put_team("c")).await;
        if s.is_success() {
            break;
        }
        assert_eq!(s.as_u16(), 503, "only 503 while recovering");
        assert!(
            Instant::now() < deadline,
            "no recovery after space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let teams = engine.store().teams().await.unwrap();
    let names: Vec<_> = teams.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
    engine.shutdown().await;
}
