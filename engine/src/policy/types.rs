//! The records a policy hook receives and the decisions it returns (`pomona:policy@0.1.0`).
//!
//! Every type has one JSON form, the *Lua shape*: the same tables a Lua plugin receives and
//! returns, and what `pomona plugin test` prints. [`Decision::from_json`] and its siblings are the one
//! place where a plugin's answer is validated, whichever runtime produced it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One of the four policy hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Hook {
    /// Which enrollment profile an Apple Business Manager device gets.
    AutoAssign,
    /// Which team a device belongs to.
    Place,
    /// What the engine installs while Setup Assistant waits.
    SetupSteps,
    /// When a device leaves Setup Assistant.
    Release,
}

impl Hook {
    /// Every hook, in a stable order.
    pub const ALL: [Hook; 4] = [
        Hook::AutoAssign,
        Hook::Place,
        Hook::SetupSteps,
        Hook::Release,
    ];

    /// The WIT name (`auto-assign`, `place`, `setup-steps`, `release`).
    pub fn name(self) -> &'static str {
        match self {
            Hook::AutoAssign => "auto-assign",
            Hook::Place => "place",
            Hook::SetupSteps => "setup-steps",
            Hook::Release => "release",
        }
    }

    /// The Lua function name (`auto_assign`, `place`, `setup_steps`, `release`).
    pub fn lua_name(self) -> &'static str {
        match self {
            Hook::AutoAssign => "auto_assign",
            Hook::Place => "place",
            Hook::SetupSteps => "setup_steps",
            Hook::Release => "release",
        }
    }
}

impl std::str::FromStr for Hook {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hook::ALL
            .into_iter()
            .find(|h| h.name() == s || h.lua_name() == s)
            .ok_or_else(|| {
                format!("unknown hook {s:?}: expected auto-assign, place, setup-steps or release")
            })
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What Apple Business Manager said happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OpType {
    /// Newly added to (or moved to) this MDM server.
    Added,
    /// Changed (for example its profile status).
    Modified,
    /// Released or moved away.
    Deleted,
    /// Listed by a full fetch rather than reported as a change.
    Fetched,
}

/// Input of `auto-assign`: one device event from a DEP sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepEvent {
    /// The DEP server (token) the device belongs to.
    pub server: String,
    /// Serial number.
    pub serial_number: String,
    /// Model, e.g. `MacBook Pro 14"`.
    #[serde(default)]
    pub model: String,
    /// Apple's description, e.g. `MBP 14.2 SPG/8C/14C/16GB/512GB`.
    #[serde(default)]
    pub description: String,
    /// Color.
    #[serde(default)]
    pub color: String,
    /// `Mac`, `iPhone`, `iPad`, `AppleTV`, …
    #[serde(default)]
    pub device_family: String,
    /// `OSX`, `iOS`, `tvOS`, …
    #[serde(default)]
    pub os: String,
    /// `empty`, `assigned`, `pushed` or `removed`.
    #[serde(default)]
    pub profile_status: String,
    /// The profile Apple has assigned, if any.
    #[serde(default)]
    pub profile_uuid: Option<String>,
    /// What happened.
    pub op_type: OpType,
    /// When it happened (RFC 3339), if Apple said.
    #[serde(default)]
    pub op_date: Option<String>,
    /// Whether the engine had seen this device before.
    #[serde(default)]
    pub known: bool,
    /// The device's current team, if placed.
    #[serde(default)]
    pub team: Option<String>,
}

/// Output of `auto-assign`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AssignDecision {
    /// Assign this named enrollment profile.
    Assign(String),
    /// Leave the device alone.
    Skip,
    /// Ask again after this many seconds.
    RetryAfter(u64),
}

/// Where a device is in its life with the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// Known from Apple Business Manager only.
    Synced,
    /// Enrolling (MachineInfo or Authenticate seen).
    Enrolling,
    /// Enrolled.
    Enrolled,
}

/// The person using a device, when the engine knows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserIdentity {
    /// Short user name.
    pub username: String,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Identity-provider groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Input of `place`, `setup-steps` and `release`: what the engine knows of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Serial number.
    pub serial_number: String,
    /// UDID, once the device has enrolled or sent MachineInfo.
    #[serde(default)]
    pub udid: Option<String>,
    /// Model.
    #[serde(default)]
    pub model: String,
    /// `Mac`, `iPhone`, `iPad`, …
    #[serde(default)]
    pub device_family: String,
    /// `OSX`, `iOS`, …
    #[serde(default)]
    pub os: String,
    /// OS version, e.g. `15.1`, when known.
    #[serde(default)]
    pub os_version: Option<String>,
    /// The DEP server the device came from, if any.
    #[serde(default)]
    pub dep_server: Option<String>,
    /// Life stage.
    pub stage: Stage,
    /// Current team, if placed.
    #[serde(default)]
    pub team: Option<String>,
    /// The user, if known.
    #[serde(default)]
    pub user: Option<UserIdentity>,
}

