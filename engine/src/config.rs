//! Engine configuration: a TOML file, `POMONA_*` environment overrides, then command-line flags.
//!
//! Every field has a default, so an empty file (or none) runs the engine with embedded defaults.
//! See `examples/pomona.toml` for an annotated sample. The structs are plain serde data: the
//! `pomona` binary reads them from TOML; an embedder may read them from any serde format.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ca::{CaOptions, CertificateAuthority};
use crate::engine::defaults;
use crate::enroll::{EnrollOptions, SigningIdentity};
use crate::http::HttpOptions;
use crate::http::client_addr::TrustedProxies;
use crate::mdm::{RenewalPolicy, UserAuthenticatePolicy};
use crate::push::apns::ApnsOptions;
use crate::scep::ScepOptions;
use crate::seal::SealKey;
use crate::setup::SetupOptions;
use crate::store::redb::RedbStore;
use crate::wire::machine_info::DeviceTrust;
use crate::{EngineBuilder, EngineError, Retention};

/// Errors reading configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable has an invalid value.
    #[error("invalid value for {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Why it is invalid.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Where the database, keys and generated secrets live.
    pub data_dir: PathBuf,
    /// Address the HTTP(S) listener binds.
    pub listen: SocketAddr,
    /// The URL devices and admins reach the engine at (used in enrollment profiles).
    pub public_url: String,
    /// Admin API settings.
    pub api: ApiConfig,
    /// Sealing of secrets at rest.
    pub seal: SealConfig,
    /// TLS for the listener.
    pub tls: TlsConfig,
    /// How devices prove their identity.
    pub identity: IdentityConfig,
    /// The certificate authority.
    pub ca: CaConfig,
    /// The SCEP server.
    pub scep: ScepConfig,
    /// Enrollment profiles and Automated Device Enrollment.
    pub enroll: EnrollConfig,
    /// APNs.
    pub apns: ApnsConfig,
    /// Check-in protocol behaviour.
    pub mdm: MdmConfig,
    /// How long finished work is kept.
    pub retention: RetentionConfig,
    /// Default limits for every policy plugin (`[plugin_limits]`).
    pub plugin_limits: crate::policy::Limits,
    /// Policy plugins declared here (`[[plugins]]`), asked before uploaded ones, in this order.
    pub plugins: Vec<crate::policy::registry::DeclaredPlugin>,
    /// The setup flow (`[setup]`).
    pub setup: SetupConfig,
    /// Listener limits and timeouts (`[listener]`).
    pub listener: ListenerConfig,
    /// Per-client rate limits on anonymous endpoints (`[rate_limit]`).
    pub rate_limit: RateLimitConfig,
    /// Limits on every property list from devices or users (`[plist_limits]`).
    pub plist_limits: crate::wire::bounded_plist::PlistLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("pomona-data"),
            listen: "127.0.0.1:9000".parse().expect("valid literal"),
            public_url: defaults::PUBLIC_URL.into(),
            api: ApiConfig::default(),
            seal: SealConfig::default(),
            tls: TlsConfig::default(),
            identity: IdentityConfig::default(),
            ca: CaConfig::default(),
            scep: ScepConfig::default(),
            enroll: EnrollConfig::default(),
            apns: ApnsConfig::default(),
            mdm: MdmConfig::default(),
            retention: RetentionConfig::default(),
            plugin_limits: crate::policy::Limits::default(),
            plugins: Vec::new(),
            setup: SetupConfig::default(),
            listener: ListenerConfig::default(),
            rate_limit: RateLimitConfig::default(),
            plist_limits: Default::default(),
        }
    }
}

