//! The engine's WASM test fixture (not a plugin to deploy).
//!
//! It answers every hook, calls every host function, and misbehaves when the device's serial
//! number asks it to, so the engine's tests can check each host call and each way a guest can fail:
//!
//! | serial      | behaviour                                                                  |
//! |-------------|----------------------------------------------------------------------------|
//! | `loop`      | spins forever (fuel or the deadline must stop it)                          |
//! | `alloc`     | allocates without bound (the memory cap must stop it)                      |
//! | `recurse`   | recurses without bound (the stack limit must stop it)                      |
//! | `panic`     | panics (a trap)                                                            |
//! | `error`     | returns `Err`                                                              |
//! | `malformed` | returns a decision the engine must reject (empty names, duplicate step ids)|
//! | `escape`    | tries files, the network and the environment, and reports what happened    |
//! | `clock`     | answers with the host's clock                                              |
//! | `none`      | no opinion                                                                 |
//! | anything    | echoes its input and configuration back, so every field's mapping shows    |
//!
//! Configuration: `hooks` (comma-separated hook names to declare; default all four), `profile`,
//! `team` (the team `place` answers for ordinary serials, instead of the echo).

use pomona_sdk::{
    AccountStep, AssignDecision, CommandStep, DepEvent, Device, Hook, PackageStep, PlaceDecision,
    Plugin, Progress, ReleaseDecision, Step, StepAction, StepStatus, export_plugin, host,
};
use std::hint::black_box;

struct TestGuest;

/// Misbehave if `serial` asks for it; `Some` is the answer to give instead of the hook's own.
fn misbehave(serial: &str) -> Option<Result<(), String>> {
    match serial {
        "loop" => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Reserve without touching, so memory, not fuel, runs out first.
                hoard.push(black_box(Vec::with_capacity(1 << 20)));
            }
        }
        "recurse" => Some(Err(format!("recursion ended at {}", recurse(1)))),
        "panic" => panic!("the test guest was asked to panic"),
        "error" => Some(Err("the test guest was asked to fail".into())),
        _ => None,
    }
}

/// Recursion that keeps every frame on the wasm stack (no locals in linear memory), so the
/// engine's stack limit, not the guest's own shadow stack, is what stops it.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX || host::now() == 0 {
        return depth;
    }
    recurse(depth + 1).wrapping_sub(depth)
}

/// What happened when the guest reached for files, the network and the environment.
fn escape_report() -> String {
    let fs = match std::fs::read("/etc/passwd") {
        Ok(b) => format!("read {} bytes", b.len()),
        Err(_) => "denied".into(),
    };
    let net = match std::net::TcpStream::connect("127.0.0.1:22") {
        Ok(_) => "connected".into(),
        Err(_) => "denied".to_string(),
    };
    let env = match std::env::var("HOME") {
        Ok(v) => format!("HOME={v}"),
        Err(_) => "absent".into(),
    };
    format!("fs={fs} net={net} env={env}")
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

fn echo_device(d: &Device) -> String {
    let user = d.user.as_ref().map_or("-".to_owned(), |u| {
        format!("{}<{}>[{}]", u.username, opt(&u.email), u.groups.join(","))
    });
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}",
        d.serial_number,
        opt(&d.udid),
        d.model,
        d.device_family,
        d.os,
        opt(&d.os_version),
        opt(&d.dep_server),
        d.stage,
        opt(&d.team),
        user
    )
}

/// Call every host function once; the engine's log shows each.
fn touch_host() -> String {
    host::debug("debug line");
    host::info("info line");
    host::warn("warn line");
    host::error("error line");
    let keys = host::config_keys().join(",");
    let profile = host::config("profile").unwrap_or_else(|| "-".into());
    format!("{profile}|keys={keys}")
}

impl Plugin for TestGuest {
    fn hooks() -> Vec<Hook> {
        let Some(list) = host::config("hooks") else {
            return vec![
                Hook::AutoAssign,
                Hook::Place,
                Hook::SetupSteps,
                Hook::Release,
            ];
        };
        list.split(',')
            .filter_map(|h| match h.trim() {
                "auto-assign" => Some(Hook::AutoAssign),
                "place" => Some(Hook::Place),
                "setup-steps" => Some(Hook::SetupSteps),
                "release" => Some(Hook::Release),
                _ => None,
            })
            .collect()
    }

