//! Automated Device Enrollment: DEP / Apple Business Manager servers, their tokens and cursors,
//! profile templates, and the assignment pipeline.
//!
//! Every page is committed with its devices, their events, the assignment work it creates and the
//! new cursor in one transaction; the assigner then works from the committed work queue, so a crash
//! replays work instead of losing it.

pub mod client;
mod sync;
mod teams;

pub use sync::SyncReport;

use crate::policy::PolicyChain;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use self::client::{DepApi, DepClient, DepError};
use crate::events::{Outbox, event, kind};
use crate::seal::{SealError, SealKey, context};
use crate::store::{
    DepKeyPair, DepServer, DepStore, Emit, ProfileTemplate, StoreError, TokenState,
};
use crate::wire::apns::ExpiryState;
use crate::wire::dep::{self, OAuthToken, Profile};

/// Errors of DEP administration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepServiceError {
    /// No such server.
    #[error("no DEP server named {0:?}")]
    UnknownServer(String),
    /// No such profile template.
    #[error("no DEP profile named {0:?}")]
    UnknownProfile(String),
    /// A server with this name exists.
    #[error("a DEP server named {0:?} already exists")]
    Exists(String),
    /// The input is unacceptable.
    #[error("{0}")]
    Invalid(String),
    /// OpenSSL could not encode or read the server's key pair.
    #[error("{0}")]
    KeyPair(#[source] openssl::error::ErrorStack),
    /// The stored server token is unreadable.
    #[error("stored token: {0}")]
    StoredToken(#[source] serde_json::Error),
    /// The token does not belong to this server.
    #[error(
        "this token belongs to another DEP server (consumer key {found}, expected {expected}); upload with force to replace it"
    )]
    WrongServer {
        /// The uploaded token's consumer key.
        found: String,
        /// The server's current consumer key.
        expected: String,
    },
    /// The token is not usable.
    #[error(transparent)]
    Token(#[from] dep::DepWireError),
    /// Apple refused or failed.
    #[error(transparent)]
    Api(#[from] DepError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealed material could not be opened.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// DEP settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DepOptions {
    /// The engine's public URL (profiles point devices at `<url>/mdm/enroll`).
    pub public_url: String,
    /// How long to wait before retrying a THROTTLED device when Apple gives no delay.
    pub throttle_cooldown: Duration,
    /// First retry delay of a FAILED assignment (doubles per attempt, at most an hour).
    pub failed_retry: Duration,
    /// Transport retries and their base backoff for API calls.
    pub api_retries: u32,
    /// Base backoff of API retries.
    pub api_backoff: Duration,
}

impl DepOptions {
    /// Defaults for an engine at `public_url`.
    pub fn new(public_url: &str) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
            throttle_cooldown: Duration::from_secs(3600),
            failed_retry: Duration::from_secs(60),
            api_retries: 4,
            api_backoff: Duration::from_millis(500),
        }
    }
}

crate::setters::with_setters!(DepOptions {
    with_public_url => public_url: String,
    with_throttle_cooldown => throttle_cooldown: std::time::Duration,
    with_failed_retry => failed_retry: std::time::Duration,
    with_api_retries => api_retries: u32,
    with_api_backoff => api_backoff: std::time::Duration,
});

/// Changes to a server (`PATCH /v1/dep/servers/{name}`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    /// API base URL (empty string: Apple's).
    pub base_url: Option<String>,
    /// Seconds between syncs (0: manual).
    pub sync_interval_secs: Option<u64>,
    /// Default profile template.
    pub default_profile: Option<String>,
    /// Default teams by platform.
    pub default_teams: Option<std::collections::BTreeMap<String, String>>,
    /// Protocol version.
    pub protocol_version: Option<u32>,
}

/// DEP administration, sync and assignment.
pub struct DepService {
    store: Arc<dyn DepStore>,
    seal: SealKey,
    outbox: Outbox,
    options: DepOptions,
    clients: Mutex<Clients>,
    connect: Box<Connector>,
    running: tokio::sync::Mutex<()>,
    policy: Arc<PolicyChain>,
    placement: Option<Placement>,
}

/// Where team placement at sync reads and writes.
#[derive(Clone)]
pub(crate) struct Placement {
    pub devices: Arc<dyn crate::store::DeviceStore>,
    pub teams: Arc<dyn crate::store::TeamStore>,
}

