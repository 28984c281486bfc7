//! The setup flow: placement at enrollment, setup steps while Setup Assistant waits, release.
//!
//! [`SetupService`] follows the durable event outbox with a stored cursor, so it sees every
//! `Authenticate`, `MachineInfo`, first `TokenUpdate` and command result exactly in order, even
//! across restarts. Each event's effect on the device and setup records is written with the
//! cursor and the resulting events in one transaction
//! ([`LifecycleWrite`](crate::store::LifecycleWrite)); commands are queued after that commit under
//! UUIDs fixed in the records, so queuing again after a crash is a harmless duplicate. Nothing is
//! lost and nothing is sent twice.
//!
//! - `enroll.machine_info`, `enrollment.authenticated` (with a verified serial number only): the
//!   device record gets its UDID and enrollment, and the `place` hook is asked.
//! - `enrollment.completed` (first `TokenUpdate`) with `AwaitingConfiguration`: the `setup-steps`
//!   hook (default: the team's `setup_steps`) decides the steps; their commands are queued.
//! - `command.result` / `command.not_now` for a step: the step's status changes
//!   (Acknowledged → succeeded, Error → failed with Apple's error chain, NotNow → still pending),
//!   and the `release` hook is asked.
//! - A timer asks `release` again when a `wait` ends. The built-in rule releases once every
//!   required step is finished, or when the team's timeout (default 30 minutes) has passed.
//! - Release queues `DeviceConfigured`; `hold` keeps the device waiting until an admin releases it.

mod placement;
mod service;
mod steps;

pub use placement::{BY_ADMIN, place, policy_device};
pub use service::{SetupError, SetupOptions, SetupService};
pub use steps::{LibraryProfile, ProfileSource, StepProblem, command_for};
