//! The MDM commands of the setup experience (`docs/protocol.md#setup-assistant-and-release`),
//! built from their parts.

use plist::{Dictionary, Value};

use super::command::Command;
use super::plist_json::{PlistJsonError, json_to_plist};

/// `AccountConfiguration`: create (and optionally lock) the primary local account on a Mac that
/// waits in Setup Assistant.
pub fn account_configuration(
    uuid: &str,
    username: &str,
    full_name: &str,
    lock: bool,
    admin: bool,
) -> Command {
    let mut p = Dictionary::new();
    p.insert("PrimaryAccountUserName".into(), username.into());
    p.insert(
        "PrimaryAccountFullName".into(),
        if full_name.is_empty() {
            username
        } else {
            full_name
        }
        .into(),
    );
    p.insert("LockPrimaryAccountInfo".into(), lock.into());
    p.insert(
        "SetPrimarySetupAccountAsRegularUser".into(),
        (!admin).into(),
    );
    p.insert("DontAutoPopulatePrimaryAccountInfo".into(), false.into());
    Command::build(uuid, "AccountConfiguration", p)
}

/// `InstallEnterpriseApplication`: a signed distribution package, by its manifest URL, or by a
/// manifest the engine writes around the package URL.
pub fn install_enterprise_application(
    uuid: &str,
    url: &str,
    manifest_url: Option<&str>,
) -> Command {
    let mut p = Dictionary::new();
    match manifest_url {
        Some(m) => {
            p.insert("ManifestURL".into(), m.into());
        }
        None => {
            let mut asset = Dictionary::new();
            asset.insert("kind".into(), "software-package".into());
            asset.insert("url".into(), url.into());
            let mut item = Dictionary::new();
            item.insert("assets".into(), Value::Array(vec![asset.into()]));
            let mut manifest = Dictionary::new();
            manifest.insert("items".into(), Value::Array(vec![item.into()]));
            p.insert("Manifest".into(), manifest.into());
        }
    }
    Command::build(uuid, "InstallEnterpriseApplication", p)
}

/// A raw command: `request_type` with `parameters` (a JSON object, see [`json_to_plist`]).
pub fn raw_command(
    uuid: &str,
    request_type: &str,
    parameters: &serde_json::Value,
) -> Result<Command, PlistJsonError> {
    let p = match json_to_plist(parameters)? {
        Value::Dictionary(d) => d,
        // Only an empty Lua table (an empty JSON array) gets here otherwise:
        // `Decision::from_json` refuses other parameters. No parameters.
        _ => Dictionary::new(),
    };
    Ok(Command::build(uuid, request_type, p))
}

/// `DeviceConfigured`: release the device from Setup Assistant.
pub fn device_configured(uuid: &str) -> Command {
    Command::build(uuid, "DeviceConfigured", Dictionary::new())
}

/// `UserConfigured`: release a Shared iPad user's session setup (sent on the user channel).
pub fn user_configured(uuid: &str) -> Command {
    Command::build(uuid, "UserConfigured", Dictionary::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_dict(c: &Command) -> Dictionary {
        let v = Value::from_reader(std::io::Cursor::new(&c.raw)).unwrap();
        v.as_dictionary().unwrap()["Command"]
            .as_dictionary()
            .unwrap()
            .clone()
    }

    #[test]
    fn account_configuration_fields() {
        let c = account_configuration("u1", "ada", "", true, false);
        assert_eq!(c.request_type, "AccountConfiguration");
        let d = command_dict(&c);
        assert_eq!(d["PrimaryAccountUserName"].as_string(), Some("ada"));
        assert_eq!(d["PrimaryAccountFullName"].as_string(), Some("ada"));
        assert_eq!(d["LockPrimaryAccountInfo"].as_boolean(), Some(true));
        assert_eq!(
            d["SetPrimarySetupAccountAsRegularUser"].as_boolean(),
            Some(true)
        );
        let admin = command_dict(&account_configuration("u2", "root", "Root", false, true));
        assert_eq!(
            admin["SetPrimarySetupAccountAsRegularUser"].as_boolean(),
            Some(false)
        );
        assert_eq!(admin["PrimaryAccountFullName"].as_string(), Some("Root"));
    }

    #[test]
    fn packages_by_manifest_url_or_written_manifest() {
        let d = command_dict(&install_enterprise_application(
            "u",
            "https://x/a.pkg",
            Some("https://x/a.plist"),
        ));
        assert_eq!(d["ManifestURL"].as_string(), Some("https://x/a.plist"));
        let d = command_dict(&install_enterprise_application(
            "u",
            "https://x/a.pkg",
            None,
        ));
        let item = &d["Manifest"].as_dictionary().unwrap()["items"]
            .as_array()
            .unwrap()[0];
        let asset = &item.as_dictionary().unwrap()["assets"].as_array().unwrap()[0];
        assert_eq!(
            asset.as_dictionary().unwrap()["url"].as_string(),
            Some("https://x/a.pkg")
        );
    }

    #[test]
    fn raw_commands_and_release() {
        let c = raw_command(
            "u",
            "Settings",
            &serde_json::json!({"Settings": [{"Item": "DeviceName", "DeviceName": "Lab 1"}]}),
        )
        .unwrap();
        let d = command_dict(&c);
        assert_eq!(c.request_type, "Settings");
        assert!(d["Settings"].as_array().is_some());
        assert!(raw_command("u", "X", &serde_json::json!({"a": null})).is_err());
        assert_eq!(device_configured("r").request_type, "DeviceConfigured");
        assert_eq!(user_configured("r").request_type, "UserConfigured");
    }
}
