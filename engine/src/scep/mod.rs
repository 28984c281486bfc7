//! The SCEP server: issues device identities from the engine's CA (RFC 8894).
//!
//! - `PKCSReq`: the CSR must carry a valid challenge — the static one from the configuration,
//!   or a one-time challenge minted for an enrollment-profile download (consumed on use).
//! - `RenewalReq`: signed by a still-valid identity issued by this CA; no challenge needed. The
//!   new certificate is linked to the old one so the check-in path accepts it as a renewal.
//! - Every refusal is a proper CertRep with `pkiStatus` failure and a `failInfo`.
//! - Each issued certificate is kept for the challenge lifetime under its transaction ID and
//!   the SHA-256 of its CSR key: a retry of the transaction (the reply was lost) with the same key
//!   and the same challenge — or, for a renewal, the same signer — gets the same certificate again
//!   in a new CertRep; `CertPoll` (`GetCertInitial`) signed with that key gets it too.
//! - An issuance is one store write (`record_issuance`): the one-time challenge is consumed in the
//!   same transaction as the binding, the renewal link, the retry record and
//!   `scep.certificate_issued`, so a failed write leaves the challenge usable for the retry.

use std::sync::Arc;

use openssl::x509::X509;

use serde_json::json;

use crate::ca::CertificateAuthority;
use crate::events::{Outbox, event, kind};
use crate::store::{
    CertBinding, CertHash, ChallengeStatus, ChallengeStore, Emit, IdentityStore, ScepIssuance,
    ScepIssue, StoreError,
};
use crate::wire::scep::{
    self, FailInfo, MessageType, Outcome, ScepError, ScepRequest, SignedMessage,
};

/// Most expired transaction records forgotten per pruning pass.
const PRUNE_BATCH: usize = 10_000;

/// Why a PKIOperation could not be answered with a CertRep at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScepServiceError {
    /// The message itself is unreadable (answered with HTTP 400).
    #[error(transparent)]
    Message(#[from] ScepError),
    /// Storage failed (HTTP 500: the client retries).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SCEP settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScepOptions {
    /// A static challenge every client may use (none: only one-time challenges).
    pub static_challenge: Option<String>,
    /// Validity of issued device certificates, in days.
    pub validity_days: u32,
    /// Lifetime of one-time challenges, in seconds.
    pub challenge_ttl_secs: u32,
}

impl Default for ScepOptions {
    fn default() -> Self {
        Self {
            static_challenge: None,
            validity_days: 365,
            challenge_ttl_secs: 3600,
        }
    }
}

crate::setters::with_setters!(ScepOptions {
    with_static_challenge => static_challenge: Option<String>,
    with_validity_days => validity_days: u32,
    with_challenge_ttl_secs => challenge_ttl_secs: u32,
});

/// The SCEP service.
pub struct ScepService {
    ca: Arc<CertificateAuthority>,
    challenges: Arc<dyn ChallengeStore>,
    identity: Arc<dyn IdentityStore>,
    outbox: Outbox,
    options: ScepOptions,
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    openssl::memcmp::eq(
        &openssl::sha::sha256(a.as_bytes()),
        &openssl::sha::sha256(b.as_bytes()),
    )
}

