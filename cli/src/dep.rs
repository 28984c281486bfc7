//! `pomona dep …`: Apple Business Manager servers, profiles and assignments, through the API.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::client::Remote;

/// `pomona dep …`
#[derive(Debug, Subcommand)]
pub enum DepCommand {
    /// List servers.
    Servers,
    /// Create a server (then download its certificate for Apple Business Manager).
    Create {
        /// Server name.
        name: String,
    },
    /// Show a server: token state, expiry, last sync, cursor phase, last error.
    Show {
        /// Server name.
        name: String,
    },
    /// Write the certificate to upload to Apple Business Manager.
    Certificate {
        /// Server name.
        name: String,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Upload the server token (`.p7m`) downloaded from Apple Business Manager.
    Token {
        /// Server name.
        name: String,
        /// The `.p7m` file.
        file: PathBuf,
        /// Replace a token that belongs to another ABM server.
        #[arg(long)]
        force: bool,
    },
    /// Change a server's settings.
    Set {
        /// Server name.
        name: String,
        /// API base URL (empty: Apple's).
        #[arg(long)]
        base_url: Option<String>,
        /// Seconds between syncs (0: manual).
        #[arg(long)]
        sync_interval_secs: Option<u64>,
        /// Default profile template for new devices.
        #[arg(long)]
        default_profile: Option<String>,
        /// Default team per platform, e.g. `macos=Engineering` (repeatable).
        #[arg(long = "team", value_parser = parse_team)]
        teams: Vec<(String, String)>,
    },
    /// Sync now (`--full`: refetch everything).
    Sync {
        /// Server name.
        name: String,
        /// Full fetch instead of changes.
        #[arg(long)]
        full: bool,
    },
    /// List devices.
    Devices {
        /// Only this server.
        #[arg(long)]
        server: Option<String>,
        /// Only this serial.
        #[arg(long)]
        serial: Option<String>,
        /// Only this assignment result (SUCCESS, FAILED, NOT_ACCESSIBLE, THROTTLED, pending).
        #[arg(long)]
        result: Option<String>,
    },
    /// Create or replace a profile template from a JSON file with Apple's keys.
    Profile {
        /// Template name.
        name: String,
        /// JSON file.
        file: PathBuf,
    },
    /// List profile templates.
    Profiles,
    /// Assign a profile to serials.
    Assign {
        /// Server name.
        name: String,
        /// Profile template.
        #[arg(long)]
        profile: String,
        /// Serial numbers.
        #[arg(required = true)]
        serials: Vec<String>,
    },
}

fn parse_team(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected PLATFORM=TEAM".to_owned())
}

/// Run a `pomona dep` command against `remote`.
pub async fn run(remote: &Remote, cmd: DepCommand) -> anyhow::Result<()> {
    let q = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    match cmd {
        DepCommand::Servers => remote.json(Method::GET, "/v1/dep/servers", None).await,
        DepCommand::Create { name } => {
            remote
                .json(Method::POST, "/v1/dep/servers", Some(json!({"name": name})))
                .await
        }
        DepCommand::Show { name } => {
            remote
                .json(Method::GET, &format!("/v1/dep/servers/{}", q(&name)), None)
                .await
        }
        DepCommand::Certificate { name, out } => {
            let pem = remote
                .send(
                    Method::GET,
                    &format!("/v1/dep/servers/{}/certificate", q(&name)),
                    None,
                    None,
                )
                .await?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &pem)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!(
                        "Wrote {}: upload it to your MDM server in Apple Business Manager.",
                        path.display()
                    );
                }
                None => print!("{}", String::from_utf8_lossy(&pem)),
            }
            Ok(())
        }
        DepCommand::Token { name, file, force } => {
            let body =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = format!(
                "/v1/dep/servers/{}/token{}",
                q(&name),
                if force { "?force=1" } else { "" }
            );
            let out = remote
                .send(
                    Method::PUT,
                    &path,
                    Some(body.into()),
                    Some("application/pkcs7-mime"),
                )
                .await?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
        DepCommand::Set {
            name,
            base_url,
            sync_interval_secs,
            default_profile,
            teams,
        } => {
            let mut patch = serde_json::Map::new();
            if let Some(b) = base_url {
                patch.insert("base_url".into(), json!(b));
            }
            if let Some(i) = sync_interval_secs {
                patch.insert("sync_interval_secs".into(), json!(i));
            }
            if let Some(p) = default_profile {
                patch.insert("default_profile".into(), json!(p));
            }
            if !teams.is_empty() {
                patch.insert(
                    "default_teams".into(),
                    json!(
                        teams
                            .into_iter()
                            .collect::<std::collections::BTreeMap<_, _>>()
                    ),
                );
            }
            remote
                .json(
                    Method::PATCH,
                    &format!("/v1/dep/servers/{}", q(&name)),
                    Some(patch.into()),
                )
                .await
        }
        DepCommand::Sync { name, full } => {
            let path = format!(
                "/v1/dep/servers/{}/sync{}",
                q(&name),
                if full { "?full=1" } else { "" }
            );
            remote.json(Method::POST, &path, None).await
        }
        DepCommand::Devices {
            server,
            serial,
            result,
        } => {
            let mut params = Vec::new();
            for (k, v) in [
                ("server", server),
                ("serial_number", serial),
                ("assign_result", result),
            ] {
                if let Some(v) = v {
                    params.push(format!("{k}={}", q(&v)));
                }
            }
            let path = format!("/v1/dep/devices?limit=1000&{}", params.join("&"));
            remote.json(Method::GET, &path, None).await
        }
        DepCommand::Profile { name, file } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let v: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            remote
                .json(
                    Method::PUT,
                    &format!("/v1/dep/profiles/{}", q(&name)),
                    Some(v),
                )
                .await
        }
        DepCommand::Profiles => remote.json(Method::GET, "/v1/dep/profiles", None).await,
        DepCommand::Assign {
            name,
            profile,
            serials,
        } => {
            remote
                .json(
                    Method::POST,
                    &format!("/v1/dep/servers/{}/assign", q(&name)),
                    Some(json!({"profile": profile, "serials": serials})),
                )
                .await
        }
    }
}
