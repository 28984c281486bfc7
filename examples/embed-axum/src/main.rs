//! Embedding Pomona in your own axum application (see the library half, `src/lib.rs`).
//!
//! ```text
//! cargo run -p pomona-example-embed-axum
//! curl http://127.0.0.1:9100/
//! curl http://127.0.0.1:9100/mdm-engine/scep?operation=GetCACaps
//! curl -H 'Authorization: Bearer example-app-token-change-me' \
//!      http://127.0.0.1:9100/mdm-engine/v1/enrollments
//! ```

use pomona::{Engine, RedbStore, SealKey};
use pomona_example_embed_axum::{PREFIX, app};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();

    let addr = std::env::var("EXAMPLE_LISTEN").unwrap_or_else(|_| "127.0.0.1:9100".into());
    let data_dir = std::path::PathBuf::from(
        std::env::var("EXAMPLE_DATA_DIR").unwrap_or_else(|_| "example-data".into()),
    );
    std::fs::create_dir_all(&data_dir)?;

    // Assemble the engine in code: a durable store sealed with a key kept next to it, and the
    // URL devices will use, prefix included.
    let seal = SealKey::load_or_create(&data_dir.join("seal.key"))?;
    let engine = Engine::builder()
        .store(Arc::new(RedbStore::open(
            data_dir.join("pomona.redb"),
            &seal,
        )?))
        .seal_key(seal)
        .public_url(format!("http://{addr}{PREFIX}"))
        .build()
        .await?;

    // React to lifecycle events in your own code.
    let mut events = engine.subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            tracing::info!(kind = %event.kind, enrollment = ?event.enrollment_id, "pomona event");
        }
    });

    let app = app(&engine, "example-app-token-change-me");
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("example app on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    engine.shutdown().await;
    Ok(())
}