/// Output of `place`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlaceDecision {
    /// Put the device in this team.
    Team(String),
    /// The device belongs to no team.
    NoTeam,
}

/// A local account to create during Setup Assistant (`AccountConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStep {
    /// Short name.
    pub username: String,
    /// Full name.
    #[serde(default)]
    pub full_name: String,
    /// Lock the primary account's name and picture.
    #[serde(default)]
    pub lock: bool,
    /// Make it an administrator (else standard).
    #[serde(default)]
    pub admin: bool,
}

/// A package to install (`InstallEnterpriseApplication`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageStep {
    /// The package URL.
    pub url: String,
    /// The manifest URL, when the package has one; else the engine describes `url` itself.
    #[serde(default)]
    pub manifest_url: Option<String>,
}

/// A raw MDM command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandStep {
    /// `RequestType`, e.g. `Settings`.
    pub request_type: String,
    /// The command's other keys (a JSON object, converted to plist).
    #[serde(default = "empty_object")]
    pub parameters: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// What one setup step does.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StepAction {
    /// Install a named profile from the profile library.
    InstallProfile(String),
    /// Install a package.
    InstallPackage(PackageStep),
    /// Create a local account.
    Account(AccountStep),
    /// Send a raw command.
    Command(CommandStep),
}

/// One setup step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Stable id, unique within the list.
    pub id: String,
    /// Whether release waits for it (default `true`).
    pub required: bool,
    /// What to do.
    pub action: StepAction,
}

/// How a setup step is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// Not yet sent, or NotNow.
    Pending,
    /// Sent, no result yet.
    Running,
    /// Acknowledged.
    Succeeded,
    /// Error or CommandFormatError.
    Failed,
    /// Not applicable.
    Skipped,
}

/// One step's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProgress {
    /// The step id.
    pub id: String,
    /// Whether release waits for it.
    #[serde(default = "yes")]
    pub required: bool,
    /// Status.
    pub status: StepStatus,
    /// Times the step was sent.
    #[serde(default)]
    pub attempts: u32,
}

fn yes() -> bool {
    true
}

/// Input of `release` (with the device): setup progress.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Each step.
    #[serde(default)]
    pub steps: Vec<StepProgress>,
    /// Seconds since the device enrolled.
    #[serde(default)]
    pub elapsed_secs: u64,
}

/// Output of `release`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseDecision {
    /// Send `DeviceConfigured` now.
    Release,
    /// Ask again after this many seconds.
    Wait(u64),
    /// Keep the device in Setup Assistant until an admin releases it.
    Hold(String),
}

/// A hook's input, for runtimes that dispatch by [`Hook`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HookInput {
    /// `auto-assign`.
    AutoAssign(DepEvent),
    /// `place`.
    Place(Device),
    /// `setup-steps`.
    SetupSteps(Device),
    /// `release`.
    Release(Device, Progress),
}

impl HookInput {
    /// Which hook this input is for.
    pub fn hook(&self) -> Hook {
        match self {
            HookInput::AutoAssign(_) => Hook::AutoAssign,
            HookInput::Place(_) => Hook::Place,
            HookInput::SetupSteps(_) => Hook::SetupSteps,
            HookInput::Release(..) => Hook::Release,
        }
    }

    /// Parse one fixture record for `hook` (for `release`: `{"device": .., "progress": ..}`).
    pub fn from_fixture(hook: Hook, record: Value) -> Result<Self, String> {
        let err = |e: serde_json::Error| format!("not a {hook} input: {e}");
        Ok(match hook {
            Hook::AutoAssign => HookInput::AutoAssign(serde_json::from_value(record).map_err(err)?),
            Hook::Place => HookInput::Place(serde_json::from_value(record).map_err(err)?),
            Hook::SetupSteps => HookInput::SetupSteps(serde_json::from_value(record).map_err(err)?),
            Hook::Release => {
                #[derive(Deserialize)]
                struct R {
                    device: Device,
                    #[serde(default)]
                    progress: Progress,
                }
                let r: R = serde_json::from_value(record).map_err(err)?;
                HookInput::Release(r.device, r.progress)
            }
        })
    }
}

