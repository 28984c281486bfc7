//! [`SetupService`]: follows the outbox and drives each device from placement to release.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use serde_json::json;
use tokio::sync::watch;

use super::placement::{BY_ADMIN, apply_place, place_question, policy_device};
use super::steps::{ProfileSource, StepProblem, command_for};
use crate::events::{Outbox, event, kind};
use crate::mdm::commands::Commander;
use crate::policy::{
    self, Decided, PlaceDecision, PolicyChain, Progress, ReleaseDecision, Step, StepProgress,
    StepStatus, step_to_json, steps_from_json,
};
use crate::store::{
    DepStore, DeviceRecord, DeviceStage, DeviceStore, EnrollmentStore, Event, LifecycleWrite,
    NewEvent, SetupRecord, SetupState, SetupStep, StepState, StoreError, TeamStore, Timestamp,
};
use crate::wire::command::Command;
use crate::wire::enrollment_id::EnrollmentId;
use crate::wire::setup::{device_configured, user_configured};

/// The command that releases `setup`: `UserConfigured` for a Shared iPad user channel, else
/// `DeviceConfigured`.
fn release_command(setup: &SetupRecord, uuid: &str) -> Command {
    if setup.user_channel {
        user_configured(uuid)
    } else {
        device_configured(uuid)
    }
}

/// The outbox cursor's name.
const CURSOR: &str = "setup";

/// Events read per batch.
const BATCH: usize = 200;

/// Settings of the setup flow.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SetupOptions {
    /// Release a device whose required steps are not all finished after this long (a team's
    /// `release_timeout_secs` overrides it).
    pub release_timeout: Duration,
    /// How often to look for due work when no event arrives.
    pub poll: Duration,
    /// How long to wait before retrying a step whose command could not be built (storage).
    pub retry_after: Duration,
}

impl Default for SetupOptions {
    fn default() -> Self {
        Self {
            release_timeout: Duration::from_secs(30 * 60),
            poll: Duration::from_secs(1),
            retry_after: Duration::from_secs(30),
        }
    }
}

crate::setters::with_setters!(SetupOptions {
    with_release_timeout => release_timeout: std::time::Duration,
    with_poll => poll: std::time::Duration,
    with_retry_after => retry_after: std::time::Duration,
});

/// Why an admin action on the setup flow failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// No device with this serial number.
    #[error("no device with serial number {0:?}")]
    UnknownDevice(String),
    /// The device has not enrolled, so it cannot take `DeviceConfigured`.
    #[error("device {0:?} has not enrolled")]
    NotEnrolled(String),
    /// No team with this name.
    #[error("no team named {0:?}")]
    UnknownTeam(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The setup flow (see the module docs).
pub struct SetupService {
    devices: Arc<dyn DeviceStore>,
    teams: Arc<dyn TeamStore>,
    enrollments: Arc<dyn EnrollmentStore>,
    dep: Arc<dyn DepStore>,
    commander: Arc<Commander>,
    chain: Arc<PolicyChain>,
    profiles: Option<Arc<dyn ProfileSource>>,
    outbox: Outbox,
    options: SetupOptions,
    /// Held while an event's or a timer's effect is applied, and by the admin's `set_team` and
    /// `release_now`: never while a plugin runs (see [`SetupService::pass`]).
    running: tokio::sync::Mutex<()>,
    /// One reader of the outbox at a time. Only the event pass takes it (a second concurrent
    /// call waits for the first); the timer pass and admin calls never do.
    consumer: tokio::sync::Mutex<()>,
}

/// Why applying an event stopped.
enum PassError {
    /// Storage failed.
    Store(StoreError),
    /// The event needs a plugin answer for inputs nobody has asked about yet (an earlier event,
    /// or an admin, changed its records after the answers were decided).
    Undecided,
}

impl From<StoreError> for PassError {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

/// A placement question: the device as the hook sees it, and the built-in answer.
type PlaceQuestion = (policy::Device, Option<PlaceDecision>);
/// A setup-steps question: the device as the hook sees it, and the team's steps.
type StepsQuestion = (policy::Device, Vec<Step>);

/// Plugin answers for one batch of events, decided before the lock is taken, each kept with
/// its whole question. A question asked again with equal inputs gets the same answer without a
/// plugin call; the chain's answer depends on nothing else.
#[derive(Default)]
struct Answers {
    place: Vec<(PlaceQuestion, Option<Decided<PlaceDecision>>)>,
    steps: Vec<(StepsQuestion, Decided<Vec<Step>>)>,
}

/// How [`SetupService::handle`] runs.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// Without the lock: read the records, ask the plugins, keep their answers, write nothing.
    Decide(&'a std::sync::Mutex<Answers>),
    /// Under the lock: write the effect, with answers kept by an earlier `Decide` only. A
    /// question not among them stops the event with [`PassError::Undecided`].
    Apply(&'a std::sync::Mutex<Answers>),
}

impl<'a> Mode<'a> {
    fn deciding(self) -> bool {
        matches!(self, Mode::Decide(_))
    }

    fn answers(self) -> &'a std::sync::Mutex<Answers> {
        match self {
            Mode::Decide(a) | Mode::Apply(a) => a,
        }
    }
}

/// The answer kept for `question` in `list`; when deciding and there is none, `ask` it now and
/// keep the answer. Applying never asks: a question not decided before is
/// [`PassError::Undecided`].
async fn recall_or_ask<Q, A, Fut>(
    mode: Mode<'_>,
    question: Q,
    list: fn(&mut Answers) -> &mut Vec<(Q, A)>,
    ask: impl FnOnce(Q) -> Fut,
) -> Result<A, PassError>
where
    Q: PartialEq + Clone,
    A: Clone,
    Fut: std::future::Future<Output = A>,
{
    let known = {
        let mut answers = mode.answers().lock().expect("answers");
        list(&mut answers)
            .iter()
            .find(|(q, _)| *q == question)
            .map(|(_, a)| a.clone())
    };
    match (known, mode) {
        (Some(a), _) => Ok(a),
        (None, Mode::Apply(_)) => Err(PassError::Undecided),
        (None, Mode::Decide(answers)) => {
            let a = ask(question.clone()).await;
            list(&mut answers.lock().expect("answers")).push((question, a.clone()));
            Ok(a)
        }
    }
}

/// A `release` answer decided for a setup, before the lock.
struct ReleaseAnswer {
    decided: Decided<ReleaseDecision>,
    /// The built-in rule's reason, when it decided.
    default_reason: &'static str,
}

impl std::fmt::Debug for SetupService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupService").finish_non_exhaustive()
    }
}

