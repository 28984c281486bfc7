//! `pomona push`: the push-certificate workflow.
//!
//! - `pomona push csr` makes the private key and CSR an admin takes to an MDM vendor (who signs
//!   it for Apple's Push Certificates Portal).
//! - `pomona push upload` sends the resulting certificate (with its key, or as PKCS#12) to a
//!   running engine's `PUT /v1/pushcert`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509Name, X509ReqBuilder};

/// `pomona push …`
#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Generate an RSA key and a CSR for an MDM push certificate.
    Csr {
        /// Where to write the private key (PEM, mode 0600).
        #[arg(long, default_value = "push.key")]
        key_out: PathBuf,
        /// Where to write the CSR (PEM).
        #[arg(long, default_value = "push.csr")]
        csr_out: PathBuf,
        /// Common name of the request.
        #[arg(long, default_value = "Pomona MDM push")]
        common_name: String,
        /// Organization.
        #[arg(long)]
        organization: Option<String>,
        /// Contact e-mail.
        #[arg(long)]
        email: Option<String>,
    },
    /// Upload a push certificate to a running engine.
    Upload {
        /// The engine.
        #[command(flatten)]
        remote: super::client::Remote,
        /// PEM certificate from Apple.
        #[arg(long, conflicts_with = "p12")]
        cert: Option<PathBuf>,
        /// PEM private key made by `pomona push csr`.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// PKCS#12 file instead of PEM.
        #[arg(long)]
        p12: Option<PathBuf>,
        /// PKCS#12 password.
        #[arg(long, default_value = "")]
        password: String,
    },
}

/// Run a `pomona push` command.
pub async fn run(cmd: PushCommand) -> anyhow::Result<()> {
    match cmd {
        PushCommand::Csr {
            key_out,
            csr_out,
            common_name,
            organization,
            email,
        } => {
            let key = PKey::from_rsa(Rsa::generate(2048)?)?;
            let mut name = X509Name::builder()?;
            name.append_entry_by_text("CN", &common_name)?;
            if let Some(o) = &organization {
                name.append_entry_by_text("O", o)?;
            }
            if let Some(e) = &email {
                name.append_entry_by_text("emailAddress", e)?;
            }
            let mut req = X509ReqBuilder::new()?;
            req.set_subject_name(&name.build())?;
            req.set_pubkey(&key)?;
            req.sign(&key, MessageDigest::sha256())?;
            pomona::fsutil::write_private(&key_out, &key.private_key_to_pem_pkcs8()?)
                .with_context(|| format!("writing {}", key_out.display()))?;
            std::fs::write(&csr_out, req.build().to_pem()?)
                .with_context(|| format!("writing {}", csr_out.display()))?;
            println!(
                "Wrote {} and {}.\nHave the CSR signed by your MDM vendor, upload the result to Apple's Push Certificates Portal,\nthen: pomona push upload --cert <apple.pem> --key {}",
                key_out.display(),
                csr_out.display(),
                key_out.display()
            );
            Ok(())
        }
        PushCommand::Upload {
            remote,
            cert,
            key,
            p12,
            password,
        } => {
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let (body, query) = match (&cert, &p12) {
                (Some(c), _) => {
                    let mut body = read(c)?;
                    if let Some(k) = &key {
                        body.push(b'\n');
                        body.extend(read(k)?);
                    }
                    (body, String::new())
                }
                (None, Some(p)) => (
                    read(p)?,
                    format!(
                        "?password={}",
                        percent_encoding::utf8_percent_encode(
                            &password,
                            percent_encoding::NON_ALPHANUMERIC
                        )
                    ),
                ),
                (None, None) => anyhow::bail!("give --cert (and --key) or --p12"),
            };
            let out = remote
                .send(
                    reqwest::Method::PUT,
                    &format!("/v1/pushcert{query}"),
                    Some(body.into()),
                    None,
                )
                .await?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
    }
}