/// A hook's definite answer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Decision {
    /// From `auto-assign`.
    Assign(AssignDecision),
    /// From `place`.
    Place(PlaceDecision),
    /// From `setup-steps`.
    Steps(Vec<Step>),
    /// From `release`.
    Release(ReleaseDecision),
}

impl Decision {
    /// The Lua-shape JSON of this decision.
    pub fn to_json(&self) -> Value {
        match self {
            Decision::Assign(AssignDecision::Assign(p)) => json!({ "assign": p }),
            Decision::Assign(AssignDecision::Skip) => json!({ "skip": true }),
            Decision::Assign(AssignDecision::RetryAfter(s)) => json!({ "retry_after": s }),
            Decision::Place(PlaceDecision::Team(t)) => json!({ "team": t }),
            Decision::Place(PlaceDecision::NoTeam) => json!({ "no_team": true }),
            Decision::Steps(steps) => Value::Array(steps.iter().map(step_to_json).collect()),
            Decision::Release(ReleaseDecision::Release) => json!("release"),
            Decision::Release(ReleaseDecision::Wait(s)) => json!({ "wait": s }),
            Decision::Release(ReleaseDecision::Hold(r)) => json!({ "hold": r }),
        }
    }

    /// Validate a plugin's Lua-shape answer for `hook`. `null` is "no opinion" (`Ok(None)`).
    pub fn from_json(hook: Hook, v: &Value) -> Result<Option<Decision>, String> {
        if v.is_null() {
            return Ok(None);
        }
        Ok(Some(match hook {
            Hook::AutoAssign => Decision::Assign(assign_from_json(v)?),
            Hook::Place => Decision::Place(place_from_json(v)?),
            Hook::SetupSteps => Decision::Steps(steps_from_json(v)?),
            Hook::Release => Decision::Release(release_from_json(v)?),
        }))
    }
}

/// The single key of a one-key object, or an error naming what was expected.
fn only_key<'a>(v: &'a Value, expected: &str) -> Result<(&'a str, &'a Value), String> {
    match v.as_object() {
        Some(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().expect("one key");
            Ok((k.as_str(), v))
        }
        _ => Err(format!("expected {expected}, got {}", short(v))),
    }
}

/// A value, abbreviated for an error message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}…", &s[..s.floor_char_boundary(80)])
    } else {
        s
    }
}

fn non_empty_str(v: &Value, what: &str) -> Result<String, String> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(format!(
            "{what} must be a non-empty string, got {}",
            short(v)
        )),
    }
}

fn seconds(v: &Value, what: &str) -> Result<u64, String> {
    // Lua numbers may arrive as floats (`60.0`); accept whole non-negative values only.
    match (v.as_u64(), v.as_f64()) {
        (Some(n), _) => Ok(n),
        (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(f as u64),
        _ => Err(format!(
            "{what} must be a whole number of seconds, got {}",
            short(v)
        )),
    }
}

fn is_true(v: &Value, what: &str) -> Result<(), String> {
    match v {
        Value::Bool(true) => Ok(()),
        _ => Err(format!("{what} must be true, got {}", short(v))),
    }
}

fn assign_from_json(v: &Value) -> Result<AssignDecision, String> {
    const EXPECTED: &str = r#"{"assign": "profile"}, {"skip": true} or {"retry_after": seconds}"#;
    match only_key(v, EXPECTED)? {
        ("assign", p) => Ok(AssignDecision::Assign(non_empty_str(p, "assign")?)),
        ("skip", s) => is_true(s, "skip").map(|_| AssignDecision::Skip),
        ("retry_after", s) => Ok(AssignDecision::RetryAfter(seconds(s, "retry_after")?)),
        (k, _) => Err(format!(
            "unknown auto-assign decision {k:?}: expected {EXPECTED}"
        )),
    }
}

fn place_from_json(v: &Value) -> Result<PlaceDecision, String> {
    const EXPECTED: &str = r#"{"team": "name"} or {"no_team": true}"#;
    match only_key(v, EXPECTED)? {
        ("team", t) => Ok(PlaceDecision::Team(non_empty_str(t, "team")?)),
        ("no_team", s) => is_true(s, "no_team").map(|_| PlaceDecision::NoTeam),
        (k, _) => Err(format!("unknown place decision {k:?}: expected {EXPECTED}")),
    }
}

fn release_from_json(v: &Value) -> Result<ReleaseDecision, String> {
    const EXPECTED: &str = r#""release", {"wait": seconds} or {"hold": "reason"}"#;
    if v.as_str() == Some("release") {
        return Ok(ReleaseDecision::Release);
    }
    match only_key(v, EXPECTED)? {
        ("wait", s) => Ok(ReleaseDecision::Wait(seconds(s, "wait")?)),
        ("hold", r) => Ok(ReleaseDecision::Hold(non_empty_str(r, "hold")?)),
        ("release", r) => is_true(r, "release").map(|_| ReleaseDecision::Release),
        (k, _) => Err(format!(
            "unknown release decision {k:?}: expected {EXPECTED}"
        )),
    }
}

/// Setup steps from their Lua shape. An empty Lua table arrives as `{}` or `[]`: both are "no steps".
pub fn steps_from_json(v: &Value) -> Result<Vec<Step>, String> {
    let items = match v {
        Value::Array(a) => a.as_slice(),
        Value::Object(m) if m.is_empty() => &[],
        _ => {
            return Err(format!(
                "setup-steps must return a list of steps, got {}",
                short(v)
            ));
        }
    };
    let mut steps = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let step = step_from_json(item).map_err(|e| format!("step {}: {e}", i + 1))?;
        if steps.iter().any(|s: &Step| s.id == step.id) {
            return Err(format!("step {}: duplicate id {:?}", i + 1, step.id));
        }
        steps.push(step);
    }
    Ok(steps)
}