/// API clients by server name, with the fingerprint (base URL, consumer key, protocol version)
/// they were built for.
type Clients = HashMap<String, (String, Arc<dyn DepApi>)>;

/// Builds a server's API client from its base URL, token and protocol version.
type Connector = dyn Fn(&str, OAuthToken, u32) -> Arc<dyn DepApi> + Send + Sync;

impl std::fmt::Debug for DepService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepService").finish_non_exhaustive()
    }
}

fn now() -> crate::store::Timestamp {
    time::OffsetDateTime::now_utc()
}

/// The token state for an expiry string.
fn token_state(expiry: &str) -> TokenState {
    match time::OffsetDateTime::parse(expiry, &time::format_description::well_known::Rfc3339) {
        Ok(t) => match ExpiryState::at(t.unix_timestamp(), now().unix_timestamp()) {
            ExpiryState::Valid => TokenState::Valid,
            ExpiryState::Expiring => TokenState::Expiring,
            ExpiryState::Expired => TokenState::Expired,
        },
        Err(_) => TokenState::Valid,
    }
}

impl DepService {
    /// A DEP service over `store`.
    pub fn new(
        store: Arc<dyn DepStore>,
        seal: SealKey,
        outbox: Outbox,
        options: DepOptions,
    ) -> Self {
        let (backoff, retries) = (options.api_backoff, options.api_retries);
        Self {
            store,
            seal,
            outbox,
            options,
            clients: Mutex::new(HashMap::new()),
            connect: Box::new(move |base, token, version| {
                Arc::new(DepClient::new(base, token, version).with_backoff(backoff, retries))
            }),
            running: tokio::sync::Mutex::new(()),
            policy: Arc::new(PolicyChain::new(None)),
            placement: None,
        }
    }

    /// Place every synced device in a team (the `place` hook, then its current team, then the
    /// server's default team for its platform) and let the team's enrollment profile for the
    /// platform be the built-in `auto-assign` answer, before the server's default profile.
    pub fn with_teams(
        mut self,
        devices: Arc<dyn crate::store::DeviceStore>,
        teams: Arc<dyn crate::store::TeamStore>,
    ) -> Self {
        self.placement = Some(Placement { devices, teams });
        self
    }

    /// Ask `policy`'s `auto-assign` plugins which profile each synced device gets; the built-in
    /// rule (the server's default profile for new, re-added, moved-in and `removed` devices)
    /// decides when no plugin has an opinion.
    pub fn with_policy(mut self, policy: Arc<PolicyChain>) -> Self {
        self.policy = policy;
        self
    }

    async fn server(&self, name: &str) -> Result<DepServer, DepServiceError> {
        self.store
            .dep_server(name)
            .await?
            .ok_or_else(|| DepServiceError::UnknownServer(name.to_owned()))
    }

    /// Every DEP server, by name.
    pub async fn servers(&self) -> Result<Vec<DepServer>, DepServiceError> {
        Ok(self.store.dep_servers().await?)
    }

    /// The DEP server `name`, if there is one.
    pub async fn find_server(&self, name: &str) -> Result<Option<DepServer>, DepServiceError> {
        Ok(self.store.dep_server(name).await?)
    }

    /// The device `serial` as server `server` last reported it.
    pub async fn device(
        &self,
        server: &str,
        serial: &str,
    ) -> Result<Option<crate::store::DepDeviceRecord>, DepServiceError> {
        Ok(self.store.dep_device(server, serial).await?)
    }

    /// A page of DEP devices.
    pub async fn devices(
        &self,
        query: &crate::store::DepDeviceQuery,
    ) -> Result<Vec<crate::store::DepDeviceRecord>, DepServiceError> {
        Ok(self.store.dep_devices(query).await?)
    }

    /// Every enrollment-profile template, by name.
    pub async fn profiles(&self) -> Result<Vec<crate::store::ProfileTemplate>, DepServiceError> {
        Ok(self.store.dep_profiles().await?)
    }

    /// Store `s` with events built from `events` (kind, data) in the same transaction, then hand
    /// them to live subscribers.
    async fn put_server_emitting(
        &self,
        s: &DepServer,
        events: Vec<(&str, serde_json::Value)>,
    ) -> Result<(), DepServiceError> {
        let events = events
            .into_iter()
            .map(|(kind, data)| event(kind, None, data))
            .collect();
        let written = self
            .store
            .put_dep_server_emitting(s, Emit::events(events))
            .await?;
        self.outbox.broadcast(&written);
        Ok(())
    }