fn now() -> Timestamp {
    time::OffsetDateTime::now_utc()
}

impl SetupService {
    /// The device with this serial number, if Pomona knows it.
    pub async fn device(&self, serial: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.devices.device(serial).await
    }

    /// A page of devices.
    pub async fn devices(
        &self,
        query: &crate::store::DeviceQuery,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        self.devices.list_devices(query).await
    }

    /// The setup of enrollment `enrollment_id`, if it has one.
    pub async fn setup_of(&self, enrollment_id: &str) -> Result<Option<SetupRecord>, StoreError> {
        self.devices.setup(enrollment_id).await
    }

    /// A setup flow over the given stores and services.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        devices: Arc<dyn DeviceStore>,
        teams: Arc<dyn TeamStore>,
        enrollments: Arc<dyn EnrollmentStore>,
        dep: Arc<dyn DepStore>,
        commander: Arc<Commander>,
        chain: Arc<PolicyChain>,
        outbox: Outbox,
        options: SetupOptions,
    ) -> Self {
        Self {
            devices,
            teams,
            enrollments,
            dep,
            commander,
            chain,
            profiles: None,
            outbox,
            options,
            running: tokio::sync::Mutex::new(()),
            consumer: tokio::sync::Mutex::new(()),
        }
    }

    /// Where `install_profile` steps find their profiles.
    pub fn with_profiles(mut self, profiles: Arc<dyn ProfileSource>) -> Self {
        self.profiles = Some(profiles);
        self
    }

    /// Follow the outbox until `shutdown` turns true: resume unfinished work first, then handle
    /// each new event, and, independently, each due timer (a slow `release` answer for one
    /// device does not hold up the events of others).
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        if let Err(err) = self.resume().await {
            tracing::warn!(%err, "setup flow could not resume unfinished work");
        }
        tokio::join!(
            self.follow(shutdown.clone(), false),
            self.follow(shutdown, true)
        );
    }

    /// One of `run`'s two loops: the event pass, or the timer pass.
    async fn follow(&self, mut shutdown: watch::Receiver<bool>, timers: bool) {
        let mut live = self.outbox.subscribe();
        loop {
            let result = if timers {
                self.check_due().await
            } else {
                self.pass_events().await
            };
            if let Err(err) = result {
                tracing::warn!(%err, timers, "setup flow pass failed; retrying");
            }
            tokio::select! {
                r = live.recv() => {
                    if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        break;
                    }
                }
                _ = tokio::time::sleep(self.options.poll) => {}
                _ = shutdown.changed() => break,
            }
        }
    }

    /// Handle every event after the cursor, then every due timer. Returns how many events.
    ///
    /// No lock is held while a plugin runs. Each batch of events is first *decided*: the
    /// records are read and the plugins asked for every event at once (the chain bounds how many
    /// run), without the lock. Then each event is *applied* in outbox order under the lock, its
    /// effect committed with the cursor, using only answers decided for exactly its current
    /// inputs; an event whose inputs changed since (an earlier event of the batch, or an admin)
    /// releases the lock, is decided again, and is applied then.
    pub async fn pass(&self) -> Result<usize, StoreError> {
        let handled = self.pass_events().await?;
        self.check_due().await?;
        Ok(handled)
    }

    /// The event half of [`SetupService::pass`].
    async fn pass_events(&self) -> Result<usize, StoreError> {
        let _consumer = self.consumer.lock().await;
        let mut handled = 0;
        let mut after = self.devices.cursor(CURSOR).await?;
        loop {
            let events = self.outbox.after(after, BATCH).await?;
            if events.is_empty() {
                break;
            }
            let answers = std::sync::Mutex::new(Answers::default());
            // Every event's answers at once; they finish in order of the events.
            let mut deciding: FuturesOrdered<_> = events
                .iter()
                .map(|e| self.handle(e, Mode::Decide(&answers)))
                .collect();
            let mut decided = 0;
            for (i, e) in events.iter().enumerate() {
                while decided <= i && deciding.next().await.is_some() {
                    decided += 1;
                }
                loop {
                    let one = self.running.lock().await;
                    match self.handle(e, Mode::Apply(&answers)).await {
                        Ok(()) => break,
                        Err(PassError::Store(err)) => return Err(err),
                        Err(PassError::Undecided) => drop(one),
                    }
                    // Decide this event again, on its records as they are now. The later
                    // events' decisions keep going meanwhile (they may hold the chain's slots).
                    let again = self.handle(e, Mode::Decide(&answers));
                    tokio::pin!(again);
                    loop {
                        tokio::select! {
                            r = &mut again => {
                                if let Err(PassError::Store(err)) = r {
                                    return Err(err);
                                }
                                break;
                            }
                            Some(_) = deciding.next() => decided += 1,
                        }
                    }
                }
                after = e.seq;
                handled += 1;
            }
        }
        // Events that changed nothing move the cursor here, once per pass rather than once per
        // event (most of the outbox is command traffic; re-reading them after a crash changes
        // nothing either). Events that changed something moved it with their change.
        if self.devices.cursor(CURSOR).await? < after {
            self.devices
                .apply(
                    LifecycleWrite {
                        cursor: Some((CURSOR.to_owned(), after)),
                        ..Default::default()
                    },
                    now(),
                )
                .await?;
        }
        Ok(handled)
    }

    /// The timer half of [`SetupService::pass`]: up to 100 due setups, each asked `release`
    /// without the lock, all at once, and each applied as soon as its answer is in.
    async fn check_due(&self) -> Result<usize, StoreError> {
        let due = self.devices.due_setups(now(), 100).await?;
        let n = due.len();
        let mut checks: FuturesUnordered<_> =
            due.into_iter().map(|s| self.check_due_setup(s)).collect();
        let mut failed = None;
        while let Some(r) = checks.next().await {
            if let Err(err) = r {
                failed.get_or_insert(err);
            }
        }
        failed.map_or(Ok(n), Err)
    }

    /// Ask `release` for a due setup without the lock, then apply the answer under it if the
    /// setup and its device are still what was asked about. If either changed, nothing is
    /// written: the setup is still due (or no longer needs asking), and the next round asks on
    /// the new records.
    async fn check_due_setup(&self, seen: SetupRecord) -> Result<(), StoreError> {
        let device = self.devices.device(&seen.serial_number).await?;
        let answer = match &device {
            Some(d) if seen.state == SetupState::Running => {
                Some(self.decide_release(d, &seen).await)
            }
            _ => None,
        };
        let _one = self.running.lock().await;
        if self.devices.setup(&seen.enrollment_id).await?.as_ref() != Some(&seen)
            || self.devices.device(&seen.serial_number).await? != device
        {
            return Ok(());
        }
        let mut setup = seen;
        let before = setup.steps.clone();
        let (mut events, retry) = self.queue_steps(&mut setup).await?;
        // Queuing a step changes the progress `release` was asked about: then the setup stays
        // due and the next round asks again.
        if setup.steps == before
            && let Some(answer) = answer
        {
            events.extend(self.apply_release(&mut setup, answer));
        }
        self.retry_later(&mut setup, retry);
        setup.updated_at = now();
        self.commit(LifecycleWrite {
            setups: vec![setup.clone()],
            events,
            ..Default::default()
        })
        .await?;
        self.queue_release(setup).await
    }

    /// Queue what a crash left unqueued.
    async fn resume(&self) -> Result<(), StoreError> {
        let _one = self.running.lock().await;
        for setup in self.devices.open_setups(10_000).await? {
            self.drive(setup).await?;
        }
        Ok(())
    }

    /// Handle one event: in `Decide` mode ask its plugins (and write nothing), in `Apply` mode
    /// write its effect with the cursor.
    async fn handle(&self, e: &Event, mode: Mode<'_>) -> Result<(), PassError> {
        let deciding = mode.deciding();
        let cursor = Some((CURSOR.to_owned(), e.seq));
        let id = e.enrollment_id.as_ref();
        let text = |k: &str| e.data.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let write = match (e.kind.as_str(), id) {
            (kind::ENROLL_MACHINE_INFO, _) => match text("serial_number") {
                Some(serial) => {
                    let mut d = self.device_or_new(&serial).await?;
                    d.udid = text("udid").or(d.udid);
                    d.os_version = text("os_version").or(d.os_version);
                    if d.stage == DeviceStage::Synced || d.stage == DeviceStage::CheckedOut {
                        d.stage = DeviceStage::Enrolling;
                    }
                    self.placed(d, mode).await?
                }
                None => LifecycleWrite::default(),
            },
            // Only a serial number backed by evidence (the certificate was issued for verified
            // MachineInfo) links the enrollment to a device record, its team and its steps; a
            // serial the device merely reports stays on the enrollment.
            (kind::ENROLLMENT_AUTHENTICATED, Some(id)) => match text("verified_serial_number") {
                Some(serial) => {
                    let mut d = self.device_or_new(&serial).await?;
                    d.udid = text("udid").or(d.udid);
                    d.enrollment_id = Some(id.to_string());
                    // Apple Business Manager's marketing model ("MacBook Pro 14\"") is what
                    // placement rules match; the device's own code ("Mac15,3") only fills a gap.
                    if d.model.is_empty() {
                        d.model = text("model").unwrap_or_default();
                    }
                    d.os_version = text("os_version").or(d.os_version);
                    d.stage = DeviceStage::Enrolling;
                    self.placed(d, mode).await?
                }
                None => LifecycleWrite::default(),
            },
            (kind::ENROLLMENT_COMPLETED, Some(id))
                if text("kind").as_deref() == Some("shared_ipad_user")
                    && e.data["awaiting_configuration"].as_bool() == Some(true) =>
            {
                if deciding {
                    return Ok(());
                }
                return Ok(self.user_enrolled(id, e, text("parent")).await?);
            }
            (kind::ENROLLMENT_COMPLETED, Some(id)) if text("kind").as_deref() == Some("device") => {
                let awaiting = e.data["awaiting_configuration"].as_bool() == Some(true);
                return self.enrolled(id, e, awaiting, mode).await;
            }
            (kind::COMMAND_RESULT | kind::COMMAND_NOT_NOW, Some(_)) => {
                if deciding {
                    return Ok(());
                }
                if let Some(uuid) = text("command_uuid") {
                    return Ok(self.command_answered(&uuid, e).await?);
                }
                LifecycleWrite::default()
            }
            (kind::ENROLLMENT_CHECKED_OUT, Some(_)) if deciding => return Ok(()),
            (kind::ENROLLMENT_CHECKED_OUT, Some(id)) => {
                match self.devices.device_by_enrollment(id.as_str()).await? {
                    Some(mut d) => {
                        d.stage = DeviceStage::CheckedOut;
                        d.updated_at = now();
                        let ev = event(
                            kind::DEVICE_CHECKED_OUT,
                            Some(id),
                            json!({ "serial_number": d.serial_number, "team": d.team }),
                        );
                        LifecycleWrite {
                            devices: vec![d],
                            events: vec![ev],
                            ..Default::default()
                        }
                    }
                    None => LifecycleWrite::default(),
                }
            }
            _ => LifecycleWrite::default(),
        };
        if deciding {
            return Ok(());
        }
        self.commit(LifecycleWrite { cursor, ..write }).await?;
        Ok(())
    }

    /// The `place` answer for `question`: asked now when deciding, else one decided before.
    async fn ask_place(
        &self,
        mode: Mode<'_>,
        question: PlaceQuestion,
    ) -> Result<Option<Decided<PlaceDecision>>, PassError> {
        recall_or_ask(
            mode,
            question,
            |a| &mut a.place,
            |(device, default)| async move { self.chain.place(&device, || default).await },
        )
        .await
    }

    /// The `setup-steps` answer for `question`: asked now when deciding, else one decided
    /// before.
    async fn ask_steps(
        &self,
        mode: Mode<'_>,
        question: StepsQuestion,
    ) -> Result<Decided<Vec<Step>>, PassError> {
        recall_or_ask(
            mode,
            question,
            |a| &mut a.steps,
            |(device, default)| async move { self.chain.setup_steps(&device, || default).await },
        )
        .await
    }

    async fn commit(&self, write: LifecycleWrite) -> Result<(), StoreError> {
        if write.is_empty() {
            return Ok(());
        }
        if write.devices.is_empty() && write.setups.is_empty() && write.events.is_empty() {
            // Nothing changed: `pass` moves the cursor past such events at its end.
            return Ok(());
        }
        let events = self.devices.apply(write, now()).await?;
        self.outbox.broadcast(&events);
        Ok(())
    }

    async fn device_or_new(&self, serial: &str) -> Result<DeviceRecord, StoreError> {
        Ok(match self.devices.device(serial).await? {
            Some(d) => d,
            None => DeviceRecord::new(serial, DeviceStage::Enrolling, now()),
        })
    }

    /// Ask `place` for `d` and write it with the placement event, if any.
    async fn placed(
        &self,
        mut d: DeviceRecord,
        mode: Mode<'_>,
    ) -> Result<LifecycleWrite, PassError> {
        let defaults = match &d.dep_server {
            Some(s) => self
                .dep
                .dep_server(s)
                .await?
                .map(|s| s.default_teams)
                .unwrap_or_default(),
            None => Default::default(),
        };
        let placed = match place_question(&d, &defaults) {
            Some(question) => {
                let decided = self.ask_place(mode, question).await?;
                apply_place(&mut d, decided)
            }
            None => None,
        };
        d.updated_at = now();
        Ok(LifecycleWrite {
            devices: vec![d],
            events: placed.into_iter().collect(),
            ..Default::default()
        })
    }

    /// The first `TokenUpdate` of a device channel: record it, and start the setup if the device
    /// waits in Setup Assistant.
    async fn enrolled(
        &self,
        id: &EnrollmentId,
        e: &Event,
        awaiting: bool,
        mode: Mode<'_>,
    ) -> Result<(), PassError> {
        let deciding = mode.deciding();
        let cursor = Some((CURSOR.to_owned(), e.seq));
        let mut device = match self.devices.device_by_enrollment(id.as_str()).await? {
            Some(d) => d,
            None if deciding => return Ok(()),
            None => {
                // Not linked to a device record: its Authenticate named no serial number backed
                // by evidence. The serial it reported must not pick a device record (and so a
                // team and its setup steps).
                if awaiting {
                    let reported = self
                        .enrollments
                        .enrollment(id)
                        .await?
                        .and_then(|e| e.device.serial_number);
                    tracing::warn!(
                        enrollment = %id,
                        ?reported,
                        "waiting in Setup Assistant without a verified serial number: no setup steps"
                    );
                }
                return Ok(self
                    .commit(LifecycleWrite {
                        cursor,
                        ..Default::default()
                    })
                    .await?);
            }
        };
        device.stage = DeviceStage::Enrolled;
        device.updated_at = now();
        if !awaiting {
            if deciding {
                return Ok(());
            }
            return Ok(self
                .commit(LifecycleWrite {
                    devices: vec![device],
                    cursor,
                    ..Default::default()
                })
                .await?);
        }
        if let Some(existing) = self.devices.setup(id.as_str()).await?
            && existing.started_by >= e.seq
        {
            if deciding {
                return Ok(());
            }
            // Already started by this very event (the cursor had not moved past it).
            return Ok(self.drive(existing).await?);
        }
        let team = match &device.team {
            Some(t) => self.teams.team(t).await?,
            None => None,
        };
        let defaults = team
            .as_ref()
            .and_then(|t| steps_from_json(&t.setup_steps).ok())
            .unwrap_or_default();
        let decided = self
            .ask_steps(mode, (policy_device(&device), defaults))
            .await?;
        if deciding {
            return Ok(());
        }
        let steps: Vec<SetupStep> = decided
            .decision
            .iter()
            .map(|s| SetupStep {
                id: s.id.clone(),
                required: s.required,
                action: step_to_json(s),
                command_uuid: uuid::Uuid::new_v4().to_string().to_uppercase(),
                queued: false,
                status: StepState::Pending,
                attempts: 0,
                error: None,
            })
            .collect();
        let timeout_secs = team
            .and_then(|t| t.release_timeout_secs)
            .unwrap_or(self.options.release_timeout.as_secs());
        let setup = SetupRecord {
            steps,
            timeout_secs,
            updated_at: now(),
            ..SetupRecord::new(id.as_str(), &device.serial_number, e.seq, e.at, &decided.by)
        };
        let started = event(
            kind::SETUP_STARTED,
            Some(id),
            json!({
                "serial_number": device.serial_number,
                "team": device.team,
                "by": decided.by,
                "steps": setup.steps.iter().map(|s| json!({"id": s.id, "required": s.required})).collect::<Vec<_>>(),
                "timeout_secs": timeout_secs,
            }),
        );
        self.commit(LifecycleWrite {
            devices: vec![device],
            setups: vec![setup.clone()],
            events: vec![started],
            cursor,
        })
        .await?;
        Ok(self.drive(setup).await?)
    }

    /// A Shared iPad user's first `TokenUpdate` while its session waits: nothing user-scoped can
    /// block it, so it is released with `UserConfigured` on the user channel.
    async fn user_enrolled(
        &self,
        id: &EnrollmentId,
        e: &Event,
        parent: Option<String>,
    ) -> Result<(), StoreError> {
        let cursor = Some((CURSOR.to_owned(), e.seq));
        if let Some(existing) = self.devices.setup(id.as_str()).await?
            && existing.started_by >= e.seq
        {
            return self.queue_release(existing).await;
        }
        let serial = match &parent {
            Some(p) => self
                .devices
                .device_by_enrollment(p)
                .await?
                .map(|d| d.serial_number),
            None => None,
        }
        .unwrap_or_else(|| id.to_string());
        let mut setup = SetupRecord {
            user_channel: true,
            updated_at: now(),
            ..SetupRecord::new(id.as_str(), &serial, e.seq, e.at, "default")
        };
        let released = self.mark_released(
            &mut setup,
            "default",
            "Shared iPad user session: nothing blocks it",
            id,
        );
        self.commit(LifecycleWrite {
            setups: vec![setup.clone()],
            events: vec![released],
            cursor,
            ..Default::default()
        })
        .await?;
        self.queue_release(setup).await
    }

    /// A device answered a command: if it is a setup step's, record the result and ask `release`.
    async fn command_answered(&self, uuid: &str, e: &Event) -> Result<(), StoreError> {
        let cursor = Some((CURSOR.to_owned(), e.seq));
        let Some(mut setup) = self.devices.setup_by_command(uuid).await? else {
            return Ok(());
        };
        let status = e.data["status"].as_str().unwrap_or_default().to_owned();
        let not_now = e.kind == kind::COMMAND_NOT_NOW;
        let id = EnrollmentId::new(setup.enrollment_id.clone());
        let serial = setup.serial_number.clone();
        let mut events = Vec::new();
        if let Some(step) = setup.step_mut(uuid)
            && !step.status.is_terminal()
        {
            step.attempts += 1;
            let (state, k) = match (not_now, status.as_str()) {
                (true, _) | (false, "NotNow") => (StepState::Pending, kind::SETUP_STEP_DEFERRED),
                (false, "Acknowledged") => (StepState::Succeeded, kind::SETUP_STEP_SUCCEEDED),
                _ => (StepState::Failed, kind::SETUP_STEP_FAILED),
            };
            step.status = state;
            if state == StepState::Failed {
                step.error = Some(e.data["error_chain"].clone());
            }
            events.push(event(
                k,
                Some(&id),
                json!({
                    "serial_number": serial,
                    "step": step.id,
                    "command_uuid": uuid,
                    "attempts": step.attempts,
                    "error_chain": step.error,
                }),
            ));
        }
        let mut devices = Vec::new();
        if setup.release_command.as_deref() == Some(uuid) && !not_now && status != "Acknowledged" {
            // DeviceConfigured itself failed: the device is still in Setup Assistant. Hold it,
            // so an admin sees why and can release it again.
            let reason = format!("DeviceConfigured failed: {}", e.data["error_chain"]);
            setup.state = SetupState::Held {
                reason: reason.clone(),
                by: "device".into(),
            };
            if let Some(mut d) = self.devices.device(&serial).await? {
                d.stage = DeviceStage::Enrolled;
                d.updated_at = now();
                devices.push(d);
            }
            events.push(event(
                kind::SETUP_RELEASE_FAILED,
                Some(&id),
                json!({"serial_number": serial, "command_uuid": uuid, "error_chain": e.data["error_chain"]}),
            ));
        }
        if !not_now && setup.state == SetupState::Running {
            // `release` is asked by the timer pass, without the lock.
            setup.next_check_at = Some(now());
        }
        setup.updated_at = now();
        self.commit(LifecycleWrite {
            setups: vec![setup.clone()],
            devices,
            events,
            cursor,
        })
        .await?;
        self.queue_release(setup).await
    }

    /// Queue every unqueued step and `DeviceConfigured` when decided, and make the setup due for
    /// a `release` check if it has none (the timer pass asks, without the lock). Safe to repeat:
    /// every command has its UUID fixed in the record.
    async fn drive(&self, mut setup: SetupRecord) -> Result<(), StoreError> {
        let (events, retry) = self.queue_steps(&mut setup).await?;
        if setup.state == SetupState::Running && setup.next_check_at.is_none() {
            setup.next_check_at = Some(now());
        }
        self.retry_later(&mut setup, retry);
        setup.updated_at = now();
        self.commit(LifecycleWrite {
            setups: vec![setup.clone()],
            events,
            ..Default::default()
        })
        .await?;
        self.queue_release(setup).await
    }

    /// A step that could not be built yet is tried again after `retry_after` at the latest.
    fn retry_later(&self, setup: &mut SetupRecord, retry: bool) {
        if retry && setup.state == SetupState::Running {
            let at = now() + self.options.retry_after;
            setup.next_check_at = Some(setup.next_check_at.map_or(at, |t| t.min(at)));
        }
    }

    /// Queue every unqueued step. Returns the events, and whether a step must be tried again.
    async fn queue_steps(
        &self,
        setup: &mut SetupRecord,
    ) -> Result<(Vec<NewEvent>, bool), StoreError> {
        let id = EnrollmentId::new(setup.enrollment_id.clone());
        let mut events = Vec::new();
        let mut retry = false;
        let unqueued: Vec<usize> = (0..setup.steps.len())
            .filter(|&i| !setup.steps[i].queued)
            .collect();
        let last = unqueued.last().copied();
        for i in unqueued {
            let step = &mut setup.steps[i];
            let parsed = match steps_from_json(&json!([step.action])) {
                Ok(mut s) => s.remove(0),
                Err(err) => {
                    step.queued = true;
                    step.status = StepState::Failed;
                    step.error = Some(json!(format!("stored step is unreadable: {err}")));
                    continue;
                }
            };
            let command = command_for(&parsed, &step.command_uuid, self.profiles.as_deref()).await;
            let (k, detail) = match command {
                Ok(c) => {
                    let outcome = self
                        .commander
                        .enqueue(&c, std::slice::from_ref(&id), Some(i) == last)
                        .await?;
                    let target_error = outcome.targets.first().and_then(|t| t.error.clone());
                    match target_error {
                        // Queued now, or by an earlier run that crashed before recording it.
                        None => {
                            step.queued = true;
                            step.status = StepState::Running;
                            (kind::SETUP_STEP_QUEUED, None)
                        }
                        Some(err) => {
                            step.queued = true;
                            step.status = StepState::Failed;
                            step.error = Some(json!(err.clone()));
                            (kind::SETUP_STEP_FAILED, Some(err))
                        }
                    }
                }
                Err(StepProblem::Skip(why)) => {
                    step.queued = true;
                    step.status = StepState::Skipped;
                    step.error = Some(json!(why.clone()));
                    (kind::SETUP_STEP_SKIPPED, Some(why))
                }
                Err(StepProblem::Fail(why)) => {
                    step.queued = true;
                    step.status = StepState::Failed;
                    step.error = Some(json!(why.clone()));
                    (kind::SETUP_STEP_FAILED, Some(why))
                }
                Err(StepProblem::Retry(why)) => {
                    tracing::warn!(step = %step.id, %why, "setup step postponed");
                    retry = true;
                    continue;
                }
            };
            events.push(event(
                k,
                Some(&id),
                json!({
                    "serial_number": setup.serial_number,
                    "step": step.id,
                    "command_uuid": step.command_uuid,
                    "reason": detail,
                }),
            ));
        }
        Ok((events, retry))
    }

    /// Ask `release` about a running setup and its device (no lock is held).
    async fn decide_release(&self, device: &DeviceRecord, setup: &SetupRecord) -> ReleaseAnswer {
        let elapsed = (now() - setup.started_at).whole_seconds().max(0) as u64;
        let progress = Progress {
            steps: setup
                .steps
                .iter()
                .map(|s| StepProgress {
                    id: s.id.clone(),
                    required: s.required,
                    status: match s.status {
                        StepState::Pending => StepStatus::Pending,
                        StepState::Running => StepStatus::Running,
                        StepState::Succeeded => StepStatus::Succeeded,
                        StepState::Failed => StepStatus::Failed,
                        StepState::Skipped => StepStatus::Skipped,
                    },
                    attempts: s.attempts,
                })
                .collect(),
            elapsed_secs: elapsed,
        };
        let done = setup
            .steps
            .iter()
            .all(|s| !s.required || s.status.is_terminal());
        let timeout = setup.timeout_secs;
        let mut default_reason = "";
        let decided = self
            .chain
            .release(&policy_device(device), &progress, || {
                if done {
                    default_reason = "required steps finished";
                    ReleaseDecision::Release
                } else if elapsed >= timeout {
                    default_reason = "timeout";
                    ReleaseDecision::Release
                } else {
                    ReleaseDecision::Wait(timeout - elapsed)
                }
            })
            .await;
        ReleaseAnswer {
            decided,
            default_reason,
        }
    }

    /// Apply a `release` answer to the setup it was decided for.
    fn apply_release(&self, setup: &mut SetupRecord, answer: ReleaseAnswer) -> Vec<NewEvent> {
        let ReleaseAnswer {
            decided,
            default_reason,
        } = answer;
        let id = EnrollmentId::new(setup.enrollment_id.clone());
        match decided.decision {
            ReleaseDecision::Release => {
                let reason = if default_reason.is_empty() {
                    "released by plugin".to_owned()
                } else {
                    default_reason.to_owned()
                };
                vec![self.mark_released(setup, &decided.by, &reason, &id)]
            }
            ReleaseDecision::Wait(secs) => {
                setup.next_check_at = Some(now() + Duration::from_secs(secs.max(1)));
                Vec::new()
            }
            ReleaseDecision::Hold(reason) => {
                setup.next_check_at = None;
                setup.state = SetupState::Held {
                    reason: reason.clone(),
                    by: decided.by.clone(),
                };
                vec![event(
                    kind::SETUP_HELD,
                    Some(&id),
                    json!({"serial_number": setup.serial_number, "reason": reason, "by": decided.by}),
                )]
            }
        }
    }

    fn mark_released(
        &self,
        setup: &mut SetupRecord,
        by: &str,
        reason: &str,
        id: &EnrollmentId,
    ) -> NewEvent {
        let at = now();
        setup.state = SetupState::Released {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at,
        };
        setup.next_check_at = None;
        setup.release_command = Some(uuid::Uuid::new_v4().to_string().to_uppercase());
        setup.release_queued = false;
        event(
            kind::DEVICE_RELEASED,
            Some(id),
            json!({
                "serial_number": setup.serial_number,
                "by": by,
                "reason": reason,
                "seconds_since_enrollment": (at - setup.started_at).whole_seconds(),
                "steps": setup.steps.iter().map(|s| json!({"id": s.id, "status": s.status})).collect::<Vec<_>>(),
            }),
        )
    }

    /// Queue `DeviceConfigured` if a release was decided and not yet queued.
    async fn queue_release(&self, mut setup: SetupRecord) -> Result<(), StoreError> {
        let Some(uuid) = setup.release_command.clone() else {
            return Ok(());
        };
        if setup.release_queued {
            return Ok(());
        }
        let id = EnrollmentId::new(setup.enrollment_id.clone());
        let outcome = self
            .commander
            .enqueue(&release_command(&setup, &uuid), &[id], true)
            .await?;
        if let Some(err) = outcome.targets.first().and_then(|t| t.error.clone()) {
            // For example a full queue: try again on the timer, the decision stands.
            tracing::warn!(serial = %setup.serial_number, %err, "DeviceConfigured not queued; retrying");
            setup.next_check_at = Some(now() + self.options.retry_after);
            setup.updated_at = now();
            return self
                .commit(LifecycleWrite {
                    setups: vec![setup],
                    ..Default::default()
                })
                .await;
        }
        setup.release_queued = true;
        setup.next_check_at = None;
        setup.updated_at = now();
        let mut devices = Vec::new();
        if !setup.user_channel
            && let Some(mut d) = self.devices.device(&setup.serial_number).await?
        {
            d.stage = DeviceStage::Released;
            d.updated_at = now();
            devices.push(d);
        }
        self.commit(LifecycleWrite {
            setups: vec![setup],
            devices,
            ..Default::default()
        })
        .await
    }

    /// Put a device in `team` (or in none) by hand. Plugins and defaults no longer move it.
    pub async fn set_team(
        &self,
        serial: &str,
        team: Option<String>,
    ) -> Result<DeviceRecord, SetupError> {
        let _one = self.running.lock().await;
        let mut d = self
            .devices
            .device(serial)
            .await?
            .ok_or_else(|| SetupError::UnknownDevice(serial.to_owned()))?;
        if let Some(t) = &team
            && self.teams.team(t).await?.is_none()
        {
            return Err(SetupError::UnknownTeam(t.clone()));
        }
        let previous = d.team.clone();
        d.team = team.clone();
        d.placed_by = Some(BY_ADMIN.to_owned());
        d.updated_at = now();
        let ev = event(
            kind::DEVICE_PLACED,
            None,
            json!({
                "serial_number": serial,
                "team": team,
                "previous": previous,
                "by": BY_ADMIN,
                "stage": d.stage,
            }),
        );
        self.commit(LifecycleWrite {
            devices: vec![d.clone()],
            events: vec![ev],
            ..Default::default()
        })
        .await?;
        Ok(d)
    }

    /// Release a device by hand (`POST /v1/devices/{serial}/release`): whatever its steps, and
    /// also when a plugin holds it.
    pub async fn release_now(&self, serial: &str) -> Result<SetupRecord, SetupError> {
        let _one = self.running.lock().await;
        let device = self
            .devices
            .device(serial)
            .await?
            .ok_or_else(|| SetupError::UnknownDevice(serial.to_owned()))?;
        let id = device
            .enrollment_id
            .clone()
            .filter(|_| matches!(device.stage, DeviceStage::Enrolled | DeviceStage::Released))
            .ok_or_else(|| SetupError::NotEnrolled(serial.to_owned()))?;
        let eid = EnrollmentId::new(id.clone());
        let mut setup = match self.devices.setup(&id).await? {
            Some(s) => s,
            None => SetupRecord {
                updated_at: now(),
                ..SetupRecord::new(&id, serial, 0, device.updated_at, BY_ADMIN)
            },
        };
        if !matches!(setup.state, SetupState::Released { .. }) || setup.release_queued {
            let ev = self.mark_released(&mut setup, BY_ADMIN, "released by an admin", &eid);
            self.commit(LifecycleWrite {
                setups: vec![setup.clone()],
                events: vec![ev],
                ..Default::default()
            })
            .await?;
        }
        self.queue_release(setup).await?;
        Ok(self.devices.setup(&id).await?.expect("just written"))
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