fn step_from_json(v: &Value) -> Result<Step, String> {
    const ACTIONS: &str = "install_profile, install_package, account or command";
    let m = v
        .as_object()
        .ok_or_else(|| format!("expected a table, got {}", short(v)))?;
    let id = non_empty_str(m.get("id").unwrap_or(&Value::Null), "id")?;
    let required = match m.get("required") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("required must be a boolean, got {}", short(other))),
    };
    let mut action = None;
    for (k, val) in m {
        let a = match k.as_str() {
            "id" | "required" => continue,
            "install_profile" => StepAction::InstallProfile(non_empty_str(val, "install_profile")?),
            "install_package" => StepAction::InstallPackage(typed(val, "install_package")?),
            "account" => StepAction::Account(typed(val, "account")?),
            "command" => StepAction::Command(typed(val, "command")?),
            other => {
                return Err(format!(
                    "unknown key {other:?}: expected id, required and one of {ACTIONS}"
                ));
            }
        };
        if action.replace(a).is_some() {
            return Err(format!("more than one action: give one of {ACTIONS}"));
        }
    }
    let action = action.ok_or_else(|| format!("no action: give one of {ACTIONS}"))?;
    match &action {
        StepAction::Account(a) if a.username.is_empty() => {
            return Err("account.username is empty".into());
        }
        StepAction::InstallPackage(p) if p.url.is_empty() => {
            return Err("install_package.url is empty".into());
        }
        StepAction::Command(c) if c.request_type.is_empty() => {
            return Err("command.request_type is empty".into());
        }
        StepAction::Command(c)
            if !(c.parameters.is_object()
                || c.parameters.as_array().is_some_and(|a| a.is_empty())) =>
        {
            return Err("command.parameters must be a table of keys".into());
        }
        _ => {}
    }
    Ok(Step {
        id,
        required,
        action,
    })
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("{what}: {e}"))
}