    fn auto_assign(e: DepEvent) -> Result<Option<AssignDecision>, String> {
        if let Some(r) = misbehave(&e.serial_number) {
            return r.map(|()| None);
        }
        Ok(Some(match e.serial_number.as_str() {
            "none" => return Ok(None),
            "malformed" => AssignDecision::Assign(String::new()),
            "escape" => AssignDecision::Assign(escape_report()),
            "clock" => AssignDecision::RetryAfter(host::now()),
            "skip" => AssignDecision::Skip,
            _ => AssignDecision::Assign(format!(
                "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}|{}",
                touch_host(),
                e.server,
                e.serial_number,
                e.model,
                e.description,
                e.color,
                e.device_family,
                e.os,
                e.profile_status,
                opt(&e.profile_uuid),
                e.op_type,
                opt(&e.op_date),
                e.known,
                opt(&e.team),
                "end"
            )),
        }))
    }

    fn place(d: Device) -> Result<Option<PlaceDecision>, String> {
        if let Some(r) = misbehave(&d.serial_number) {
            return r.map(|()| None);
        }
        Ok(Some(match d.serial_number.as_str() {
            "none" => return Ok(None),
            "malformed" => PlaceDecision::Team(String::new()),
            "escape" => PlaceDecision::Team(escape_report()),
            "clock" => PlaceDecision::Team(host::now().to_string()),
            "no-team" => PlaceDecision::NoTeam,
            _ => match host::config("team") {
                Some(team) => PlaceDecision::Team(team),
                None => PlaceDecision::Team(echo_device(&d)),
            },
        }))
    }

    fn setup_steps(d: Device) -> Result<Option<Vec<Step>>, String> {
        if let Some(r) = misbehave(&d.serial_number) {
            return r.map(|()| None);
        }
        let profile = host::config("profile").unwrap_or_else(|| "wifi".into());
        let step = |id: &str, required, action| Step {
            id: id.into(),
            required,
            action,
        };
        Ok(Some(match d.serial_number.as_str() {
            "none" => return Ok(None),
            "empty" => vec![],
            "malformed" => vec![
                step("same", true, StepAction::InstallProfile(profile.clone())),
                step("same", true, StepAction::InstallProfile(profile)),
            ],
            "bad-json" => vec![step(
                "cmd",
                true,
                StepAction::Command(CommandStep {
                    request_type: "Settings".into(),
                    parameters_json: "{not json".into(),
                }),
            )],
            _ => {
                let username = d
                    .user
                    .as_ref()
                    .map_or("admin".into(), |u| u.username.clone());
                vec![
                    step(
                        "account",
                        true,
                        StepAction::Account(AccountStep {
                            username,
                            full_name: "Test Admin".into(),
                            lock: true,
                            admin: false,
                        }),
                    ),
                    step("profile", true, StepAction::InstallProfile(profile)),
                    step(
                        "package",
                        false,
                        StepAction::InstallPackage(PackageStep {
                            url: "https://example.com/agent.pkg".into(),
                            manifest_url: Some("https://example.com/agent.plist".into()),
                        }),
                    ),
                    step(
                        "name",
                        true,
                        StepAction::Command(CommandStep {
                            request_type: "Settings".into(),
                            parameters_json: format!(
                                r#"{{"Settings":[{{"Item":"DeviceName","DeviceName":"{}"}}]}}"#,
                                d.serial_number
                            ),
                        }),
                    ),
                ]
            }
        }))
    }

    fn release(d: Device, p: Progress) -> Result<Option<ReleaseDecision>, String> {
        if let Some(r) = misbehave(&d.serial_number) {
            return r.map(|()| None);
        }
        Ok(Some(match d.serial_number.as_str() {
            "none" => return Ok(None),
            "malformed" => ReleaseDecision::Hold(String::new()),
            _ => {
                let open: Vec<&str> = p
                    .steps
                    .iter()
                    .filter(|s| {
                        s.required && matches!(s.status, StepStatus::Pending | StepStatus::Running)
                    })
                    .map(|s| s.id.as_str())
                    .collect();
                let failed = p.steps.iter().any(|s| s.status == StepStatus::Failed);
                let attempts: u32 = p.steps.iter().map(|s| s.attempts).sum();
                if failed {
                    ReleaseDecision::Hold(format!("failed after {attempts} attempts"))
                } else if open.is_empty() {
                    ReleaseDecision::Release
                } else {
                    ReleaseDecision::Wait(p.elapsed_secs + open.len() as u64)
                }
            }
        }))
    }
}

export_plugin!(TestGuest);
