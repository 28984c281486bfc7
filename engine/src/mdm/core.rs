//! The core of the check-in path: protocol semantics over the storage traits.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use plist::{Dictionary, Value};

use super::IdentityError;
use super::identity::holds_through_renewals;
use super::last_seen::LastSeen;
use super::{CheckinResponse, MdmError, MdmService, ReportResponse, Request, declarative, observe};
use crate::events::Outbox;
use crate::seal::{SealKey, context};
use crate::store::{
    BootstrapStore, Emit, EnrollmentStore, IdentityStore, NextCommand, QueueStore, ReportRecord,
};
use crate::wire::checkin::{CheckinBody, GetToken, to_xml};
use crate::wire::enrollment_id::{Channel, EnrollmentId};
use crate::wire::report::{CommandReport, Status};

/// What to do with `UserAuthenticate` (macOS network and mobile accounts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UserAuthenticatePolicy {
    /// Answer 410: no user channel for network users (the default).
    #[default]
    Decline,
    /// Accept without a digest challenge check (`DigestChallenge` = "", then 200).
    Accept,
}

/// Answers `GetToken` for one `TokenServiceType`.
#[async_trait]
pub trait TokenService: Send + Sync {
    /// Produce the `TokenData` for a device.
    async fn token(&self, channel: &Channel, request: &GetToken) -> Result<Vec<u8>, MdmError>;
}

/// Options of the core service.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct CoreOptions {
    /// `UserAuthenticate` behaviour.
    pub user_authenticate: UserAuthenticatePolicy,
    /// `GetToken` handlers by `TokenServiceType`.
    pub token_services: HashMap<String, Arc<dyn TokenService>>,
}

impl std::fmt::Debug for CoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreOptions")
            .field("user_authenticate", &self.user_authenticate)
            .field(
                "token_services",
                &self.token_services.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

crate::setters::with_setters!(CoreOptions {
    with_user_authenticate => user_authenticate: UserAuthenticatePolicy,
    with_token_services => token_services: HashMap<String, Arc<dyn TokenService>>,
});

/// The innermost service: stores check-ins and runs the command queue.
///
/// Each state change and the events reporting it ([`observe`]) are written in one transaction;
/// the events are broadcast to live subscribers after the commit.
pub struct Core {
    enrollments: Arc<dyn EnrollmentStore>,
    queue: Arc<dyn QueueStore>,
    bootstrap: Arc<dyn BootstrapStore>,
    identity: Arc<dyn IdentityStore>,
    outbox: Outbox,
    seal: SealKey,
    last_seen: Arc<LastSeen>,
    options: CoreOptions,
}

impl Core {
    /// A core over the check-in records, the command queue, bootstrap tokens and certificate
    /// bindings (often one store passed four times), writing its events in the same
    /// transactions as the changes they report and broadcasting them on `outbox`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        enrollments: Arc<dyn EnrollmentStore>,
        queue: Arc<dyn QueueStore>,
        bootstrap: Arc<dyn BootstrapStore>,
        identity: Arc<dyn IdentityStore>,
        outbox: Outbox,
        seal: SealKey,
        last_seen: Arc<LastSeen>,
        options: CoreOptions,
    ) -> Self {
        Self {
            enrollments,
            queue,
            bootstrap,
            identity,
            outbox,
            seal,
            last_seen,
            options,
        }
    }

    /// The serial number the presented certificate is bound to by evidence (verified
    /// MachineInfo for this request's UDID), if any. An unreadable binding counts as none.
    async fn verified_serial(&self, req: &Request) -> Option<String> {
        let identity = req.identity.as_ref()?;
        let binding = self
            .identity
            .cert_binding(&identity.hash)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(%err, "certificate binding unreadable; serial unverified");
                None
            })?;
        (req.identifiers.udid.as_deref() == Some(binding.udid.as_str())).then_some(binding.serial)
    }

    fn require_device_channel(req: &Request, what: &str) -> Result<(), MdmError> {
        if req.channel.kind.is_device() {
            Ok(())
        } else {
            Err(MdmError::BadRequest(format!(
                "{what} is only valid on a device channel, not {}",
                req.channel.id
            )))
        }
    }

    fn plist(dict: Dictionary) -> CheckinResponse {
        CheckinResponse::Plist(to_xml(&Value::Dictionary(dict)))
    }
}