    /// Create a server with a fresh key pair; returns it.
    pub async fn create_server(&self, name: &str) -> Result<DepServer, DepServiceError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(DepServiceError::Invalid(
                "name must be 1-64 characters of letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if self.store.dep_server(name).await?.is_some() {
            return Err(DepServiceError::Exists(name.to_owned()));
        }
        let mut s = DepServer::new(name, now());
        s.current_keys = Some(self.new_keys(name)?);
        self.put_server_emitting(
            &s,
            vec![(kind::DEP_SERVER_CREATED, json!({"server": name}))],
        )
        .await?;
        Ok(s)
    }

    fn new_keys(&self, name: &str) -> Result<DepKeyPair, DepServiceError> {
        let (cert, key) = dep::new_server_keypair(name)?;
        let pem =
            |r: Result<Vec<u8>, openssl::error::ErrorStack>| r.map_err(DepServiceError::KeyPair);
        Ok(DepKeyPair {
            cert_pem: String::from_utf8_lossy(&pem(cert.to_pem())?).into_owned(),
            key_sealed: self.seal.seal(
                &context::dep_server_key(name),
                &pem(key.private_key_to_pem_pkcs8())?,
            ),
        })
    }

    /// The certificate to upload to Apple (the staging one, if a rotation is under way).
    pub async fn certificate(&self, name: &str) -> Result<String, DepServiceError> {
        let s = self.server(name).await?;
        s.staging_keys
            .or(s.current_keys)
            .map(|k| k.cert_pem)
            .ok_or_else(|| DepServiceError::Invalid("server has no key pair".into()))
    }

    /// Start a key rotation: a new staging key pair whose certificate is uploaded to Apple next.
    pub async fn rotate_keys(&self, name: &str) -> Result<String, DepServiceError> {
        let mut s = self.server(name).await?;
        let keys = self.new_keys(name)?;
        let pem = keys.cert_pem.clone();
        s.staging_keys = Some(keys);
        self.store.put_dep_server(&s).await?;
        Ok(pem)
    }

    /// Upload a server token (`.p7m`). Refuses another server's token unless `force`.
    pub async fn upload_token(
        &self,
        name: &str,
        p7m: &[u8],
        force: bool,
    ) -> Result<DepServer, DepServiceError> {
        let mut s = self.server(name).await?;
        let mut decrypted = None;
        for (staging, keys) in [(true, &s.staging_keys), (false, &s.current_keys)] {
            let Some(keys) = keys else { continue };
            let cert = openssl::x509::X509::from_pem(keys.cert_pem.as_bytes())
                .map_err(DepServiceError::KeyPair)?;
            let key = openssl::pkey::PKey::private_key_from_pem(
                &self
                    .seal
                    .unseal(&context::dep_server_key(name), &keys.key_sealed)?,
            )
            .map_err(DepServiceError::KeyPair)?;
            match dep::decrypt_token(p7m, &cert, &key) {
                Ok(t) => {
                    decrypted = Some((staging, t));
                    break;
                }
                Err(e) => {
                    tracing::debug!(err = %e, staging, "token does not decrypt with this key pair");
                }
            }
        }
        let Some((staging, token)) = decrypted else {
            return Err(DepServiceError::Token(dep::DepWireError::Token(
                "the token does not decrypt with this server's key pair: download the server's certificate, upload it to Apple Business Manager, and download a new token".into(),
            )));
        };
        if let Some(expected) = &s.consumer_key
            && *expected != token.consumer_key
            && !force
        {
            return Err(DepServiceError::WrongServer {
                found: token.consumer_key,
                expected: expected.clone(),
            });
        }
        if staging {
            s.current_keys = s.staging_keys.take();
        }
        let changed_account = s.consumer_key.as_deref() != Some(token.consumer_key.as_str());
        s.consumer_key = Some(token.consumer_key.clone());
        s.token_expiry = Some(token.access_token_expiry.clone());
        s.token_state = token_state(&token.access_token_expiry);
        s.token_sealed = Some(self.seal.seal(
            &context::dep_server_token(name),
            &serde_json::to_vec(&token).expect("tokens serialize"),
        ));
        if changed_account {
            s.cursor = None;
            s.phase = crate::store::SyncPhase::Fetch;
        }
        self.put_server_emitting(
            &s,
            vec![(
                kind::DEP_TOKEN_STATE,
                json!({"server": name, "state": s.token_state, "expiry": s.token_expiry}),
            )],
        )
        .await?;
        self.clients.lock().expect("clients lock").remove(name);
        Ok(s)
    }