/// `[listener]`: limits and timeouts of `pomona serve`'s listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Most connections served at once; when reached, new connections wait to be accepted.
    pub max_connections: usize,
    /// Longest TLS handshake, in seconds.
    pub tls_handshake_timeout_secs: u64,
    /// Longest time for a request head to arrive (from its first byte, or from the
    /// connection's start), in seconds.
    pub header_read_timeout_secs: u64,
    /// Longest time from a request head to the end of its body, in seconds.
    pub body_read_timeout_secs: u64,
    /// Idle connections (no request in flight, nothing arriving) are closed after this many
    /// seconds.
    pub keep_alive_timeout_secs: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        let o = crate::http::server::ListenerOptions::default();
        let secs = |d: std::time::Duration| d.as_secs();
        Self {
            max_connections: o.max_connections,
            tls_handshake_timeout_secs: secs(o.tls_handshake_timeout),
            header_read_timeout_secs: secs(o.header_read_timeout),
            body_read_timeout_secs: secs(o.body_read_timeout),
            keep_alive_timeout_secs: secs(o.keep_alive_timeout),
        }
    }
}

impl ListenerConfig {
    /// The listener options these settings describe.
    pub fn options(&self) -> crate::http::server::ListenerOptions {
        crate::http::server::ListenerOptions {
            max_connections: self.max_connections,
            tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_secs),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
            keep_alive_timeout: Duration::from_secs(self.keep_alive_timeout_secs),
        }
    }
}

/// `[rate_limit]`: per-client token buckets on `/mdm/enroll` and `/scep`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// `GET`/`POST /mdm/enroll` requests per minute per client; 0 turns the limit off.
    pub enroll_per_minute: u32,
    /// `/mdm/enroll` requests a client may make at once.
    pub enroll_burst: u32,
    /// `/scep` requests per minute per client; 0 turns the limit off.
    pub scep_per_minute: u32,
    /// `/scep` requests a client may make at once.
    pub scep_burst: u32,
    /// Most clients tracked per endpoint group (idle ones are dropped first).
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let o = crate::http::rate_limit::RateLimitOptions::default();
        Self {
            enroll_per_minute: o.enroll.per_minute,
            enroll_burst: o.enroll.burst,
            scep_per_minute: o.scep.per_minute,
            scep_burst: o.scep.burst,
            max_clients: o.max_clients,
        }
    }
}

impl RateLimitConfig {
    /// The rate-limit options these settings describe.
    pub fn options(&self) -> crate::http::rate_limit::RateLimitOptions {
        use crate::http::rate_limit::{Rate, RateLimitOptions};
        RateLimitOptions {
            enroll: Rate {
                per_minute: self.enroll_per_minute,
                burst: self.enroll_burst,
            },
            scep: Rate {
                per_minute: self.scep_per_minute,
                burst: self.scep_burst,
            },
            max_clients: self.max_clients,
        }
    }
}

/// `[setup]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SetupConfig {
    /// Seconds after enrollment when the built-in rule releases a device whose required setup
    /// steps have not all finished (a team's `release_timeout_secs` overrides it).
    pub release_timeout_secs: u64,
}

impl Default for SetupConfig {
    fn default() -> Self {
        Self {
            release_timeout_secs: 30 * 60,
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiConfig {
    /// The admin API key. When unset (and `POMONA_API_KEY` is unset) a key is generated into
    /// `<data_dir>/api.key` on first start.
    pub key: Option<String>,
}

/// `[seal]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SealConfig {
    /// 64 hex characters. When unset, `<data_dir>/seal.key` is used (created on first start).
    pub key: Option<String>,
}

/// `[tls]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM certificate chain of the listener. With `key_file`, the listener speaks HTTPS and asks
    /// devices for a client certificate (optional, verified against the CA by the check-in path).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the listener.
    pub key_file: Option<PathBuf>,
}

/// `[identity]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct IdentityConfig {
    /// Header in which a TLS-terminating proxy forwards the client certificate (RFC 9440
    /// `Client-Cert`, or nginx's escaped PEM under any name). Unset: such headers are ignored.
    pub client_cert_header: Option<String>,
    /// Addresses (CIDRs or single IPs, IPv4 or IPv6) of the proxies allowed to send
    /// `client_cert_header` and `X-Forwarded-For`. Unset: loopback only (`127.0.0.0/8`, `::1`).
    /// A request carrying the header from any other address is refused with 400.
    pub trusted_proxies: Option<Vec<String>>,
    /// What to do when a device presents a new certificate.
    pub renewal: RenewalPolicy,
}

