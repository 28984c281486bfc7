//! Command reports: what a device PUTs to the `ServerURL`
//! (`docs/protocol.md#commands-and-reports`).

use plist::Value;
use serde::{Deserialize, Serialize};

use super::bounded_plist::PlistLimits;
use super::checkin::{Fields, MessageError, parse_dictionary};
use super::enrollment_id::{Channel, Identifiers};

/// The `Status` of a command report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Status {
    /// "Anything for me?" — carries no command result.
    Idle,
    /// The command succeeded.
    Acknowledged,
    /// The command failed; `ErrorChain` says why.
    Error,
    /// The command plist was malformed.
    CommandFormatError,
    /// The device cannot run the command now; it stays queued.
    NotNow,
}

impl Status {
    /// Parse the plist string.
    pub fn parse(s: &str) -> Result<Self, MessageError> {
        Ok(match s {
            "Idle" => Self::Idle,
            "Acknowledged" => Self::Acknowledged,
            "Error" => Self::Error,
            "CommandFormatError" => Self::CommandFormatError,
            "NotNow" => Self::NotNow,
            other => return Err(MessageError::UnknownStatus(other.to_owned())),
        })
    }

    /// The plist string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Acknowledged => "Acknowledged",
            Self::Error => "Error",
            Self::CommandFormatError => "CommandFormatError",
            Self::NotNow => "NotNow",
        }
    }

    /// Whether this status ends the command for the reporting enrollment.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Acknowledged | Self::Error | Self::CommandFormatError
        )
    }
}

/// One entry of a report's `ErrorChain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorChainItem {
    /// `ErrorCode`.
    pub code: Option<i64>,
    /// `ErrorDomain`.
    pub domain: Option<String>,
    /// `LocalizedDescription`.
    pub description: Option<String>,
    /// `USEnglishDescription`.
    pub us_english_description: Option<String>,
}

/// A parsed command report.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReport {
    /// The raw identifying keys.
    pub identifiers: Identifiers,
    /// The channel those keys name.
    pub channel: Channel,
    /// The report status.
    pub status: Status,
    /// The command this report is about (absent for `Idle`).
    pub command_uuid: Option<String>,
    /// Why the command failed, for `Error`.
    pub error_chain: Vec<ErrorChainItem>,
}

impl CommandReport {
    /// Parse a report body (XML or binary plist) within the default [`PlistLimits`].
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        Self::parse_with(body, &PlistLimits::default())
    }

    /// Parse a report body (XML or binary plist) within `limits`.
    pub fn parse_with(body: &[u8], limits: &PlistLimits) -> Result<Self, MessageError> {
        let dict = parse_dictionary(body, limits)?;
        let f = Fields {
            message: "command report",
            dict: &dict,
        };
        let identifiers = f.identifiers()?;
        let channel = identifiers.channel()?;
        let status = Status::parse(&f.string("Status")?)?;
        let command_uuid = match f.opt_string("CommandUUID")? {
            Some(u) if !u.is_empty() => Some(u),
            _ if status == Status::Idle => None,
            _ => {
                return Err(MessageError::MissingKey {
                    message: "command report",
                    key: "CommandUUID",
                });
            }
        };
        let error_chain = match dict.get("ErrorChain") {
            None => Vec::new(),
            Some(Value::Array(items)) => items.iter().map(error_chain_item).collect(),
            Some(_) => {
                return Err(MessageError::WrongType {
                    message: "command report",
                    key: "ErrorChain",
                    expected: "an array",
                });
            }
        };
        Ok(Self {
            identifiers,
            channel,
            status,
            command_uuid: if status == Status::Idle {
                None
            } else {
                command_uuid
            },
            error_chain,
        })
    }
}

fn error_chain_item(v: &Value) -> ErrorChainItem {
    let d = v.as_dictionary();
    let s = |k: &str| {
        d.and_then(|d| d.get(k))
            .and_then(Value::as_string)
            .map(str::to_owned)
    };
    ErrorChainItem {
        code: d
            .and_then(|d| d.get("ErrorCode"))
            .and_then(Value::as_signed_integer),
        domain: s("ErrorDomain"),
        description: s("LocalizedDescription"),
        us_english_description: s("USEnglishDescription"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checkin::to_xml;
    use plist::Dictionary;

    fn report(status: &str, uuid: Option<&str>) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("UDID".into(), "U1".into());
        d.insert("Status".into(), status.into());
        if let Some(u) = uuid {
            d.insert("CommandUUID".into(), u.into());
        }
        d
    }

    #[test]
    fn idle_needs_no_uuid() {
        let r = CommandReport::parse(&to_xml(&report("Idle", None).into())).unwrap();
        assert_eq!(r.status, Status::Idle);
        assert_eq!(r.command_uuid, None);
    }

    #[test]
    fn terminal_reports_need_a_uuid() {
        let err = CommandReport::parse(&to_xml(&report("Acknowledged", None).into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "command report: required key CommandUUID is missing"
        );
        let r = CommandReport::parse(&to_xml(&report("NotNow", Some("C1")).into())).unwrap();
        assert_eq!(r.command_uuid.as_deref(), Some("C1"));
        assert!(!r.status.is_terminal());
    }

    #[test]
    fn parses_error_chain() {
        let mut d = report("Error", Some("C1"));
        let mut item = Dictionary::new();
        item.insert("ErrorCode".into(), 12021.into());
        item.insert("ErrorDomain".into(), "MCMDMErrorDomain".into());
        item.insert("LocalizedDescription".into(), "Unknown command".into());
        d.insert("ErrorChain".into(), Value::Array(vec![item.into()]));
        let r = CommandReport::parse(&to_xml(&d.into())).unwrap();
        assert!(r.status.is_terminal());
        assert_eq!(r.error_chain[0].code, Some(12021));
        assert_eq!(r.error_chain[0].domain.as_deref(), Some("MCMDMErrorDomain"));
    }

    #[test]
    fn unknown_status_is_an_error() {
        let err = CommandReport::parse(&to_xml(&report("Maybe", Some("C")).into())).unwrap_err();
        assert!(matches!(err, MessageError::UnknownStatus(s) if s == "Maybe"));
    }
}
