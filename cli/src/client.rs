//! A small admin-API client for the CLI subcommands that talk to a running engine.

use anyhow::Context as _;

/// Where the engine is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// Engine URL.
    #[arg(
        long,
        global = true,
        env = "POMONA_URL",
        default_value = "http://127.0.0.1:9000"
    )]
    pub url: String,
    /// Admin API key (printed at the engine's first start, stored in `<data_dir>/api.key`).
    #[arg(long, global = true, env = "POMONA_API_KEY")]
    pub api_key: Option<String>,
}

impl Remote {
    /// Send a request; print nothing, return the body of a 2xx answer or a precise error.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<reqwest::Body>,
        content_type: Option<&str>,
    ) -> anyhow::Result<Vec<u8>> {
        let api_key = self.api_key.as_deref().context(
            "no admin API key: pass --api-key or set POMONA_API_KEY (see <data_dir>/api.key)",
        )?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut req = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(api_key);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await?.to_vec();
        if !status.is_success() {
            // The admin API answers `{"error": "<precise message>"}`; show just the message.
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
            anyhow::bail!("{message} ({status})");
        }
        Ok(bytes)
    }

    /// Send JSON (or nothing) and print the JSON answer, pretty.
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let body = body.map(|b| reqwest::Body::from(serde_json::to_vec(&b).expect("JSON")));
        let out = self
            .send(method, path, body, Some("application/json"))
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }
}
