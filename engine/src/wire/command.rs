//! MDM commands: `{CommandUUID, Command: {RequestType, ...}}` plists
//! (`docs/protocol.md#commands-and-reports`).

use plist::{Dictionary, Value};

use super::bounded_plist::{PlistLimits, decode};
use super::checkin::to_xml;

/// Why a command plist is not acceptable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The body is not a property list.
    #[error("command is not a valid property list: {0}")]
    NotPlist(String),
    /// The root is not a dictionary.
    #[error("command plist root is not a dictionary")]
    NotDictionary,
    /// `CommandUUID` missing, empty, too long or not a string.
    #[error("command plist needs a non-empty string CommandUUID of at most 255 bytes")]
    BadUuid,
    /// `Command` missing or not a dictionary.
    #[error("command plist needs a Command dictionary")]
    MissingCommand,
    /// `Command.RequestType` missing or not a string.
    #[error("command plist needs a string Command.RequestType")]
    MissingRequestType,
}

/// A command as stored and delivered: the exact bytes plus the fields Pomona indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// `CommandUUID`.
    pub uuid: String,
    /// `Command.RequestType`.
    pub request_type: String,
    /// The exact plist bytes delivered to devices.
    pub raw: Vec<u8>,
}

impl Command {
    /// Validate a raw command plist (within the default [`PlistLimits`]), keeping its bytes
    /// untouched.
    pub fn parse(raw: Vec<u8>) -> Result<Self, CommandError> {
        let value = decode(&raw, &PlistLimits::default())
            .map_err(|e| CommandError::NotPlist(e.to_string()))?;
        let dict = value.as_dictionary().ok_or(CommandError::NotDictionary)?;
        let uuid = match dict.get("CommandUUID").and_then(Value::as_string) {
            Some(u) if !u.is_empty() && u.len() <= 255 => u.to_owned(),
            _ => return Err(CommandError::BadUuid),
        };
        let command = dict
            .get("Command")
            .and_then(Value::as_dictionary)
            .ok_or(CommandError::MissingCommand)?;
        let request_type = command
            .get("RequestType")
            .and_then(Value::as_string)
            .filter(|s| !s.is_empty())
            .ok_or(CommandError::MissingRequestType)?
            .to_owned();
        Ok(Self {
            uuid,
            request_type,
            raw,
        })
    }

    /// Build a command from a request type and its parameters (XML plist).
    pub fn build(uuid: impl Into<String>, request_type: &str, parameters: Dictionary) -> Self {
        let uuid = uuid.into();
        let mut command = parameters;
        command.insert("RequestType".into(), request_type.into());
        let mut root = Dictionary::new();
        root.insert("CommandUUID".into(), uuid.clone().into());
        root.insert("Command".into(), command.into());
        Self {
            uuid,
            request_type: request_type.to_owned(),
            raw: to_xml(&root.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_round_trips() {
        let mut p = Dictionary::new();
        p.insert("Queries".into(), Value::Array(vec!["OSVersion".into()]));
        let c = Command::build("C-1", "DeviceInformation", p);
        let parsed = Command::parse(c.raw.clone()).unwrap();
        assert_eq!(parsed, c);
    }

    #[test]
    fn keeps_the_exact_bytes() {
        let raw = b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict>\n<key>CommandUUID</key><string>X</string>\n<key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict></dict></plist>".to_vec();
        let c = Command::parse(raw.clone()).unwrap();
        assert_eq!(c.raw, raw);
        assert_eq!(c.request_type, "ProfileList");
    }

    #[test]
    fn rejects_bad_commands() {
        let mut d = Dictionary::new();
        assert!(matches!(
            Command::parse(to_xml(&d.clone().into())),
            Err(CommandError::BadUuid)
        ));
        d.insert("CommandUUID".into(), "X".into());
        assert!(matches!(
            Command::parse(to_xml(&d.clone().into())),
            Err(CommandError::MissingCommand)
        ));
        d.insert("Command".into(), Dictionary::new().into());
        assert!(matches!(
            Command::parse(to_xml(&d.into())),
            Err(CommandError::MissingRequestType)
        ));
        assert!(matches!(
            Command::parse(b"nope".to_vec()),
            Err(CommandError::NotPlist(_))
        ));
    }
}
