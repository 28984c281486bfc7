//! Check-in messages (`Content-Type: application/x-apple-aspen-mdm-checkin`); see
//! `docs/protocol.md#check-in-messages`.

use plist::{Dictionary, Value};

use super::bounded_plist::{self, PlistError, PlistLimits};
use super::enrollment_id::{Channel, ChannelError, Identifiers};

/// Why a check-in or report body could not be understood.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The body is not a property list.
    #[error("body is not a valid property list: {0}")]
    NotPlist(String),
    /// The property list exceeds a [`PlistLimits`] limit.
    #[error(transparent)]
    Limit(PlistError),
    /// The property list is not a dictionary.
    #[error("property list root is not a dictionary")]
    NotDictionary,
    /// A required key is missing.
    #[error("{message}: required key {key} is missing")]
    MissingKey {
        /// The message type being parsed.
        message: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// A key has the wrong plist type.
    #[error("{message}: key {key} must be {expected}")]
    WrongType {
        /// The message type being parsed.
        message: &'static str,
        /// The offending key.
        key: &'static str,
        /// The expected plist type.
        expected: &'static str,
    },
    /// `MessageType` names a message Pomona does not know.
    #[error("unknown MessageType {0:?}")]
    UnknownMessageType(String),
    /// `Status` names a status Pomona does not know.
    #[error("unknown command Status {0:?}")]
    UnknownStatus(String),
    /// The identifiers do not name a channel.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// Parse bytes as a plist dictionary (XML or binary) with the bounded decoder.
pub(crate) fn parse_dictionary(
    body: &[u8],
    limits: &PlistLimits,
) -> Result<Dictionary, MessageError> {
    match bounded_plist::decode_dictionary(body, limits) {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(_)) => Err(MessageError::NotDictionary),
        Err(PlistError::Syntax { detail, .. }) => Err(MessageError::NotPlist(detail)),
        Err(e) => Err(MessageError::Limit(e)),
    }
}

/// Typed accessors over a message dictionary that produce precise errors.
pub(crate) struct Fields<'a> {
    pub(crate) message: &'static str,
    pub(crate) dict: &'a Dictionary,
}

impl<'a> Fields<'a> {
    fn wrong(&self, key: &'static str, expected: &'static str) -> MessageError {
        MessageError::WrongType {
            message: self.message,
            key,
            expected,
        }
    }

    pub(crate) fn opt_string(&self, key: &'static str) -> Result<Option<String>, MessageError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    pub(crate) fn string(&self, key: &'static str) -> Result<String, MessageError> {
        self.opt_string(key)?.ok_or(MessageError::MissingKey {
            message: self.message,
            key,
        })
    }

    pub(crate) fn opt_data(&self, key: &'static str) -> Result<Option<Vec<u8>>, MessageError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::Data(d)) => Ok(Some(d.clone())),
            Some(_) => Err(self.wrong(key, "data")),
        }
    }

    pub(crate) fn data(&self, key: &'static str) -> Result<Vec<u8>, MessageError> {
        self.opt_data(key)?.ok_or(MessageError::MissingKey {
            message: self.message,
            key,
        })
    }

    pub(crate) fn opt_bool(&self, key: &'static str) -> Result<Option<bool>, MessageError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(key, "a boolean")),
        }
    }

    pub(crate) fn identifiers(&self) -> Result<Identifiers, MessageError> {
        Ok(Identifiers {
            udid: self.opt_string("UDID")?,
            user_id: self.opt_string("UserID")?,
            user_short_name: self.opt_string("UserShortName")?,
            user_long_name: self.opt_string("UserLongName")?,
            enrollment_id: self.opt_string("EnrollmentID")?,
            enrollment_user_id: self.opt_string("EnrollmentUserID")?,
        })
    }
}

