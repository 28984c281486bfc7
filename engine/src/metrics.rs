//! Process metrics, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Counters are plain atomics in fixed families, so recording one costs a relaxed add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::report::Status;

const MESSAGE_TYPES: [&str; 10] = [
    "Authenticate",
    "TokenUpdate",
    "CheckOut",
    "UserAuthenticate",
    "SetBootstrapToken",
    "GetBootstrapToken",
    "DeclarativeManagement",
    "GetToken",
    "ReturnToService",
    "other",
];
const STATUSES: [&str; 5] = [
    "Idle",
    "Acknowledged",
    "Error",
    "CommandFormatError",
    "NotNow",
];
const HTTP_CLASSES: [&str; 6] = ["200", "400", "401", "404", "410", "5xx"];

/// Engine-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    checkins: [AtomicU64; 10],
    reports: [AtomicU64; 5],
    device_responses: [AtomicU64; 6],
    commands_delivered: AtomicU64,
    commands_enqueued: AtomicU64,
    events_published: AtomicU64,
    pushes_sent: AtomicU64,
    pushes_failed: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Count a check-in message by `MessageType`.
    pub fn checkin(&self, message_type: &str) {
        let i = MESSAGE_TYPES
            .iter()
            .position(|t| *t == message_type)
            .unwrap_or(MESSAGE_TYPES.len() - 1);
        bump(&self.checkins[i]);
    }

    /// Count a command report by status.
    pub fn report(&self, status: Status) {
        let i = STATUSES
            .iter()
            .position(|s| *s == status.as_str())
            .expect("every status is listed");
        bump(&self.reports[i]);
    }

    /// Count a device-endpoint response by HTTP status.
    pub fn device_response(&self, status: u16) {
        let i = HTTP_CLASSES
            .iter()
            .position(|c| c.parse::<u16>().ok() == Some(status))
            .unwrap_or(HTTP_CLASSES.len() - 1);
        bump(&self.device_responses[i]);
    }

    /// Count a command handed to a device.
    pub fn command_delivered(&self) {
        bump(&self.commands_delivered);
    }

    /// Count commands enqueued (one per target).
    pub fn commands_enqueued(&self, n: usize) {
        self.commands_enqueued
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Count published events.
    pub fn events_published(&self, n: usize) {
        self.events_published.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Count a push APNs accepted.
    pub fn push_sent(&self) {
        bump(&self.pushes_sent);
    }

    /// Count a push that failed (any reason).
    pub fn push_failed(&self) {
        bump(&self.pushes_failed);
    }

    /// Render every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut family =
            |name: &str, help: &str, label: &str, names: &[&str], values: &[AtomicU64]| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (n, v) in names.iter().zip(values) {
                    let _ = writeln!(
                        out,
                        "{name}{{{label}=\"{n}\"}} {}",
                        v.load(Ordering::Relaxed)
                    );
                }
            };
        family(
            "pomona_checkins_total",
            "Check-in messages handled, by MessageType.",
            "message_type",
            &MESSAGE_TYPES,
            &self.checkins,
        );
        family(
            "pomona_command_reports_total",
            "Command reports handled, by Status.",
            "status",
            &STATUSES,
            &self.reports,
        );
        family(
            "pomona_device_responses_total",
            "Responses on device endpoints, by HTTP status.",
            "code",
            &HTTP_CLASSES,
            &self.device_responses,
        );
        for (name, help, v) in [
            (
                "pomona_commands_delivered_total",
                "Commands handed to devices.",
                &self.commands_delivered,
            ),
            (
                "pomona_commands_enqueued_total",
                "Commands enqueued, one per target.",
                &self.commands_enqueued,
            ),
            (
                "pomona_events_published_total",
                "Events appended to the outbox.",
                &self.events_published,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.checkin("Authenticate");
        m.checkin("Weird");
        m.report(Status::Idle);
        m.device_response(200);
        m.device_response(503);
        let text = m.render();
        assert!(text.contains("pomona_checkins_total{message_type=\"Authenticate\"} 1"));
        assert!(text.contains("pomona_checkins_total{message_type=\"other\"} 1"));
        assert!(text.contains("pomona_command_reports_total{status=\"Idle\"} 1"));
        assert!(text.contains("pomona_device_responses_total{code=\"5xx\"} 1"));
        assert!(text.contains("# TYPE pomona_commands_delivered_total counter"));
    }
}
