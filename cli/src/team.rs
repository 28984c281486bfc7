//! `pomona team …`: teams (enrollment profile per platform, setup steps, release timeout),
//! through the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Remote;

/// `pomona team …`
#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// List teams.
    List {
        /// Print the API's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Show a team: its enrollment profiles, setup steps and release timeout.
    Show {
        /// Team name.
        name: String,
        /// Print the API's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a team. The settings replace the whole team: what is not given is reset.
    Put {
        /// Team name (1-64 characters, no '/' or control characters).
        name: String,
        /// DEP enrollment profile template per platform, e.g. `macos=mac-eng` (repeatable;
        /// platforms: macos, ios, ipados, tvos).
        #[arg(long = "profile", value_name = "PLATFORM=DEP_PROFILE", value_parser = parse_profile)]
        profiles: Vec<(String, String)>,
        /// JSON file with the setup steps: an array in the Lua shape, e.g.
        /// `[{"id": "wifi", "install_profile": "office-wifi"}]`.
        #[arg(long, value_name = "FILE.json")]
        steps: Option<PathBuf>,
        /// Seconds after enrollment when a device is released even if its required steps have
        /// not all finished (default: the engine's).
        #[arg(long, value_name = "SECS")]
        release_timeout: Option<u64>,
        /// JSON file with the whole body instead:
        /// `{"enrollment_profiles", "setup_steps", "release_timeout_secs"}`.
        #[arg(long, value_name = "team.json", conflicts_with_all = ["profiles", "steps", "release_timeout"])]
        file: Option<PathBuf>,
        /// Print the API's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Delete a team (its devices keep the name until they are placed again).
    Delete {
        /// Team name.
        name: String,
    },
}

fn parse_profile(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected PLATFORM=DEP_PROFILE".to_owned())
}

/// Run a `pomona team` command against `remote`.
pub async fn run(remote: &Remote, cmd: TeamCommand) -> anyhow::Result<()> {
    match cmd {
        TeamCommand::List { json } => {
            let v = call(remote, Method::GET, "/v1/teams", None).await?;
            if json {
                return print_json(&v);
            }
            let teams = v["teams"].as_array().cloned().unwrap_or_default();
            if teams.is_empty() {
                println!("No teams.");
                return Ok(());
            }
            let rows = teams
                .iter()
                .map(|t| {
                    vec![
                        text(&t["name"]),
                        profiles_line(&t["enrollment_profiles"]),
                        t["setup_steps"].as_array().map_or(0, Vec::len).to_string(),
                        timeout_line(&t["release_timeout_secs"]),
                        text(&t["updated_at"]),
                    ]
                })
                .collect::<Vec<_>>();
            print_table(
                &["NAME", "PROFILES", "STEPS", "RELEASE TIMEOUT", "UPDATED"],
                &rows,
            );
            Ok(())
        }
        TeamCommand::Show { name, json } => {
            let v = call(remote, Method::GET, &team_path(&name), None).await?;
            if json {
                return print_json(&v);
            }
            print_team(&v);
            Ok(())
        }
        TeamCommand::Put {
            name,
            profiles,
            steps,
            release_timeout,
            file,
            json,
        } => {
            let body = match file {
                Some(file) => read_json(&file)?,
                None => {
                    let mut by_platform = BTreeMap::new();
                    for (platform, profile) in profiles {
                        if by_platform.insert(platform.clone(), profile).is_some() {
                            anyhow::bail!("--profile {platform}=… is given twice");
                        }
                    }
                    let mut body = json!({ "enrollment_profiles": by_platform });
                    if let Some(file) = steps {
                        let steps = read_json(&file)?;
                        anyhow::ensure!(
                            steps.is_array(),
                            "{}: expected a JSON array of setup steps",
                            file.display()
                        );
                        body["setup_steps"] = steps;
                    }
                    if let Some(secs) = release_timeout {
                        body["release_timeout_secs"] = json!(secs);
                    }
                    body
                }
            };
            let v = call(remote, Method::PUT, &team_path(&name), Some(body)).await?;
            if json {
                return print_json(&v);
            }
            println!("Saved team {:?}.", text(&v["name"]));
            print_team(&v);
            Ok(())
        }
        TeamCommand::Delete { name } => {
            call(remote, Method::DELETE, &team_path(&name), None).await?;
            println!("Deleted team {name:?}.");
            Ok(())
        }
    }
}

fn team_path(name: &str) -> String {
    format!("/v1/teams/{}", encode(name))
}

/// Percent-encode one path segment or query value.
pub(super) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Call the admin API with an optional JSON body and return its JSON answer (`null` for an empty
/// one). A non-2xx answer is an error carrying the API's `error` message and the status.
pub(super) async fn call(
    remote: &Remote,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let body = match body {
        Some(b) => Some(reqwest::Body::from(serde_json::to_vec(&b)?)),
        None => None,
    };
    let bytes = remote
        .send(method, path, body, Some("application/json"))
        .await?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).with_context(|| format!("{path} did not answer JSON"))
}

/// Print a JSON value, pretty.
pub(super) fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A JSON string as text, `-` for null, other values as JSON.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Print rows under a header, each column as wide as its widest cell.
pub(super) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// One setup step (Lua shape) in words: `install_profile office-wifi`, `account ada`, …
pub(super) fn describe_step(step: &Value) -> String {
    if let Some(p) = step.get("install_profile") {
        format!("install_profile {}", text(p))
    } else if let Some(p) = step.get("install_package") {
        format!("install_package {}", text(&p["url"]))
    } else if let Some(a) = step.get("account") {
        format!("account {}", text(&a["username"]))
    } else if let Some(c) = step.get("command") {
        format!("command {}", text(&c["request_type"]))
    } else {
        step.to_string()
    }
}

fn read_json(file: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", file.display()))
}

fn profiles_line(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    }
}

fn timeout_line(v: &Value) -> String {
    match v.as_u64() {
        Some(s) => format!("{s}s"),
        None => "default".into(),
    }
}

fn print_team(t: &Value) {
    println!("Team:                {}", text(&t["name"]));
    println!(
        "Enrollment profiles: {}",
        profiles_line(&t["enrollment_profiles"])
    );
    println!(
        "Release timeout:     {}",
        match t["release_timeout_secs"].as_u64() {
            Some(s) => format!("{s}s"),
            None => "the engine's default".into(),
        }
    );
    println!("Updated:             {}", text(&t["updated_at"]));
    let steps = t["setup_steps"].as_array().cloned().unwrap_or_default();
    if steps.is_empty() {
        println!("Setup steps:         none");
        return;
    }
    println!("Setup steps:");
    let rows = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                format!("  {}", i + 1),
                text(&s["id"]),
                if s["required"] == Value::Bool(false) {
                    "optional".into()
                } else {
                    "required".into()
                },
                describe_step(s),
            ]
        })
        .collect::<Vec<_>>();
    print_table(&["  #", "ID", "REQUIRED", "ACTION"], &rows);
}