impl ScepService {
    /// A SCEP service issuing from `ca`.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        challenges: Arc<dyn ChallengeStore>,
        identity: Arc<dyn IdentityStore>,
        outbox: Outbox,
        options: ScepOptions,
    ) -> Self {
        scep::load_legacy_provider();
        Self {
            ca,
            challenges,
            identity,
            outbox,
            options,
        }
    }

    /// `GetCACaps`.
    pub fn capabilities(&self) -> &'static str {
        scep::CA_CAPS
    }

    /// `GetCACert`: the CA certificate, DER.
    pub fn ca_certificate_der(&self) -> Vec<u8> {
        self.ca
            .certificate()
            .to_der()
            .expect("a loaded certificate re-encodes")
    }

    /// Mint a one-time challenge (for an enrollment-profile download).
    pub async fn mint_challenge(&self) -> Result<String, StoreError> {
        self.mint(None).await
    }

    /// Mint a one-time challenge for the device verified MachineInfo names: the certificate
    /// issued from it is bound to `binding` (evidence for the identity-binding policy).
    pub async fn mint_bound_challenge(&self, binding: &CertBinding) -> Result<String, StoreError> {
        self.mint(Some(binding)).await
    }

    async fn mint(&self, binding: Option<&CertBinding>) -> Result<String, StoreError> {
        let mut raw = [0u8; 18];
        openssl::rand::rand_bytes(&mut raw).expect("the OpenSSL RNG works");
        let challenge = hex::encode(raw);
        let expires = time::OffsetDateTime::now_utc()
            + time::Duration::seconds(i64::from(self.options.challenge_ttl_secs));
        match binding {
            Some(b) => {
                self.challenges
                    .put_bound_challenge(&challenge, expires, b)
                    .await?
            }
            None => self.challenges.put_challenge(&challenge, expires).await?,
        }
        Ok(challenge)
    }

    /// Forget expired one-time challenges and expired transaction records (at most
    /// `PRUNE_BATCH` (10,000) of those per call). Returns how many.
    pub async fn prune_challenges(&self) -> Result<u64, StoreError> {
        let now = time::OffsetDateTime::now_utc();
        let challenges = self.challenges.prune_challenges(now).await?;
        let issues = self.challenges.prune_scep_issues(now, PRUNE_BATCH).await?;
        Ok(challenges + issues)
    }

    /// `PKIOperation`: answer a request with a CertRep (success or failure).
    pub async fn pki_operation(&self, message: &[u8]) -> Result<Vec<u8>, ScepServiceError> {
        let request = ScepRequest::parse(message)?;
        let tx = request.message.transaction_id.clone();
        let outcome = self.decide(&request).await?;
        let (ca_cert, ca_key) = (self.ca.certificate(), self.ca.private_key());
        let reply = match &outcome {
            Ok(issued) => {
                scep::build_cert_rep(&request, Outcome::Success(vec![issued]), ca_cert, ca_key)?
            }
            Err(fail) => {
                tracing::warn!(transaction_id = %tx, reason = %fail.1, "SCEP request refused");
                scep::build_cert_rep(&request, Outcome::Failure(fail.0), ca_cert, ca_key)?
            }
        };
        Ok(reply)
    }

    /// Issue a certificate, or say why not.
    async fn decide(
        &self,
        request: &ScepRequest,
    ) -> Result<Result<X509, (FailInfo, String)>, ScepServiceError> {
        let m = &request.message;
        let renewal = match m.message_type {
            MessageType::PkcsReq => false,
            MessageType::RenewalReq => true,
            MessageType::CertPoll => return self.poll(m).await,
            other => {
                return Ok(Err((
                    FailInfo::BadRequest,
                    format!("unsupported messageType {other:?}"),
                )));
            }
        };
        let csr = match request.decrypt_csr(self.ca.certificate(), self.ca.private_key()) {
            Ok(c) => c,
            Err(e @ ScepError::Decrypt(_)) => {
                return Ok(Err((FailInfo::BadMessageCheck, e.to_string())));
            }
            Err(e) => return Ok(Err((FailInfo::BadRequest, e.to_string()))),
        };
        let csr_key = key_sha256(
            &csr.public_key()
                .map_err(|e| ScepError::BadCsr(e.to_string()))?,
        )?;
        let challenge = if renewal {
            None
        } else {
            scep::csr_challenge(&csr)
        };
        // The evidence the new certificate inherits: a renewal keeps the renewed certificate's
        // binding, a one-time challenge minted for MachineInfo gives that MachineInfo's.
        let mut binding: Option<CertBinding> = None;
        // The one-time challenge to consume, in the same transaction as the issuance records.
        let mut consume: Option<String> = None;
        let renewed_from = if renewal {
            if let Err(e) = self.ca.verify_device_cert(&m.signer) {
                return Ok(Err((
                    FailInfo::BadRequest,
                    format!("RenewalReq must be signed by a valid identity from this CA: {e}"),
                )));
            }
            if let Some(again) = self.retried(m, &csr_key, None).await? {
                return Ok(Ok(again));
            }
            let old = CertHash::of_der(
                &m.signer
                    .to_der()
                    .map_err(|e| ScepError::Build(e.to_string()))?,
            );
            binding = self.identity.cert_binding(&old).await?;
            Some(old)
        } else {
            if let Some(again) = self.retried(m, &csr_key, challenge.as_deref()).await? {
                return Ok(Ok(again));
            }
            match self.check_challenge(challenge.as_deref()) {
                Ok(Some(one_time)) => {
                    binding = self.challenges.challenge_binding(one_time).await?;
                    consume = Some(one_time.to_owned());
                }
                Ok(None) => {}
                Err(reason) => return Ok(Err((FailInfo::BadRequest, reason))),
            }
            None
        };
        let public_key = csr
            .public_key()
            .map_err(|e| ScepError::BadCsr(e.to_string()))?;
        let issued = self
            .ca
            .issue_device_cert(&public_key, csr.subject_name(), self.options.validity_days)
            .map_err(|e| ScepError::Build(e.to_string()))?;
        let new_hash = CertHash::of_der(
            &issued
                .to_der()
                .map_err(|e| ScepError::Build(e.to_string()))?,
        );
        let serial = issued
            .serial_number()
            .to_bn()
            .map(|b| b.to_hex_str().map(|s| s.to_string()).unwrap_or_default())
            .unwrap_or_default();
        let e = event(
            kind::SCEP_CERTIFICATE_ISSUED,
            None,
            json!({
                "serial": serial,
                "certificate_sha256": new_hash.to_hex(),
                "renewal_of": renewed_from.map(|h| h.to_hex()),
                "bound_udid": binding.as_ref().map(|b| b.udid.clone()),
                "transaction_id": m.transaction_id,
            }),
        );
        let issuance = ScepIssuance {
            challenge: consume,
            certificate: new_hash,
            renewal_of: renewed_from,
            binding,
            issue: self.issue_record(m, csr_key, challenge.as_deref(), &issued)?,
        };
        let now = time::OffsetDateTime::now_utc();
        let (status, events) = self
            .challenges
            .record_issuance(&issuance, now, Emit::events(vec![e]))
            .await?;
        let refused = match status {
            ChallengeStatus::Accepted => None,
            ChallengeStatus::AlreadyUsed => Some("one-time challenge was already used"),
            ChallengeStatus::Expired => Some("one-time challenge has expired"),
            ChallengeStatus::Unknown => Some("wrong challenge"),
        };
        if let Some(reason) = refused {
            // The certificate just signed is dropped: it was never stored nor sent.
            return Ok(Err((FailInfo::BadRequest, reason.into())));
        }
        self.outbox.broadcast(&events);
        Ok(Ok(issued))
    }

    /// The certificate already issued for this transaction, if `m` retries it: the same CSR key,
    /// and the same challenge (a `PKCSReq`) or the same signer key (a renewal).
    async fn retried(
        &self,
        m: &SignedMessage,
        csr_key: &[u8; 32],
        challenge: Option<&str>,
    ) -> Result<Option<X509>, ScepServiceError> {
        let now = time::OffsetDateTime::now_utc();
        let signer_key = signer_key_sha256(m)?;
        let challenge = challenge.map(|c| openssl::sha::sha256(c.as_bytes()));
        for issue in self.challenges.scep_issues(&m.transaction_id, now).await? {
            let same_proof = match (&issue.challenge_sha256, &challenge) {
                (Some(stored), Some(presented)) => openssl::memcmp::eq(stored, presented),
                (None, None) => issue.signer_key_sha256 == signer_key,
                _ => false,
            };
            if issue.csr_key_sha256 == *csr_key && same_proof {
                tracing::info!(
                    transaction_id = %m.transaction_id,
                    "SCEP transaction retried: sending its certificate again"
                );
                return Ok(Some(stored_certificate(&issue)?));
            }
        }
        Ok(None)
    }

    /// `CertPoll`: the certificate issued for this transaction to the poll's signer key.
    async fn poll(
        &self,
        m: &SignedMessage,
    ) -> Result<Result<X509, (FailInfo, String)>, ScepServiceError> {
        let now = time::OffsetDateTime::now_utc();
        let signer_key = signer_key_sha256(m)?;
        for issue in self.challenges.scep_issues(&m.transaction_id, now).await? {
            if issue.signer_key_sha256 == signer_key || issue.csr_key_sha256 == signer_key {
                return Ok(Ok(stored_certificate(&issue)?));
            }
        }
        Ok(Err((
            FailInfo::BadCertId,
            "no certificate was issued for this transaction and key".into(),
        )))
    }

    /// The record that keeps `issued` for retries of its transaction until the challenge
    /// lifetime has passed.
    fn issue_record(
        &self,
        m: &SignedMessage,
        csr_key: [u8; 32],
        challenge: Option<&str>,
        issued: &X509,
    ) -> Result<ScepIssue, ScepServiceError> {
        Ok(ScepIssue {
            transaction_id: m.transaction_id.clone(),
            csr_key_sha256: csr_key,
            signer_key_sha256: signer_key_sha256(m)?,
            challenge_sha256: challenge.map(|c| openssl::sha::sha256(c.as_bytes())),
            certificate_der: issued
                .to_der()
                .map_err(|e| ScepError::Build(e.to_string()))?,
            expires_at: time::OffsetDateTime::now_utc()
                + time::Duration::seconds(i64::from(self.options.challenge_ttl_secs)),
        })
    }

    /// Whether the request's challenge may be tried: `Some` for a one-time challenge, consumed
    /// with the issuance records ([`crate::store::ScepTransactionStore::record_issuance`]); `None` for the static one.
    fn check_challenge<'a>(&self, presented: Option<&'a str>) -> Result<Option<&'a str>, String> {
        let Some(presented) = presented else {
            return Err("the CSR carries no challengePassword".into());
        };
        if let Some(expected) = &self.options.static_challenge
            && constant_time_eq(expected, presented)
        {
            return Ok(None);
        }
        Ok(Some(presented))
    }
}

/// SHA-256 of a public key's DER SubjectPublicKeyInfo.
fn key_sha256(key: &openssl::pkey::PKey<openssl::pkey::Public>) -> Result<[u8; 32], ScepError> {
    let der = key
        .public_key_to_der()
        .map_err(|e| ScepError::Build(e.to_string()))?;
    Ok(openssl::sha::sha256(&der))
}

fn signer_key_sha256(m: &SignedMessage) -> Result<[u8; 32], ScepError> {
    key_sha256(
        &m.signer
            .public_key()
            .map_err(|e| ScepError::Malformed(format!("signer key: {e}")))?,
    )
}

fn stored_certificate(issue: &ScepIssue) -> Result<X509, StoreError> {
    X509::from_der(&issue.certificate_der).map_err(|e| StoreError::Corrupt {
        what: format!("SCEP transaction {}", issue.transaction_id),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