/// `[ca]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CaConfig {
    /// Import this PEM CA certificate instead of generating one (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the imported CA.
    pub key_file: Option<PathBuf>,
    /// RSA key size of a generated CA.
    pub key_bits: u32,
    /// Validity of a generated CA certificate, in days.
    pub validity_days: u32,
    /// Validity of issued device certificates, in days.
    pub device_cert_validity_days: u32,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            key_bits: 2048,
            validity_days: 3650,
            device_cert_validity_days: 365,
        }
    }
}

/// `[scep]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ScepConfig {
    /// A static challenge any SCEP client may use. Unset: only one-time challenges, minted per
    /// enrollment-profile download, are accepted.
    pub challenge: Option<String>,
    /// Lifetime of one-time challenges, in seconds.
    pub challenge_ttl_secs: u32,
}

impl Default for ScepConfig {
    fn default() -> Self {
        Self {
            challenge: None,
            challenge_ttl_secs: 3600,
        }
    }
}

/// `[enroll]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EnrollConfig {
    /// APNs topic for the MDM payload (the push certificate's UID). Unset: a placeholder.
    pub topic: Option<String>,
    /// Profile display name.
    pub display_name: Option<String>,
    /// Profile organization (also the identity's `O`).
    pub organization: Option<String>,
    /// `PayloadIdentifier` prefix.
    pub identifier: Option<String>,
    /// Require `GET /mdm/enroll?token=…` for manual downloads.
    pub token: Option<String>,
    /// Tell Automated Device Enrollment devices below this OS version to update first.
    pub min_os_version: Option<String>,
    /// The build to offer with `min_os_version`.
    pub min_build_version: Option<String>,
    /// PEM trust root(s) for signed MachineInfo. Unset: Apple's device CA.
    pub device_ca_file: Option<PathBuf>,
    /// PEM certificates of the server's TLS CA, installed by the profile as trusted roots.
    pub trust_anchor_files: Vec<PathBuf>,
    /// PEM certificate (and chain) to sign profiles with.
    pub signing_cert_file: Option<PathBuf>,
    /// PEM private key of the profile signer.
    pub signing_key_file: Option<PathBuf>,
}

/// `[apns]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ApnsConfig {
    /// APNs base URL (default: Apple production).
    pub base_url: String,
    /// PEM of an extra CA to trust for the APNs server (tests, proxies).
    pub extra_ca_file: Option<PathBuf>,
    /// HTTP/2 connections to keep open per push certificate.
    pub connections: usize,
    /// Push to enrollments silent for longer than this many seconds.
    pub rearm_after_secs: u64,
    /// Longest TCP connect to APNs (or its proxy), in seconds.
    pub connect_timeout_secs: u64,
    /// Longest TLS plus HTTP/2 handshake with APNs, in seconds.
    pub handshake_timeout_secs: u64,
    /// Longest wait for APNs to answer one push, in seconds.
    pub request_timeout_secs: u64,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        Self {
            base_url: crate::wire::apns::PRODUCTION_URL.into(),
            extra_ca_file: None,
            connections: 2,
            rearm_after_secs: 24 * 3600,
            connect_timeout_secs: 10,
            handshake_timeout_secs: 10,
            request_timeout_secs: 15,
        }
    }
}

/// `[mdm]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MdmConfig {
    /// `UserAuthenticate` behaviour: `decline` (410) or `accept`.
    pub user_authenticate: UserAuthenticatePolicy,
    /// Largest accepted device request body, in bytes.
    pub max_body_bytes: usize,
    /// Most commands queued for one enrollment.
    pub max_queue_len: usize,
}

