//! `pomona profile …`: the configuration-profile library, through the API.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;

use super::client::Remote;

/// `pomona profile …`
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Upload a `.mobileconfig` (XML, binary or CMS-signed) as NAME, creating or replacing it.
    Put {
        /// Library name (1-64 letters, digits, '-', '_', '.').
        name: String,
        /// The `.mobileconfig` file.
        file: PathBuf,
    },
    /// List the library (metadata only).
    List,
    /// Show a profile's metadata, or write its exact bytes with `--out`.
    Show {
        /// Library name.
        name: String,
        /// Write the `.mobileconfig` here instead of printing the metadata (`-`: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Remove a profile from the library.
    Delete {
        /// Library name.
        name: String,
    },
}

/// Run a `pomona profile` command against `remote`.
pub async fn run(remote: &Remote, cmd: ProfileCommand) -> anyhow::Result<()> {
    let path = |name: &str| {
        format!(
            "/v1/profiles/{}",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    match cmd {
        ProfileCommand::Put { name, file } => {
            let body =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let out = remote
                .send(
                    Method::PUT,
                    &path(&name),
                    Some(body.into()),
                    Some(pomona::wire::mobileconfig::CONTENT_TYPE),
                )
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&out)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        ProfileCommand::List => remote.json(Method::GET, "/v1/profiles", None).await,
        ProfileCommand::Show { name, out: None } => {
            remote.json(Method::GET, &path(&name), None).await
        }
        ProfileCommand::Show {
            name,
            out: Some(file),
        } => {
            let bytes = remote
                .send(
                    Method::GET,
                    &format!("{}?download=1", path(&name)),
                    None,
                    None,
                )
                .await?;
            if file.as_os_str() == "-" {
                use std::io::Write as _;
                std::io::stdout().write_all(&bytes)?;
            } else {
                std::fs::write(&file, &bytes)
                    .with_context(|| format!("writing {}", file.display()))?;
                eprintln!("Wrote {} ({} bytes).", file.display(), bytes.len());
            }
            Ok(())
        }
        ProfileCommand::Delete { name } => {
            remote
                .send(Method::DELETE, &path(&name), None, None)
                .await?;
            println!("Deleted profile {name:?}.");
            Ok(())
        }
    }
}
