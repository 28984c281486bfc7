//! Observer middleware: turns successful check-ins and reports into durable events.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::{CheckinResponse, MdmError, MdmService, ReportResponse, Request};
use crate::events::{Outbox, event, kind};
use crate::store::{EnrollmentStore, IdentityStore, NewEvent, ReportOutcome};
use crate::wire::checkin::CheckinBody;
use crate::wire::report::{CommandReport, Status};

/// Middleware that publishes lifecycle and command events after `inner` succeeds.
///
/// Events are appended after the state change commits. If the outbox write fails the device still
/// gets its answer (a retry would repeat the state change) and the failure is logged.
pub struct Observe<S> {
    inner: S,
    outbox: Outbox,
    enrollments: Arc<dyn EnrollmentStore>,
    identity: Option<Arc<dyn IdentityStore>>,
}

impl<S> Observe<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, outbox: Outbox, enrollments: Arc<dyn EnrollmentStore>) -> Self {
        Self {
            inner,
            outbox,
            enrollments,
            identity: None,
        }
    }

    /// Look up certificate bindings, so `enrollment.authenticated` says whether the serial number
    /// is backed by evidence (`serial_evidence`, `verified_serial_number`). Without this every
    /// serial is reported as self-asserted.
    pub fn with_identity(mut self, identity: Arc<dyn IdentityStore>) -> Self {
        self.identity = Some(identity);
        self
    }

    async fn publish(&self, events: Vec<NewEvent>) {
        if let Err(err) = self.outbox.publish(events).await {
            tracing::error!(%err, "could not append events to the outbox");
        }
    }

    async fn checkin_events(&self, req: &Request, body: &CheckinBody) -> Vec<NewEvent> {
        let id = Some(&req.channel.id);
        match body {
            CheckinBody::Authenticate(m) => {
                let binding = match (&self.identity, &req.identity) {
                    (Some(store), Some(identity)) => {
                        store.cert_binding(&identity.hash).await.unwrap_or_else(|err| {
                            tracing::warn!(%err, "certificate binding unreadable; serial unverified");
                            None
                        })
                    }
                    _ => None,
                };
                // Only a serial number from evidence may link the enrollment to a device record.
                let (evidence, verified_serial) = match binding {
                    Some(b) if req.identifiers.udid.as_deref() == Some(b.udid.as_str()) => {
                        ("machine_info", Some(b.serial))
                    }
                    _ => ("self_asserted", None),
                };
                vec![event(
                    kind::ENROLLMENT_AUTHENTICATED,
                    id,
                    json!({
                        "udid": req.identifiers.udid,
                        "serial_number": m.serial_number,
                        "serial_evidence": evidence,
                        "verified_serial_number": verified_serial,
                        "model": m.model,
                        "os_version": m.os_version,
                        "build_version": m.build_version,
                        "product_name": m.product_name,
                        "device_name": m.device_name,
                        "topic": m.topic,
                    }),
                )]
            }
            CheckinBody::TokenUpdate(m) => {
                let tally = match self.enrollments.enrollment(&req.channel.id).await {
                    Ok(Some(e)) => e.token_update_tally,
                    _ => 0,
                };
                let data = json!({
                    "kind": req.channel.kind.as_str(),
                    "tally": tally,
                    "awaiting_configuration": m.awaiting_configuration,
                    "parent": req.channel.parent,
                });
                let mut out = vec![event(kind::ENROLLMENT_TOKEN_UPDATED, id, data.clone())];
                if tally == 1 {
                    out.push(event(kind::ENROLLMENT_COMPLETED, id, data));
                }
                out
            }
            CheckinBody::CheckOut => vec![event(kind::ENROLLMENT_CHECKED_OUT, id, json!({}))],
            CheckinBody::SetBootstrapToken(t) => vec![event(
                kind::BOOTSTRAP_TOKEN_STORED,
                id,
                json!({"cleared": t.is_none()}),
            )],
            CheckinBody::GetBootstrapToken => {
                vec![event(kind::BOOTSTRAP_TOKEN_RETRIEVED, id, json!({}))]
            }
            _ => Vec::new(),
        }
    }
}

#[async_trait]
impl<S: MdmService> MdmService for Observe<S> {
    async fn checkin(
        &self,
        req: &Request,
        body: &CheckinBody,
    ) -> Result<CheckinResponse, MdmError> {
        let response = self.inner.checkin(req, body).await?;
        let events = self.checkin_events(req, body).await;
        self.publish(events).await;
        Ok(response)
    }

    async fn report(
        &self,
        req: &Request,
        report: &CommandReport,
    ) -> Result<ReportResponse, MdmError> {
        let response = self.inner.report(req, report).await?;
        let id = Some(&req.channel.id);
        let uuid = report.command_uuid.as_deref();
        let e = match (response.outcome, report.status) {
            (None, _) => None,
            (Some(ReportOutcome::NotQueued), status) => Some(event(
                kind::COMMAND_REPORT_UNMATCHED,
                id,
                json!({"command_uuid": uuid, "status": status.as_str()}),
            )),
            (Some(ReportOutcome::Recorded { .. }), Status::NotNow) => Some(event(
                kind::COMMAND_NOT_NOW,
                id,
                json!({"command_uuid": uuid}),
            )),
            (Some(ReportOutcome::Recorded { command_finished }), status) => Some(event(
                kind::COMMAND_RESULT,
                id,
                json!({
                    "command_uuid": uuid,
                    "status": status.as_str(),
                    "error_chain": report.error_chain,
                    "command_finished": command_finished,
                }),
            )),
        };
        if let Some(e) = e {
            self.publish(vec![e]).await;
        }
        Ok(response)
    }
}
