//! The events the check-in path emits, built for the store write that makes the state change.
//!
//! [`super::Core`] hands these to its store calls ([`Emit`]), so each event is appended in the
//! same transaction as the change it reports: a crash can lose neither without the other. Events
//! whose content depends on the write's outcome (the `TokenUpdate` tally, whether a report matched
//! a queued command) are built from that outcome inside the transaction.

use serde_json::json;

use super::Request;
use crate::events::{event, kind};
use crate::store::{Emit, NewEvent, ReportOutcome};
use crate::wire::checkin::{Authenticate, TokenUpdate};
use crate::wire::enrollment_id::EnrollmentId;
use crate::wire::report::{CommandReport, Status};

/// `enrollment.authenticated`. `verified_serial` is the serial number the presented
/// certificate is bound to by evidence (verified MachineInfo for this UDID), if any: only that
/// serial may link the enrollment to a device record, so the event says which kind it has.
pub fn authenticated(req: &Request, m: &Authenticate, verified_serial: Option<String>) -> Emit<()> {
    let evidence = if verified_serial.is_some() {
        "machine_info"
    } else {
        "self_asserted"
    };
    Emit::events(vec![event(
        kind::ENROLLMENT_AUTHENTICATED,
        Some(&req.channel.id),
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
    )])
}

/// `enrollment.token_updated`, and `enrollment.completed` when the new tally is 1.
pub fn token_updated(req: &Request, m: &TokenUpdate) -> Emit<u64> {
    let id = req.channel.id.clone();
    let kind_name = req.channel.kind.as_str();
    let parent = req.channel.parent.clone();
    let awaiting = m.awaiting_configuration;
    Emit::with(move |tally: &u64| {
        let data = json!({
            "kind": kind_name,
            "tally": tally,
            "awaiting_configuration": awaiting,
            "parent": parent,
        });
        let mut out = vec![event(
            kind::ENROLLMENT_TOKEN_UPDATED,
            Some(&id),
            data.clone(),
        )];
        if *tally == 1 {
            out.push(event(kind::ENROLLMENT_COMPLETED, Some(&id), data));
        }
        out
    })
}

/// `enrollment.checked_out`.
pub fn checked_out(req: &Request) -> Emit<Vec<EnrollmentId>> {
    Emit::events(vec![event(
        kind::ENROLLMENT_CHECKED_OUT,
        Some(&req.channel.id),
        json!({}),
    )])
}

/// `bootstrap_token.stored` (`cleared` when the device removed it).
pub fn bootstrap_stored(req: &Request, cleared: bool) -> Emit<()> {
    Emit::events(vec![event(
        kind::BOOTSTRAP_TOKEN_STORED,
        Some(&req.channel.id),
        json!({"cleared": cleared}),
    )])
}

/// `bootstrap_token.retrieved` (a read: the event is the only write).
pub fn bootstrap_retrieved(req: &Request) -> Vec<NewEvent> {
    vec![event(
        kind::BOOTSTRAP_TOKEN_RETRIEVED,
        Some(&req.channel.id),
        json!({}),
    )]
}

/// The event of a non-`Idle` report, from what recording it did: `command.result`,
/// `command.not_now` or `command.report_unmatched`.
pub fn reported(req: &Request, report: &CommandReport) -> Emit<ReportOutcome> {
    let id = req.channel.id.clone();
    let uuid = report.command_uuid.clone();
    let status = report.status;
    let error_chain = report.error_chain.clone();
    Emit::with(move |outcome: &ReportOutcome| {
        let id = Some(&id);
        let e = match (outcome, status) {
            (ReportOutcome::NotQueued, status) => event(
                kind::COMMAND_REPORT_UNMATCHED,
                id,
                json!({"command_uuid": uuid, "status": status.as_str()}),
            ),
            (ReportOutcome::Recorded { .. }, Status::NotNow) => {
                event(kind::COMMAND_NOT_NOW, id, json!({"command_uuid": uuid}))
            }
            (ReportOutcome::Recorded { command_finished }, status) => event(
                kind::COMMAND_RESULT,
                id,
                json!({
                    "command_uuid": uuid,
                    "status": status.as_str(),
                    "error_chain": error_chain,
                    "command_finished": command_finished,
                }),
            ),
        };
        vec![e]
    })
}