impl Default for MdmConfig {
    fn default() -> Self {
        Self {
            user_authenticate: UserAuthenticatePolicy::Decline,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_queue_len: defaults::MAX_QUEUE_LEN,
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetentionConfig {
    /// Days a finished command and its results are kept.
    pub command_days: u32,
    /// Days an event is kept in the outbox.
    pub event_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let r = Retention::default();
        Self {
            command_days: r.command_days,
            event_days: r.event_days,
        }
    }
}

impl RetentionConfig {
    /// The engine's retention these settings describe.
    pub fn retention(&self) -> Retention {
        Retention::new(self.command_days, self.event_days)
    }
}

impl Config {
    /// Apply `POMONA_*` overrides from `env` (usually `std::env::vars()`).
    pub fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (var, value) in env {
            let Some(name) = var.strip_prefix("POMONA_") else {
                continue;
            };
            let some_path = || Some(PathBuf::from(&value));
            match name {
                "DATA_DIR" => self.data_dir = PathBuf::from(&value),
                "LISTEN" => {
                    self.listen = value.parse().map_err(|e| ConfigError::Env {
                        var: "POMONA_LISTEN",
                        message: format!("{e}"),
                    })?
                }
                "PUBLIC_URL" => self.public_url = value.clone(),
                "API_KEY" => self.api.key = Some(value.clone()),
                "SEAL_KEY" => self.seal.key = Some(value.clone()),
                "TLS_CERT_FILE" => self.tls.cert_file = some_path(),
                "TLS_KEY_FILE" => self.tls.key_file = some_path(),
                "CLIENT_CERT_HEADER" => self.identity.client_cert_header = Some(value.clone()),
                "TRUSTED_PROXIES" => {
                    self.identity.trusted_proxies = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    )
                }
                "CA_CERT_FILE" => self.ca.cert_file = some_path(),
                "CA_KEY_FILE" => self.ca.key_file = some_path(),
                "SCEP_CHALLENGE" => self.scep.challenge = Some(value.clone()),
                "ENROLL_DEVICE_CA_FILE" => self.enroll.device_ca_file = some_path(),
                "ENROLL_TOKEN" => self.enroll.token = Some(value.clone()),
                "ENROLL_TOPIC" => self.enroll.topic = Some(value.clone()),
                "APNS_BASE_URL" => self.apns.base_url = value.clone(),
                "APNS_EXTRA_CA_FILE" => self.apns.extra_ca_file = some_path(),
                _ => {}
            }
        }
        Ok(())
    }

