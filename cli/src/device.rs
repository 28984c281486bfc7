//! `pomona device …`: device records, their setup, team and release, through the API.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Remote;
use super::team::{call, describe_step, encode, print_json, print_table, text};

/// `pomona device …`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List device records, ordered by serial number (one page unless `--all`).
    List {
        /// Only devices in this team (`""`: devices in no team).
        #[arg(long)]
        team: Option<String>,
        /// Only devices at this stage.
        #[arg(long, value_parser = ["synced", "enrolling", "enrolled", "released", "checked_out"])]
        stage: Option<String>,
        /// Only devices from this DEP server.
        #[arg(long)]
        dep_server: Option<String>,
        /// Start after this serial number.
        #[arg(long, value_name = "SERIAL")]
        after: Option<String>,
        /// Devices per page (at most 1,000; the API's default is 100).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: Option<u16>,
        /// Follow `next` until every page is read.
        #[arg(long)]
        all: bool,
        /// Print the API's JSON answer (with `--all`: every device in one `devices` array).
        #[arg(long)]
        json: bool,
    },
    /// Show a device joined with its DEP record, enrollment and setup.
    Show {
        /// Serial number.
        serial: String,
        /// Print the API's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Show a device's setup: its steps, their status, and how it was released.
    Setup {
        /// Serial number.
        serial: String,
        /// Print the API's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Move a device to a team (`--none`: to no team). Plugins and defaults leave it there.
    #[command(
        group(clap::ArgGroup::new("target").required(true).args(["team", "none"])),
        override_usage = "pomona device team [OPTIONS] <SERIAL> <TEAM|--none>"
    )]
    Team {
        /// Serial number.
        serial: String,
        /// Team name.
        team: Option<String>,
        /// Take the device out of its team.
        #[arg(long)]
        none: bool,
        /// Print the API's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Release a device from Setup Assistant now (queue `DeviceConfigured`).
    Release {
        /// Serial number.
        serial: String,
        /// Print the API's JSON answer.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `pomona device` command against `remote`.
pub async fn run(remote: &Remote, cmd: DeviceCommand) -> anyhow::Result<()> {
    let path = |serial: &str, rest: &str| format!("/v1/devices/{}{rest}", encode(serial));
    match cmd {
        DeviceCommand::List {
            team,
            stage,
            dep_server,
            after,
            limit,
            all,
            json,
        } => {
            let mut filters = Vec::new();
            for (k, v) in [("team", team), ("stage", stage), ("dep_server", dep_server)] {
                if let Some(v) = v {
                    filters.push(format!("{k}={}", encode(&v)));
                }
            }
            if let Some(l) = limit {
                filters.push(format!("limit={l}"));
            }
            let mut devices = Vec::new();
            let mut after = after;
            let next = loop {
                let mut query = filters.clone();
                if let Some(a) = &after {
                    query.push(format!("after={}", encode(a)));
                }
                let page = call(
                    remote,
                    Method::GET,
                    &format!("/v1/devices?{}", query.join("&")),
                    None,
                )
                .await?;
                let got = page["devices"].as_array().cloned().unwrap_or_default();
                let next = page["next"].as_str().map(str::to_owned);
                let empty = got.is_empty();
                devices.extend(got);
                match next {
                    Some(n) if all && !empty => after = Some(n),
                    _ if all => break None,
                    next => break next,
                }
            };
            if json {
                // As the API answers: `next_after` is deprecated, removed in 0.2.
                return print_json(
                    &json!({ "devices": devices, "next": next, "next_after": next }),
                );
            }
            if devices.is_empty() {
                println!("No devices.");
            } else {
                let rows = devices
                    .iter()
                    .map(|d| {
                        vec![
                            text(&d["serial_number"]),
                            text(&d["stage"]),
                            text(&d["team"]),
                            text(&d["placed_by"]),
                            text(&d["dep_server"]),
                            text(&d["model"]),
                            os_line(d),
                            text(&d["updated_at"]),
                        ]
                    })
                    .collect::<Vec<_>>();
                print_table(
                    &[
                        "SERIAL",
                        "STAGE",
                        "TEAM",
                        "PLACED BY",
                        "DEP SERVER",
                        "MODEL",
                        "OS",
                        "UPDATED",
                    ],
                    &rows,
                );
            }
            if let Some(n) = next {
                eprintln!("More devices may follow: pass --after {n}, or --all.");
            }
            Ok(())
        }
        DeviceCommand::Show { serial, json } => {
            let v = call(remote, Method::GET, &path(&serial, ""), None).await?;
            if json {
                return print_json(&v);
            }
            print_device(&v);
            Ok(())
        }
        DeviceCommand::Setup { serial, json } => {
            let v = call(remote, Method::GET, &path(&serial, "/setup"), None).await?;
            if json {
                return print_json(&v);
            }
            print_setup(&v);
            Ok(())
        }
        DeviceCommand::Team {
            serial,
            team,
            none,
            json,
        } => {
            let team = if none { None } else { team };
            let v = call(
                remote,
                Method::PUT,
                &path(&serial, "/team"),
                Some(json!({ "team": team })),
            )
            .await?;
            if json {
                return print_json(&v);
            }
            match &team {
                Some(t) => println!("Moved {serial} to team {t:?}."),
                None => println!("Took {serial} out of its team."),
            }
            if let Some(p) = v["reassigned_profile"].as_str() {
                println!("Assigned its new team's DEP enrollment profile {p:?}.");
            }
            Ok(())
        }
        DeviceCommand::Release { serial, json } => {
            let v = call(remote, Method::POST, &path(&serial, "/release"), None).await?;
            if json {
                return print_json(&v);
            }
            println!(
                "Released {serial}: DeviceConfigured {} ({}).",
                text(&v["release_command"]),
                if v["release_queued"] == Value::Bool(true) {
                    "queued"
                } else {
                    "not queued yet"
                }
            );
            Ok(())
        }
    }
}

fn os_line(d: &Value) -> String {
    let os = [text(&d["os"]), text(&d["os_version"])]
        .into_iter()
        .filter(|s| s != "-")
        .collect::<Vec<_>>();
    if os.is_empty() {
        "-".into()
    } else {
        os.join(" ")
    }
}

fn state_line(s: &Value) -> String {
    match s["state"].as_str() {
        Some("released") => format!(
            "released by {} at {}: {}",
            text(&s["by"]),
            text(&s["at"]),
            text(&s["reason"])
        ),
        Some("held") => format!("held by {}: {}", text(&s["by"]), text(&s["reason"])),
        _ => match s["next_check_at"].as_str() {
            Some(at) => format!("running (next release check {at})"),
            None => "running".into(),
        },
    }
}

fn print_device(v: &Value) {
    let d = &v["device"];
    println!("Serial number: {}", text(&d["serial_number"]));
    println!("Stage:         {}", text(&d["stage"]));
    println!(
        "Team:          {}{}",
        text(&d["team"]),
        match d["placed_by"].as_str() {
            Some(by) => format!(" (placed by {by})"),
            None => String::new(),
        }
    );
    println!("Platform:      {}", text(&v["platform"]));
    println!("Model:         {}", text(&d["model"]));
    println!("OS:            {}", os_line(d));
    println!("UDID:          {}", text(&d["udid"]));
    println!(
        "DEP:           {}",
        match v["dep"].as_object() {
            Some(dep) => format!(
                "server {}, profile {} ({}), profile status {}",
                text(&dep["server"]),
                text(&dep["assigned_profile"]),
                text(&dep["assign_result"]),
                text(&dep["profile_status"]),
            ),
            None => "-".into(),
        }
    );
    let e = &v["enrollment"];
    println!(
        "Enrollment:    {}",
        if e.is_object() {
            let mut flags = vec![if e["enabled"] == Value::Bool(true) {
                "enabled"
            } else {
                "disabled"
            }];
            if e["awaiting_configuration"] == Value::Bool(true) {
                flags.push("awaiting configuration");
            }
            format!("{} ({})", text(&e["id"]), flags.join(", "))
        } else {
            "-".into()
        }
    );
    let s = &v["setup"];
    println!(
        "Setup:         {}",
        if s.is_object() {
            let steps = s["steps"].as_array().map_or(0, Vec::len);
            format!("{}; {steps} step(s)", state_line(s))
        } else {
            "-".into()
        }
    );
    println!("Created:       {}", text(&d["created_at"]));
    println!("Updated:       {}", text(&d["updated_at"]));
}

fn print_setup(s: &Value) {
    println!("Serial number: {}", text(&s["serial_number"]));
    println!("Enrollment:    {}", text(&s["enrollment_id"]));
    println!("Started:       {}", text(&s["started_at"]));
    println!("Steps by:      {}", text(&s["steps_by"]));
    println!("Timeout:       {}s", text(&s["timeout_secs"]));
    println!("State:         {}", state_line(s));
    println!(
        "Release:       {}",
        match s["release_command"].as_str() {
            Some(uuid) if s["release_queued"] == Value::Bool(true) => {
                format!("DeviceConfigured {uuid} (queued)")
            }
            Some(uuid) => format!("DeviceConfigured {uuid} (not queued yet)"),
            None => "-".into(),
        }
    );
    let steps = s["steps"].as_array().cloned().unwrap_or_default();
    if steps.is_empty() {
        println!("Steps:         none");
        return;
    }
    println!("Steps:");
    let rows = steps
        .iter()
        .map(|st| {
            vec![
                format!("  {}", text(&st["id"])),
                if st["required"] == Value::Bool(false) {
                    "optional".into()
                } else {
                    "required".into()
                },
                text(&st["status"]),
                text(&st["attempts"]),
                describe_step(&st["action"]),
                text(&st["error"]),
            ]
        })
        .collect::<Vec<_>>();
    print_table(
        &["  ID", "REQUIRED", "STATUS", "ATTEMPTS", "ACTION", "ERROR"],
        &rows,
    );
}
