//! The SCEP server: issues device identities from the engine's CA (RFC 8894).
//!
//! - `PKCSReq`: the CSR must carry a valid challenge — the static one from the configuration,
//!   or a one-time challenge minted for an enrollment-profile download (consumed on use).
//! - `RenewalReq`: signed by a still-valid identity issued by this CA; no challenge needed. The
//!   new certificate is linked to the old one so the check-in path accepts it as a renewal.
//! - Every refusal is a proper CertRep with `pkiStatus` failure and a `failInfo`.

use std::sync::Arc;

use serde_json::json;

use crate::ca::CertificateAuthority;
use crate::events::{Outbox, event, kind};
use crate::store::{
    CertBinding, CertHash, ChallengeStatus, ChallengeStore, IdentityStore, StoreError,
};
use crate::wire::scep::{self, FailInfo, MessageType, Outcome, ScepError, ScepRequest};

/// Why a PKIOperation could not be answered with a CertRep at all.
#[derive(Debug, thiserror::Error)]
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

    /// Forget expired one-time challenges.
    pub async fn prune_challenges(&self) -> Result<u64, StoreError> {
        self.challenges
            .prune_challenges(time::OffsetDateTime::now_utc())
            .await
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
    ) -> Result<Result<openssl::x509::X509, (FailInfo, String)>, ScepServiceError> {
        let m = &request.message;
        let renewal = match m.message_type {
            MessageType::PkcsReq => false,
            MessageType::RenewalReq => true,
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
        // The evidence the new certificate inherits: a renewal keeps the renewed certificate's
        // binding, a one-time challenge minted for MachineInfo gives that MachineInfo's.
        let mut binding: Option<CertBinding> = None;
        let renewed_from = if renewal {
            if let Err(e) = self.ca.verify_device_cert(&m.signer) {
                return Ok(Err((
                    FailInfo::BadRequest,
                    format!("RenewalReq must be signed by a valid identity from this CA: {e}"),
                )));
            }
            let old = CertHash::of_der(
                &m.signer
                    .to_der()
                    .map_err(|e| ScepError::Build(e.to_string()))?,
            );
            binding = self.identity.cert_binding(&old).await?;
            Some(old)
        } else {
            let presented = scep::csr_challenge(&csr);
            match self.check_challenge(presented.as_deref()).await? {
                Ok(()) => {
                    if let Some(p) = &presented {
                        binding = self.challenges.challenge_binding(p).await?;
                    }
                    None
                }
                Err(reason) => return Ok(Err((FailInfo::BadRequest, reason))),
            }
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
        if let Some(old) = &renewed_from {
            self.identity.link_renewal(old, &new_hash).await?;
        }
        if let Some(b) = &binding {
            self.identity.bind_cert(&new_hash, b).await?;
        }
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
        if let Err(err) = self.outbox.publish(vec![e]).await {
            tracing::warn!(%err, "could not record scep.certificate_issued");
        }
        Ok(Ok(issued))
    }

    async fn check_challenge(
        &self,
        presented: Option<&str>,
    ) -> Result<Result<(), String>, StoreError> {
        let Some(presented) = presented else {
            return Ok(Err("the CSR carries no challengePassword".into()));
        };
        if let Some(expected) = &self.options.static_challenge
            && constant_time_eq(expected, presented)
        {
            return Ok(Ok(()));
        }
        let now = time::OffsetDateTime::now_utc();
        Ok(
            match self.challenges.consume_challenge(presented, now).await? {
                ChallengeStatus::Accepted => Ok(()),
                ChallengeStatus::AlreadyUsed => Err("one-time challenge was already used".into()),
                ChallengeStatus::Expired => Err("one-time challenge has expired".into()),
                ChallengeStatus::Unknown => Err("wrong challenge".into()),
            },
        )
    }
}

#[cfg(test)]
mod tests;
