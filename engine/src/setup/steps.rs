//! Setup steps → MDM commands.

use async_trait::async_trait;

use crate::policy::{Step, StepAction};
use crate::wire::command::Command;
use crate::wire::config_profile::install_profile_command;
use crate::wire::setup as cmd;

/// A profile as a setup step needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryProfile {
    /// The exact bytes to send as `InstallProfile`'s `Payload`.
    pub bytes: Vec<u8>,
    /// `PayloadScope = User`: it cannot install while Setup Assistant waits, so it never blocks
    /// release.
    pub user_scoped: bool,
}

/// Where `install_profile` steps find their profiles: the engine's profile library.
#[async_trait]
pub trait ProfileSource: Send + Sync {
    /// The library profile `name`, or `None` if there is none by that name.
    async fn library_profile(&self, name: &str) -> Result<Option<LibraryProfile>, String>;
}

#[async_trait]
impl ProfileSource for crate::profiles::ProfileLibrary {
    async fn library_profile(&self, name: &str) -> Result<Option<LibraryProfile>, String> {
        Ok(self
            .get(name)
            .await
            .map_err(|e| e.to_string())?
            .map(|p| LibraryProfile {
                user_scoped: p.meta.profile.user_scoped,
                bytes: p.bytes,
            }))
    }
}

/// Why a step has no command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepProblem {
    /// The step cannot apply here (for example its profile is not in the library): skipped.
    Skip(String),
    /// The step is wrong (for example raw parameters that are not a property list): failed.
    Fail(String),
    /// Something outside the step failed (storage): try again later.
    Retry(String),
}

/// The command for one step, with the UUID recorded for it.
pub async fn command_for(
    step: &Step,
    uuid: &str,
    profiles: Option<&dyn ProfileSource>,
) -> Result<Command, StepProblem> {
    Ok(match &step.action {
        StepAction::Account(a) => {
            cmd::account_configuration(uuid, &a.username, &a.full_name, a.lock, a.admin)
        }
        StepAction::InstallPackage(p) => {
            cmd::install_enterprise_application(uuid, &p.url, p.manifest_url.as_deref())
        }
        StepAction::Command(c) => cmd::raw_command(uuid, &c.request_type, &c.parameters)
            .map_err(|e| StepProblem::Fail(format!("command parameters: {e}")))?,
        StepAction::InstallProfile(name) => {
            let Some(profiles) = profiles else {
                return Err(StepProblem::Skip(
                    "this engine has no profile library".into(),
                ));
            };
            match profiles.library_profile(name).await {
                Ok(Some(p)) if p.user_scoped => {
                    // Devices refuse user-scoped profiles while Setup Assistant waits.
                    return Err(StepProblem::Skip(format!(
                        "profile {name:?} is user-scoped (PayloadScope User): it installs after setup, not during it"
                    )));
                }
                Ok(Some(p)) => install_profile_command(uuid, &p.bytes),
                Ok(None) => {
                    return Err(StepProblem::Skip(format!(
                        "no profile named {name:?} in the library"
                    )));
                }
                // A storage failure is not the step's fault: leave it for the next attempt.
                Err(e) => return Err(StepProblem::Retry(format!("profile library: {e}"))),
            }
        }
    })
}