#[async_trait]
impl MdmService for Core {
    async fn checkin(
        &self,
        req: &Request,
        body: &CheckinBody,
    ) -> Result<CheckinResponse, MdmError> {
        let now = req.received_at;
        let channel = &req.channel;
        self.last_seen.record(&channel.id, now);
        match body {
            CheckinBody::Authenticate(m) => {
                Self::require_device_channel(req, "Authenticate")?;
                // A re-enrollment: user channels of the previous enrollment are stale.
                self.enrollments
                    .disable(&channel.id, now, Emit::none())
                    .await?;
                let events = self
                    .enrollments
                    .store_authenticate(
                        channel,
                        m,
                        now,
                        observe::authenticated(req, m, self.verified_serial(req).await),
                    )
                    .await?;
                self.outbox.broadcast(&events);
                let mut ids = vec![channel.id.clone()];
                ids.extend(self.enrollments.user_channels(&channel.id).await?);
                self.queue.clear_queue(&ids, now).await?;
                Ok(CheckinResponse::Empty)
            }
            CheckinBody::TokenUpdate(m) => {
                let unlock = m.unlock_token.as_ref().map(|t| {
                    self.seal
                        .seal(&context::unlock_token(channel.id.as_str()), t)
                });
                let names = (
                    req.identifiers.user_short_name.clone(),
                    req.identifiers.user_long_name.clone(),
                );
                let (_, events) = self
                    .enrollments
                    .store_token_update(
                        channel,
                        m,
                        unlock,
                        names,
                        now,
                        observe::token_updated(req, m),
                    )
                    .await?;
                self.outbox.broadcast(&events);
                Ok(CheckinResponse::Empty)
            }
            CheckinBody::CheckOut => {
                let (_, events) = self
                    .enrollments
                    .disable(&channel.id, now, observe::checked_out(req))
                    .await?;
                self.outbox.broadcast(&events);
                Ok(CheckinResponse::Empty)
            }
            CheckinBody::UserAuthenticate(m) => match self.options.user_authenticate {
                UserAuthenticatePolicy::Decline => Err(MdmError::Declined),
                UserAuthenticatePolicy::Accept if m.digest_response.is_none() => {
                    let mut d = Dictionary::new();
                    d.insert("DigestChallenge".into(), "".into());
                    Ok(Self::plist(d))
                }
                UserAuthenticatePolicy::Accept => Ok(CheckinResponse::Empty),
            },
            CheckinBody::SetBootstrapToken(token) => {
                Self::require_device_channel(req, "SetBootstrapToken")?;
                let holder = req.identity.as_ref().ok_or(IdentityError::Missing)?.hash;
                let ctx = context::bootstrap_token(channel.id.as_str());
                let sealed = token.as_ref().map(|t| self.seal.seal(&ctx, t));
                let events = self
                    .bootstrap
                    .store_bootstrap_token_held(
                        &channel.id,
                        sealed,
                        &holder,
                        observe::bootstrap_stored(req, token.is_none()),
                    )
                    .await?;
                self.outbox.broadcast(&events);
                Ok(CheckinResponse::Empty)
            }
            CheckinBody::GetBootstrapToken => {
                Self::require_device_channel(req, "GetBootstrapToken")?;
                let presented = req.identity.as_ref().ok_or(IdentityError::Missing)?.hash;
                if let Some(holder) = self.bootstrap.bootstrap_holder(&channel.id).await?
                    && !holds_through_renewals(&*self.identity, &presented, &holder).await?
                {
                    return Err(IdentityError::NotEscrowHolder("the bootstrap token").into());
                }
                let stored = self.bootstrap.bootstrap_token(&channel.id).await?;
                // A read: the event is the only write, committed before the answer.
                self.outbox
                    .publish(observe::bootstrap_retrieved(req))
                    .await?;
                match stored {
                    Some(sealed) => {
                        let ctx = context::bootstrap_token(channel.id.as_str());
                        let token = self.seal.unseal(&ctx, &sealed)?;
                        let mut d = Dictionary::new();
                        d.insert("BootstrapToken".into(), Value::Data(token));
                        Ok(Self::plist(d))
                    }
                    None => Ok(CheckinResponse::Empty),
                }
            }
            CheckinBody::DeclarativeManagement(m) => declarative::respond(m),
            CheckinBody::GetToken(m) => {
                let service = self
                    .options
                    .token_services
                    .get(&m.token_service_type)
                    .ok_or_else(|| {
                        MdmError::BadRequest(format!(
                            "no token service for TokenServiceType {:?}",
                            m.token_service_type
                        ))
                    })?;
                let data = service.token(channel, m).await?;
                let mut d = Dictionary::new();
                d.insert("TokenData".into(), Value::Data(data));
                Ok(Self::plist(d))
            }
            CheckinBody::ReturnToService => {
                let mut rts = Dictionary::new();
                rts.insert("Enabled".into(), false.into());
                let mut d = Dictionary::new();
                d.insert("ReturnToService".into(), rts.into());
                Ok(Self::plist(d))
            }
        }
    }

    async fn report(
        &self,
        req: &Request,
        report: &CommandReport,
    ) -> Result<ReportResponse, MdmError> {
        let id: &EnrollmentId = &req.channel.id;
        self.last_seen.record(id, req.received_at);
        let (outcome, mode) = match (report.status, &report.command_uuid) {
            (Status::Idle, _) => (None, NextCommand::AfterIdle),
            (status, Some(uuid)) => {
                let record = ReportRecord {
                    command_uuid: uuid.clone(),
                    status,
                    error_chain: report.error_chain.clone(),
                    raw: req.raw.clone(),
                };
                let (outcome, events) = self
                    .queue
                    .record_report(id, &record, req.received_at, observe::reported(req, report))
                    .await?;
                self.outbox.broadcast(&events);
                (Some(outcome), NextCommand::AfterReport)
            }
            (_, None) => {
                return Err(MdmError::BadRequest("report without CommandUUID".into()));
            }
        };
        let next = self.queue.next_command(id, mode).await?;
        Ok(ReportResponse { outcome, next })
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