    /// Apply a patch to a server.
    pub async fn patch_server(
        &self,
        name: &str,
        patch: ServerPatch,
    ) -> Result<DepServer, DepServiceError> {
        let mut s = self.server(name).await?;
        if let Some(b) = patch.base_url {
            if !(b.is_empty() || b.starts_with("https://") || b.starts_with("http://")) {
                return Err(DepServiceError::Invalid(
                    "base_url must be an http(s) URL".into(),
                ));
            }
            s.base_url = (!b.is_empty()).then_some(b);
            self.clients.lock().expect("clients lock").remove(name);
        }
        if let Some(i) = patch.sync_interval_secs {
            s.sync_interval_secs = i;
        }
        if let Some(p) = patch.default_profile {
            if !p.is_empty() && self.store.dep_profile(&p).await?.is_none() {
                return Err(DepServiceError::UnknownProfile(p));
            }
            s.default_profile = (!p.is_empty()).then_some(p);
        }
        if let Some(t) = patch.default_teams {
            for k in t.keys() {
                if !crate::teams::PLATFORMS.contains(&k.as_str()) {
                    return Err(DepServiceError::Invalid(format!(
                        "default_teams keys are macos, ios, ipados and tvos, not {k:?}"
                    )));
                }
            }
            s.default_teams = t;
        }
        if let Some(v) = patch.protocol_version {
            s.protocol_version = v;
            self.clients.lock().expect("clients lock").remove(name);
        }
        self.store.put_dep_server(&s).await?;
        Ok(s)
    }

    /// The API client for a server (one session per token per process).
    fn client(&self, s: &DepServer) -> Result<Arc<dyn DepApi>, DepServiceError> {
        let sealed = s.token_sealed.as_ref().ok_or_else(|| {
            DepServiceError::Invalid(format!("DEP server {} has no token yet", s.name))
        })?;
        let base = s
            .base_url
            .clone()
            .unwrap_or_else(|| dep::APPLE_BASE_URL.into());
        let fingerprint = format!(
            "{base}|{}|{}",
            s.consumer_key.as_deref().unwrap_or_default(),
            s.protocol_version
        );
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some((f, c)) = clients.get(&s.name)
            && *f == fingerprint
        {
            return Ok(c.clone());
        }
        let token: OAuthToken = serde_json::from_slice(
            &self
                .seal
                .unseal(&context::dep_server_token(&s.name), sealed)?,
        )
        .map_err(DepServiceError::StoredToken)?;
        let client = (self.connect)(&base, token, s.protocol_version);
        clients.insert(s.name.clone(), (fingerprint, client.clone()));
        Ok(client)
    }

    /// Create or replace a profile template. Devices assigned to it are re-assigned when its
    /// effective content changes (a new definition with Apple, hence a new UUID).
    pub async fn put_profile(
        &self,
        name: &str,
        template: Profile,
    ) -> Result<ProfileTemplate, DepServiceError> {
        if template.profile_name.is_empty() || template.profile_name.chars().count() > 125 {
            return Err(DepServiceError::Invalid(
                "profile_name is required and at most 125 characters".into(),
            ));
        }
        let previous = self.store.dep_profile(name).await?;
        let changed = previous.as_ref().is_some_and(|p| p.template != template);
        let p = ProfileTemplate {
            name: name.to_owned(),
            template,
            definitions: previous.map(|p| p.definitions).unwrap_or_default(),
            updated_at: now(),
        };
        self.store.put_dep_profile(&p).await?;
        if changed {
            for s in self.store.dep_servers().await? {
                let serials: Vec<String> = self
                    .all_devices(&s.name)
                    .await?
                    .into_iter()
                    .filter(|d| d.present && d.assigned_profile.as_deref() == Some(name))
                    .map(|d| d.serial_number)
                    .collect();
                if !serials.is_empty() {
                    self.store
                        .request_assignments(&s.name, name, &serials, now())
                        .await?;
                }
            }
        }
        Ok(p)
    }

