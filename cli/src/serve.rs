//! `pomona serve`.

use std::path::Path;

use anyhow::Context as _;

use crate::args::ServeArgs;
use pomona::config::Config;
use pomona::http::server::{serve_with, tls_acceptor};
use pomona::http::{HttpOptions, Routes};
use pomona::{Engine, EngineBuilder};

/// Load the configuration: file, then `POMONA_*` variables, then flags.
pub fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => crate::config_file::read(path)?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(u) = &args.public_url {
        config.public_url = u.clone();
    }
    config.validate()?;
    Ok(config)
}

/// The API key: configured (file or `POMONA_API_KEY`), else `<data_dir>/api.key`, else a new
/// key written there (mode 0600) and printed once.
fn resolve_api_key(config: &mut Config) -> anyhow::Result<()> {
    if config.api.key.is_some() {
        return Ok(());
    }
    let path = config.data_dir.join("api.key");
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => {
            config.api.key = Some(k.trim().to_owned());
            tracing::info!(path = %path.display(), "admin API key loaded");
        }
        Ok(_) | Err(_) if !path.exists() => {
            let mut raw = [0u8; 24];
            openssl::rand::rand_bytes(&mut raw)?;
            let key = hex::encode(raw);
            pomona::fsutil::write_private(&path, format!("{key}\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "Generated admin API key (stored in {}):\n  {key}",
                path.display()
            );
            config.api.key = Some(key);
        }
        Ok(_) => anyhow::bail!(
            "{} is empty: delete it to generate a new key",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    Ok(())
}

/// Run the engine until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args)?;
    pomona::fsutil::private_dir(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    resolve_api_key(&mut config)?;
    let http = HttpOptions::from_config(&config)?;
    let engine: Engine = EngineBuilder::from_config(&config)?.build().await?;
    let tls = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %listener.local_addr()?,
        scheme,
        public_url = %config.public_url,
        data_dir = %config.data_dir.display(),
        "pomona is serving"
    );
    print_ready(&listener, scheme, &config.data_dir);
    serve_with(
        listener,
        Routes::new(&engine, http).router(),
        tls,
        config.listener.options(),
        shutdown_signal(),
    )
    .await?;
    tracing::info!("shutting down");
    engine.shutdown().await;
    Ok(())
}

fn print_ready(listener: &tokio::net::TcpListener, scheme: &str, data_dir: &Path) {
    if let Ok(addr) = listener.local_addr() {
        println!(
            "pomona listening on {scheme}://{addr} (data dir {})",
            data_dir.display()
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
