//! A small admin-API client.

use anyhow::Context as _;
use serde_json::Value;

/// Talks to `/v1` with an API key.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    key: String,
    client: reqwest::Client,
}

/// Status and JSON body of an API call.
#[derive(Debug, Clone)]
pub struct ApiReply {
    /// HTTP status.
    pub status: u16,
    /// Parsed JSON (Null when the body is empty).
    pub json: Value,
}

impl ApiClient {
    /// A client for the server at `base`.
    pub fn new(base: &str, key: &str, client: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            client,
        }
    }

    async fn reply(resp: reqwest::Response) -> anyhow::Result<ApiReply> {
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("non-JSON reply: {}", String::from_utf8_lossy(&bytes)))?
        };
        Ok(ApiReply { status, json })
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> anyhow::Result<ApiReply> {
        Self::reply(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .send()
                .await?,
        )
        .await
    }

    /// DELETE a path.
    pub async fn delete(&self, path: &str) -> anyhow::Result<ApiReply> {
        Self::reply(
            self.client
                .delete(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .send()
                .await?,
        )
        .await
    }

    /// POST JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<ApiReply> {
        Self::reply(
            self.client
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .json(body)
                .send()
                .await?,
        )
        .await
    }

    /// PUT JSON.
    pub async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<ApiReply> {
        Self::reply(
            self.client
                .put(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .json(body)
                .send()
                .await?,
        )
        .await
    }

    /// PUT raw bytes (a plugin, a profile).
    pub async fn put_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<ApiReply> {
        Self::reply(
            self.client
                .put(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .body(body)
                .send()
                .await?,
        )
        .await
    }

    /// NanoMDM-style `PUT /v1/enqueue/{ids}` with a raw plist, using HTTP Basic auth.
    pub async fn enqueue_raw(
        &self,
        ids: &[&str],
        plist: Vec<u8>,
        no_push: bool,
    ) -> anyhow::Result<ApiReply> {
        let q = if no_push { "?nopush=1" } else { "" };
        Self::reply(
            self.client
                .put(format!("{}/v1/enqueue/{}{q}", self.base, ids.join(",")))
                .basic_auth("nanomdm", Some(&self.key))
                .body(plist)
                .send()
                .await?,
        )
        .await
    }

    /// `POST /v1/commands`; returns the command UUID.
    pub async fn command(
        &self,
        targets: &[&str],
        request_type: &str,
        parameters: Value,
    ) -> anyhow::Result<String> {
        let r = self
            .post_json(
                "/v1/commands",
                &serde_json::json!({"targets": targets, "request_type": request_type, "parameters": parameters}),
            )
            .await?;
        anyhow::ensure!(
            r.status == 201 || r.status == 207,
            "POST /v1/commands: {} {}",
            r.status,
            r.json
        );
        Ok(r.json["command_uuid"]
            .as_str()
            .context("command_uuid")?
            .to_owned())
    }
}