/// One step in its Lua shape.
pub fn step_to_json(s: &Step) -> Value {
    let (key, val) = match &s.action {
        StepAction::InstallProfile(p) => ("install_profile", json!(p)),
        StepAction::InstallPackage(p) => {
            ("install_package", serde_json::to_value(p).expect("JSON"))
        }
        StepAction::Account(a) => ("account", serde_json::to_value(a).expect("JSON")),
        StepAction::Command(c) => ("command", serde_json::to_value(c).expect("JSON")),
    };
    json!({ "id": s.id, "required": s.required, key: val })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_through_the_lua_shape() {
        let cases = [
            (Hook::AutoAssign, json!({"assign": "standard"})),
            (Hook::AutoAssign, json!({"skip": true})),
            (Hook::AutoAssign, json!({"retry_after": 3600})),
            (Hook::Place, json!({"team": "Engineering"})),
            (Hook::Place, json!({"no_team": true})),
            (Hook::Release, json!("release")),
            (Hook::Release, json!({"wait": 60})),
            (Hook::Release, json!({"hold": "waiting for IT"})),
            (Hook::SetupSteps, json!([])),
            (
                Hook::SetupSteps,
                json!([
                    {"id": "wifi", "required": true, "install_profile": "wifi"},
                    {"id": "acct", "required": false, "account": {"username": "ada", "full_name": "Ada", "lock": true, "admin": false}},
                    {"id": "pkg", "required": true, "install_package": {"url": "https://x/a.pkg", "manifest_url": null}},
                    {"id": "cmd", "required": true, "command": {"request_type": "Settings", "parameters": {"Settings": []}}}
                ]),
            ),
        ];
        for (hook, v) in cases {
            let d = Decision::from_json(hook, &v).unwrap().unwrap();
            assert_eq!(d.to_json(), v, "{hook}");
        }
        assert_eq!(Decision::from_json(Hook::Place, &Value::Null), Ok(None));
    }

    #[test]
    fn lua_numbers_and_empty_tables_are_understood() {
        let d = Decision::from_json(Hook::Release, &json!({"wait": 60.0})).unwrap();
        assert_eq!(d, Some(Decision::Release(ReleaseDecision::Wait(60))));
        let d = Decision::from_json(Hook::SetupSteps, &json!({})).unwrap();
        assert_eq!(d, Some(Decision::Steps(vec![])));
        let steps = steps_from_json(&json!([{"id": "w", "install_profile": "wifi"}])).unwrap();
        assert!(steps[0].required, "required defaults to true");
    }

    #[test]
    fn malformed_answers_are_precise_errors() {
        let bad = [
            (Hook::AutoAssign, json!({"assign": ""}), "non-empty"),
            (
                Hook::AutoAssign,
                json!({"assing": "x"}),
                "unknown auto-assign decision \"assing\"",
            ),
            (
                Hook::AutoAssign,
                json!({"assign": "x", "skip": true}),
                "expected",
            ),
            (Hook::AutoAssign, json!("standard"), "expected"),
            (Hook::AutoAssign, json!({"retry_after": -1}), "whole number"),
            (
                Hook::AutoAssign,
                json!({"skip": false}),
                "skip must be true",
            ),
            (
                Hook::Place,
                json!({"team": 3}),
                "team must be a non-empty string",
            ),
            (Hook::Release, json!("now"), "expected"),
            (Hook::Release, json!({"wait": 1.5}), "whole number"),
            (Hook::SetupSteps, json!("wifi"), "list of steps"),
            (
                Hook::SetupSteps,
                json!([{"install_profile": "x"}]),
                "step 1: id",
            ),
            (Hook::SetupSteps, json!([{"id": "a"}]), "step 1: no action"),
            (
                Hook::SetupSteps,
                json!([{"id": "a", "install_profile": "x", "account": {"username": "u"}}]),
                "more than one action",
            ),
            (
                Hook::SetupSteps,
                json!([{"id": "a", "install_profile": "x"}, {"id": "a", "install_profile": "y"}]),
                "step 2: duplicate id",
            ),
            (
                Hook::SetupSteps,
                json!([{"id": "a", "account": {"full_name": "u"}}]),
                "missing field `username`",
            ),
            (
                Hook::SetupSteps,
                json!([{"id": "a", "reboot": true}]),
                "unknown key \"reboot\"",
            ),
            (
                Hook::SetupSteps,
                json!([{"id": "a", "required": "yes", "install_profile": "x"}]),
                "required must be a boolean",
            ),
        ];
        for (hook, v, want) in bad {
            let e = Decision::from_json(hook, &v).unwrap_err();
            assert!(e.contains(want), "{hook} {v}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn fixtures_parse_per_hook() {
        let e = json!({"server": "hq", "serial_number": "C02", "op_type": "added"});
        assert!(matches!(
            HookInput::from_fixture(Hook::AutoAssign, e).unwrap(),
            HookInput::AutoAssign(_)
        ));
        let r = json!({"device": {"serial_number": "C02", "stage": "enrolled"}});
        assert!(matches!(
            HookInput::from_fixture(Hook::Release, r).unwrap(),
            HookInput::Release(..)
        ));
        let bad = HookInput::from_fixture(Hook::Place, json!({"stage": "enrolled"})).unwrap_err();
        assert!(bad.contains("serial_number"), "{bad}");
        assert_eq!("setup_steps".parse::<Hook>(), Ok(Hook::SetupSteps));
        assert!("deploy".parse::<Hook>().is_err());
    }
}