    async fn all_devices(
        &self,
        server: &str,
    ) -> Result<Vec<crate::store::DepDeviceRecord>, DepServiceError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .dep_devices(&crate::store::DepDeviceQuery {
                    server: Some(server.to_owned()),
                    after: after.clone(),
                    limit: Some(1000),
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(format!("{}/{}", last.server, last.serial_number));
            let n = page.len();
            out.extend(page);
            if n < 1000 {
                break;
            }
        }
        Ok(out)
    }

    /// Assign a profile to serials by hand (done by the assigner right away).
    pub async fn assign(
        &self,
        server: &str,
        profile: &str,
        serials: &[String],
    ) -> Result<(), DepServiceError> {
        self.server(server).await?;
        if self.store.dep_profile(profile).await?.is_none() {
            return Err(DepServiceError::UnknownProfile(profile.to_owned()));
        }
        if serials.is_empty() {
            return Err(DepServiceError::Invalid("serials must not be empty".into()));
        }
        self.store
            .request_assignments(server, profile, serials, now())
            .await?;
        self.assign_due(server).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;

    fn token() -> OAuthToken {
        OAuthToken {
            consumer_key: "CK_A".into(),
            consumer_secret: "CS".into(),
            access_token: "AT".into(),
            access_secret: "AS".into(),
            access_token_expiry: "2099-01-01T00:00:00Z".into(),
        }
    }

    #[tokio::test]
    async fn server_changes_are_logged_with_the_change() {
        use crate::store::EventStore;
        let store = Arc::new(RedbStore::in_memory().unwrap());
        let outbox = Outbox::new(
            Arc::new(crate::events::testing::FailingAppends(store.clone())),
            16,
        );
        let mut live = outbox.subscribe();
        let dep = DepService::new(
            store.clone(),
            SealKey::generate(),
            outbox,
            DepOptions::new("https://mdm.example"),
        );
        let s = dep.create_server("logged").await.unwrap();
        let cert =
            openssl::x509::X509::from_pem(s.current_keys.unwrap().cert_pem.as_bytes()).unwrap();
        let p7m = dep::encrypt_token(&token(), &cert).unwrap();
        dep.upload_token("logged", &p7m, false).await.unwrap();

        // Each change and its event committed together, although the outbox cannot append.
        let stored = store.dep_server("logged").await.unwrap().unwrap();
        assert_eq!(stored.consumer_key.as_deref(), Some("CK_A"));
        let log = store.events_after(0, 100).await.unwrap();
        let kinds: Vec<_> = log.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, [kind::DEP_SERVER_CREATED, kind::DEP_TOKEN_STATE]);
        assert_eq!(log[0].data["server"], "logged");
        assert_eq!(log[1].data["expiry"], "2099-01-01T00:00:00Z");
        assert_eq!(live.try_recv().unwrap().seq, log[0].seq);
        assert_eq!(live.try_recv().unwrap().seq, log[1].seq);
    }

    #[tokio::test]
    async fn sealed_server_keys_are_bound_to_their_server() {
        let store = Arc::new(RedbStore::in_memory().unwrap());
        let outbox = Outbox::new(store.clone(), 16);
        let dep = DepService::new(
            store.clone(),
            SealKey::generate(),
            outbox,
            DepOptions::new("https://mdm.example"),
        );
        let a = dep.create_server("a").await.unwrap();
        dep.create_server("b").await.unwrap();
        // Someone with write access to the database copies A's key pair into B.
        let mut b = store.dep_server("b").await.unwrap().unwrap();
        b.current_keys = a.current_keys.clone();
        store.put_dep_server(&b).await.unwrap();
        let cert =
            openssl::x509::X509::from_pem(a.current_keys.unwrap().cert_pem.as_bytes()).unwrap();
        let p7m = dep::encrypt_token(&token(), &cert).unwrap();
        assert!(dep.upload_token("a", &p7m, false).await.is_ok());
        let copied = dep.upload_token("b", &p7m, false).await;
        assert!(
            matches!(copied, Err(DepServiceError::Seal(_))),
            "A's key opened in B's record: {:?}",
            copied.map(|s| s.name)
        );
        // The same for the token: A's sealed token copied into B does not open as B's.
        let a = store.dep_server("a").await.unwrap().unwrap();
        let mut b = store.dep_server("b").await.unwrap().unwrap();
        b.token_sealed = a.token_sealed.clone();
        b.consumer_key = a.consumer_key.clone();
        store.put_dep_server(&b).await.unwrap();
        assert!(dep.client(&a).is_ok());
        assert!(matches!(dep.client(&b), Err(DepServiceError::Seal(_))));
    }
}