    /// Check cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |var, message: &str| {
            Err(ConfigError::Env {
                var,
                message: message.to_owned(),
            })
        };
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return bad("public_url", "must start with http:// or https://");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return bad("tls", "cert_file and key_file must be set together");
        }
        if self.ca.cert_file.is_some() != self.ca.key_file.is_some() {
            return bad("ca", "cert_file and key_file must be set together");
        }
        if !self.apns.base_url.starts_with("https://") {
            return bad("apns.base_url", "must start with https://");
        }
        if self.enroll.signing_cert_file.is_some() != self.enroll.signing_key_file.is_some() {
            return bad(
                "enroll",
                "signing_cert_file and signing_key_file must be set together",
            );
        }
        if self.api.key.as_deref().is_some_and(|k| k.len() < 16) {
            return bad("api.key", "must be at least 16 characters");
        }
        if let Some(list) = &self.identity.trusted_proxies {
            if let Err(e) = TrustedProxies::parse(list) {
                return Err(ConfigError::Env {
                    var: "identity.trusted_proxies",
                    message: e.to_string(),
                });
            }
            if list.is_empty() && self.identity.client_cert_header.is_some() {
                return bad(
                    "identity.trusted_proxies",
                    "is empty, so no proxy may send identity.client_cert_header: \
                     list the proxy's address, or unset client_cert_header",
                );
            }
        }
        let l = &self.listener;
        if l.max_connections == 0 {
            return bad("listener.max_connections", "must be at least 1");
        }
        if [
            l.tls_handshake_timeout_secs,
            l.header_read_timeout_secs,
            l.body_read_timeout_secs,
            l.keep_alive_timeout_secs,
        ]
        .contains(&0)
        {
            return bad("listener", "timeouts must be at least 1 second");
        }
        let a = &self.apns;
        if [
            a.connect_timeout_secs,
            a.handshake_timeout_secs,
            a.request_timeout_secs,
        ]
        .contains(&0)
        {
            return bad("apns", "timeouts must be at least 1 second");
        }
        if let Err(message) = self.plist_limits.check() {
            return bad("plist_limits", &message);
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, EngineError> {
    std::fs::read(path).map_err(|source| EngineError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<openssl::x509::X509>, EngineError> {
    openssl::x509::X509::stack_from_pem(&read(path)?).map_err(|source| {
        EngineError::CertificateFile {
            path: path.display().to_string(),
            source,
        }
    })
}

/// Enrollment options from the `[enroll]` section (reads the files it names).
fn enroll_options(config: &Config) -> Result<EnrollOptions, EngineError> {
    let e = &config.enroll;
    let mut o = EnrollOptions::new(&config.public_url);
    o.topic = e.topic.clone();
    o.token = e.token.clone();
    o.organization = e.organization.clone();
    o.min_os_version = e.min_os_version.clone();
    o.min_build_version = e.min_build_version.clone();
    if let Some(n) = &e.display_name {
        o.display_name = n.clone();
    }
    if let Some(i) = &e.identifier {
        o.identifier = i.clone();
    }
    if let Some(f) = &e.device_ca_file {
        o.device_trust =
            DeviceTrust::from_pem_bundle(&read(f)?).map_err(|source| EngineError::DeviceTrust {
                path: f.display().to_string(),
                source,
            })?;
    }
    for f in &e.trust_anchor_files {
        for c in certificates(f)? {
            o.trust_anchors_der.push(c.to_der().map_err(|source| {
                EngineError::CertificateFile {
                    path: f.display().to_string(),
                    source,
                }
            })?);
        }
    }
    if let (Some(cf), Some(kf)) = (&e.signing_cert_file, &e.signing_key_file) {
        let mut certs = certificates(cf)?;
        if certs.is_empty() {
            return Err(EngineError::InvalidSetting {
                name: "enroll.signing_cert_file",
                reason: format!("{}: no certificate", cf.display()),
            });
        }
        let cert = certs.remove(0);
        let key = openssl::pkey::PKey::private_key_from_pem(&read(kf)?).map_err(|source| {
            EngineError::KeyFile {
                path: kf.display().to_string(),
                source,
            }
        })?;
        o.signing = Some(SigningIdentity {
            cert,
            key,
            chain: certs,
        });
    }
    Ok(o)
}

impl EngineBuilder {
    /// A builder configured from a [`Config`]: opens `<data_dir>/pomona.redb`, uses the seal key
    /// from the config or `<data_dir>/seal.key` (created if missing), and imports the CA files
    /// if configured. HTTP settings (API key, proxies, rate limits) are
    /// [`HttpOptions::from_config`]'s.
    pub fn from_config(config: &Config) -> Result<Self, EngineError> {
        crate::fsutil::private_dir(&config.data_dir).map_err(|source| EngineError::Io {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let db_path = config.data_dir.join("pomona.redb");
        crate::fsutil::tighten(&db_path, crate::fsutil::FILE_MODE).map_err(|source| {
            EngineError::Io {
                path: db_path.display().to_string(),
                source,
            }
        })?;
        let seal = match &config.seal.key {
            Some(hex) => SealKey::from_hex(hex)?,
            None => SealKey::load_or_create(&config.data_dir.join("seal.key"))?,
        };
        let store = RedbStore::open(&db_path, &seal)?;
        let mut b = Self::default()
            .store(std::sync::Arc::new(store))
            .seal_key(seal)
            .public_url(&config.public_url)
            .renewal_policy(config.identity.renewal)
            .user_authenticate(config.mdm.user_authenticate)
            .max_body_bytes(config.mdm.max_body_bytes)
            .max_queue_len(config.mdm.max_queue_len)
            .retention(config.retention.retention())
            .scep_options(ScepOptions {
                static_challenge: config.scep.challenge.clone(),
                validity_days: config.ca.device_cert_validity_days,
                challenge_ttl_secs: config.scep.challenge_ttl_secs,
            })
            .ca_options(CaOptions {
                key_bits: config.ca.key_bits,
                validity_days: config.ca.validity_days,
                ..CaOptions::default()
            });
        if let (Some(cert), Some(key)) = (&config.ca.cert_file, &config.ca.key_file) {
            b = b.ca(CertificateAuthority::from_pem(&read(cert)?, &read(key)?)?);
        }
        b = b.enroll_options(enroll_options(config)?);
        let mut apns = ApnsOptions::default();
        apns.endpoint.base_url = config.apns.base_url.clone();
        apns.endpoint.connections = config.apns.connections;
        apns.endpoint.connect_timeout = Duration::from_secs(config.apns.connect_timeout_secs);
        apns.endpoint.handshake_timeout = Duration::from_secs(config.apns.handshake_timeout_secs);
        apns.endpoint.timeout = Duration::from_secs(config.apns.request_timeout_secs);
        apns.rearm_after = Duration::from_secs(config.apns.rearm_after_secs);
        if let Some(f) = &config.apns.extra_ca_file {
            apns.endpoint.extra_ca =
                Some(openssl::x509::X509::from_pem(&read(f)?).map_err(|source| {
                    EngineError::CertificateFile {
                        path: f.display().to_string(),
                        source,
                    }
                })?);
        }
        b = b
            .apns_options(apns)
            .plugin_limits(config.plugin_limits)
            .plist_limits(config.plist_limits)
            .setup_options(SetupOptions {
                release_timeout: Duration::from_secs(config.setup.release_timeout_secs),
                ..SetupOptions::default()
            });
        // Relative plugin paths in a config file are relative to the working directory.
        for p in &config.plugins {
            b = b.plugin(p.clone());
        }
        Ok(b)
    }
}

impl HttpOptions {
    /// The HTTP adapter's settings from a [`Config`]: the API key (`config.api.key` as is), the
    /// client-certificate header and trusted proxies (`[identity]`) and the rate limits
    /// (`[rate_limit]`, on by default).
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut o = HttpOptions::new().rate_limits(config.rate_limit.options());
        if let Some(key) = &config.api.key {
            o = o.api_key(key);
        }
        if let Some(h) = &config.identity.client_cert_header {
            let name = http::HeaderName::try_from(h.as_str()).map_err(|_| ConfigError::Env {
                var: "identity.client_cert_header",
                message: format!("{h:?} is not a header name"),
            })?;
            o = o.client_cert_header(name);
        }
        if let Some(list) = &config.identity.trusted_proxies {
            let proxies = TrustedProxies::parse(list).map_err(|e| ConfigError::Env {
                var: "identity.trusted_proxies",
                message: e.to_string(),
            })?;
            o = o.trusted_proxies(proxies);
        }
        Ok(o)
    }
}

#[cfg(all(test, unix))]
mod file_mode_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_dir_is_0700_and_database_0600_also_when_they_were_open() {
        let root = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: root.path().join("fresh"),
            ..Config::default()
        };
        drop(EngineBuilder::from_config(&config).unwrap());
        assert_eq!(mode(&config.data_dir), 0o700);
        assert_eq!(mode(&config.data_dir.join("pomona.redb")), 0o600);

        // An older data dir left readable by everyone is tightened on start.
        let old = root.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::File::create(old.join("pomona.redb")).unwrap();
        std::fs::set_permissions(
            old.join("pomona.redb"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let config = Config {
            data_dir: old.clone(),
            ..Config::default()
        };
        drop(EngineBuilder::from_config(&config).unwrap());
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&old.join("pomona.redb")), 0o600);
    }
}