/// `Authenticate`: a new (re-)enrollment of a device channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authenticate {
    /// APNs topic the device will listen on.
    pub topic: String,
    /// Hardware serial number.
    pub serial_number: Option<String>,
    /// OS build, e.g. `23A344`.
    pub build_version: Option<String>,
    /// OS version, e.g. `14.0`.
    pub os_version: Option<String>,
    /// Product name, e.g. `MacBookPro18,3`.
    pub product_name: Option<String>,
    /// Model identifier.
    pub model: Option<String>,
    /// Marketing model name.
    pub model_name: Option<String>,
    /// User-visible device name.
    pub device_name: Option<String>,
    /// IMEI (cellular devices).
    pub imei: Option<String>,
    /// MEID (cellular devices).
    pub meid: Option<String>,
}

/// `TokenUpdate`: push credentials; enables the channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenUpdate {
    /// APNs device token (length varies: never assume 32 bytes).
    pub token: Vec<u8>,
    /// Value to send in the `mdm` key of pushes.
    pub push_magic: String,
    /// APNs topic.
    pub topic: String,
    /// Unlock token, when the device sends one (a missing one never erases a stored one).
    pub unlock_token: Option<Vec<u8>>,
    /// Device is waiting in Setup Assistant for `DeviceConfigured`.
    pub awaiting_configuration: bool,
    /// macOS user channel for a user not at the console.
    pub not_on_console: bool,
}

/// `UserAuthenticate`: a macOS network/mobile user asks for a user channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAuthenticate {
    /// Present in the second round, after the server sent a `DigestChallenge`.
    pub digest_response: Option<String>,
}

/// `DeclarativeManagement`: a request on the Declarative Device Management channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclarativeManagement {
    /// `tokens`, `declaration-items`, `status`, `declaration/<type>/<id>`.
    pub endpoint: String,
    /// JSON payload (status reports), if any.
    pub data: Option<Vec<u8>>,
}

/// `GetToken`: the device asks for a token of some service type (e.g. `com.apple.maid`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetToken {
    /// The token service type.
    pub token_service_type: String,
    /// Service-specific parameters.
    pub token_parameters: Option<Dictionary>,
}

/// The body of a check-in message, by `MessageType`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CheckinBody {
    /// `Authenticate`.
    Authenticate(Authenticate),
    /// `TokenUpdate`.
    TokenUpdate(TokenUpdate),
    /// `CheckOut`.
    CheckOut,
    /// `UserAuthenticate`.
    UserAuthenticate(UserAuthenticate),
    /// `SetBootstrapToken` (`None` when the device clears its token).
    SetBootstrapToken(Option<Vec<u8>>),
    /// `GetBootstrapToken`.
    GetBootstrapToken,
    /// `DeclarativeManagement`.
    DeclarativeManagement(DeclarativeManagement),
    /// `GetToken`.
    GetToken(GetToken),
    /// `ReturnToService`.
    ReturnToService,
}

impl CheckinBody {
    /// The `MessageType` string of this body.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Authenticate(_) => "Authenticate",
            Self::TokenUpdate(_) => "TokenUpdate",
            Self::CheckOut => "CheckOut",
            Self::UserAuthenticate(_) => "UserAuthenticate",
            Self::SetBootstrapToken(_) => "SetBootstrapToken",
            Self::GetBootstrapToken => "GetBootstrapToken",
            Self::DeclarativeManagement(_) => "DeclarativeManagement",
            Self::GetToken(_) => "GetToken",
            Self::ReturnToService => "ReturnToService",
        }
    }
}

/// A parsed check-in message: who sent it and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckinMessage {
    /// The raw identifying keys.
    pub identifiers: Identifiers,
    /// The channel those keys name.
    pub channel: Channel,
    /// The message itself.
    pub body: CheckinBody,
}

impl CheckinMessage {
    /// Parse a check-in body (XML or binary plist) within the default [`PlistLimits`].
    pub fn parse(body: &[u8]) -> Result<Self, MessageError> {
        Self::parse_with(body, &PlistLimits::default())
    }

    /// Parse a check-in body (XML or binary plist) within `limits`.
    pub fn parse_with(body: &[u8], limits: &PlistLimits) -> Result<Self, MessageError> {
        let dict = parse_dictionary(body, limits)?;
        let top = Fields {
            message: "check-in",
            dict: &dict,
        };
        let message_type = top.string("MessageType")?;
        let identifiers = top.identifiers()?;
        let channel = identifiers.channel()?;
        let body = match message_type.as_str() {
            "Authenticate" => {
                let f = Fields {
                    message: "Authenticate",
                    dict: &dict,
                };
                CheckinBody::Authenticate(Authenticate {
                    topic: f.string("Topic")?,
                    serial_number: f.opt_string("SerialNumber")?,
                    build_version: f.opt_string("BuildVersion")?,
                    os_version: f.opt_string("OSVersion")?,
                    product_name: f.opt_string("ProductName")?,
                    model: f.opt_string("Model")?,
                    model_name: f.opt_string("ModelName")?,
                    device_name: f.opt_string("DeviceName")?,
                    imei: f.opt_string("IMEI")?,
                    meid: f.opt_string("MEID")?,
                })
            }
            "TokenUpdate" => {
                let f = Fields {
                    message: "TokenUpdate",
                    dict: &dict,
                };
                CheckinBody::TokenUpdate(TokenUpdate {
                    token: f.data("Token")?,
                    push_magic: f.string("PushMagic")?,
                    topic: f.string("Topic")?,
                    unlock_token: f.opt_data("UnlockToken")?,
                    awaiting_configuration: f.opt_bool("AwaitingConfiguration")?.unwrap_or(false),
                    not_on_console: f.opt_bool("NotOnConsole")?.unwrap_or(false),
                })
            }
            "CheckOut" => CheckinBody::CheckOut,
            "UserAuthenticate" => {
                let f = Fields {
                    message: "UserAuthenticate",
                    dict: &dict,
                };
                CheckinBody::UserAuthenticate(UserAuthenticate {
                    digest_response: f.opt_string("DigestResponse")?,
                })
            }
            "SetBootstrapToken" => {
                let f = Fields {
                    message: "SetBootstrapToken",
                    dict: &dict,
                };
                CheckinBody::SetBootstrapToken(f.opt_data("BootstrapToken")?)
            }
            "GetBootstrapToken" => CheckinBody::GetBootstrapToken,
            "DeclarativeManagement" => {
                let f = Fields {
                    message: "DeclarativeManagement",
                    dict: &dict,
                };
                CheckinBody::DeclarativeManagement(DeclarativeManagement {
                    endpoint: f.string("Endpoint")?,
                    data: f.opt_data("Data")?,
                })
            }
            "GetToken" => {
                let f = Fields {
                    message: "GetToken",
                    dict: &dict,
                };
                let token_parameters = match dict.get("TokenParameters") {
                    None => None,
                    Some(Value::Dictionary(d)) => Some(d.clone()),
                    Some(_) => {
                        return Err(MessageError::WrongType {
                            message: "GetToken",
                            key: "TokenParameters",
                            expected: "a dictionary",
                        });
                    }
                };
                CheckinBody::GetToken(GetToken {
                    token_service_type: f.string("TokenServiceType")?,
                    token_parameters,
                })
            }
            "ReturnToService" => CheckinBody::ReturnToService,
            other => return Err(MessageError::UnknownMessageType(other.to_owned())),
        };
        Ok(Self {
            identifiers,
            channel,
            body,
        })
    }
}

/// Serialize a dictionary as an XML plist (the format devices expect in responses).
pub fn to_xml(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    value
        .to_writer_xml(&mut out)
        .expect("writing a plist to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::enrollment_id::ChannelKind;

    fn xml(dict: Dictionary) -> Vec<u8> {
        to_xml(&Value::Dictionary(dict))
    }

    fn base(message_type: &str) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), message_type.into());
        d.insert("UDID".into(), "UDID-1".into());
        d
    }

    #[test]
    fn parses_authenticate() {
        let mut d = base("Authenticate");
        d.insert("Topic".into(), "com.apple.mgmt.External.x".into());
        d.insert("SerialNumber".into(), "C02XYZ".into());
        d.insert("OSVersion".into(), "14.1".into());
        let m = CheckinMessage::parse(&xml(d)).unwrap();
        assert_eq!(m.channel.kind, ChannelKind::Device);
        let CheckinBody::Authenticate(a) = m.body else {
            panic!("wrong body")
        };
        assert_eq!(a.serial_number.as_deref(), Some("C02XYZ"));
        assert_eq!(a.os_version.as_deref(), Some("14.1"));
    }

    #[test]
    fn parses_token_update_with_odd_token_length_and_awaiting() {
        let mut d = base("TokenUpdate");
        d.insert("Token".into(), Value::Data(vec![7; 100]));
        d.insert("PushMagic".into(), "magic".into());
        d.insert("Topic".into(), "t".into());
        d.insert("AwaitingConfiguration".into(), true.into());
        d.insert("UserID".into(), "G1".into());
        let m = CheckinMessage::parse(&xml(d)).unwrap();
        assert_eq!(m.channel.id.as_str(), "UDID-1:G1");
        let CheckinBody::TokenUpdate(t) = m.body else {
            panic!("wrong body")
        };
        assert_eq!(t.token.len(), 100);
        assert!(t.awaiting_configuration);
        assert_eq!(t.unlock_token, None);
    }

    #[test]
    fn precise_errors() {
        let mut d = base("TokenUpdate");
        d.insert("Token".into(), "not data".into());
        let err = CheckinMessage::parse(&xml(d)).unwrap_err().to_string();
        assert_eq!(err, "TokenUpdate: key Token must be data");

        let err = CheckinMessage::parse(&xml(base("Bogus"))).unwrap_err();
        assert!(matches!(err, MessageError::UnknownMessageType(t) if t == "Bogus"));

        let err = CheckinMessage::parse(b"<plist><dict><key>").unwrap_err();
        assert!(matches!(err, MessageError::NotPlist(_)));

        let err = CheckinMessage::parse(&to_xml(&Value::Array(vec![]))).unwrap_err();
        assert!(matches!(err, MessageError::NotDictionary));
    }

    #[test]
    fn parses_every_message_type() {
        for (t, extra) in [
            ("CheckOut", None),
            ("UserAuthenticate", None),
            (
                "SetBootstrapToken",
                Some(("BootstrapToken", Value::Data(vec![1, 2]))),
            ),
            ("GetBootstrapToken", None),
            (
                "DeclarativeManagement",
                Some(("Endpoint", Value::from("tokens"))),
            ),
            (
                "GetToken",
                Some(("TokenServiceType", Value::from("com.apple.maid"))),
            ),
            ("ReturnToService", None),
        ] {
            let mut d = base(t);
            if let Some((k, v)) = extra {
                d.insert(k.into(), v);
            }
            let m = CheckinMessage::parse(&xml(d)).unwrap();
            assert_eq!(m.body.message_type(), t);
        }
    }

    const BOMB_30: &[u8] = include_bytes!("../../../fuzz/corpus/checkin/bplist-bomb-30");
    const BOMB_40: &[u8] = include_bytes!("../../../fuzz/corpus/checkin/bplist-bomb-40");
    const DEEP_XML: &[u8] = include_bytes!("../../../fuzz/corpus/checkin/xml-deep-50000");

    /// Run `f` on a thread with a 256 KiB stack: proof that nothing recurses with input depth.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn a_shared_reference_bomb_is_refused_quickly() {
        for bomb in [BOMB_30, BOMB_40] {
            let started = std::time::Instant::now();
            let err = on_small_stack(move || CheckinMessage::parse(bomb).unwrap_err());
            assert!(err.to_string().contains("plist has more than"), "{err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
    }

    #[test]
    fn fifty_thousand_nested_arrays_are_refused_on_a_small_stack() {
        let err = on_small_stack(|| CheckinMessage::parse(DEEP_XML).unwrap_err());
        assert_eq!(err.to_string(), "plist nesting deeper than 64");
    }

    #[test]
    fn parses_binary_plists() {
        let mut d = base("CheckOut");
        d.insert("Extra".into(), 1.into());
        let mut bin = Vec::new();
        Value::Dictionary(d).to_writer_binary(&mut bin).unwrap();
        assert_eq!(
            CheckinMessage::parse(&bin).unwrap().body,
            CheckinBody::CheckOut
        );
    }
}
