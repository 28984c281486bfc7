//! Enrollment IDs: one stable key per MDM channel (`docs/protocol.md#enrollment-ids`).
//!
//! | Channel                    | ID                              | Parent          |
//! |----------------------------|---------------------------------|-----------------|
//! | Device (macOS/iOS)         | `UDID`                          | —               |
//! | macOS user channel         | `UDID:UserID`                   | `UDID`          |
//! | Shared iPad user           | `UDID:UserShortName`            | `UDID`          |
//! | User Enrollment device     | `EnrollmentID`                  | —               |
//! | User Enrollment user       | `EnrollmentID:EnrollmentUserID` | `EnrollmentID`  |

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `UserID` a Shared iPad sends for its user channels.
pub const SHARED_IPAD_USER_ID: &str = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF";

/// The identifying keys every check-in message and command report carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Identifiers {
    /// Device UDID (absent for User Enrollment).
    #[serde(rename = "UDID")]
    pub udid: Option<String>,
    /// macOS user or Shared iPad user GUID.
    #[serde(rename = "UserID")]
    pub user_id: Option<String>,
    /// Short name of the user (Shared iPad channels are keyed by it).
    pub user_short_name: Option<String>,
    /// Long name of the user.
    pub user_long_name: Option<String>,
    /// User Enrollment (BYOD) device identifier.
    #[serde(rename = "EnrollmentID")]
    pub enrollment_id: Option<String>,
    /// User Enrollment user identifier.
    #[serde(rename = "EnrollmentUserID")]
    pub enrollment_user_id: Option<String>,
}

/// The kind of channel an enrollment ID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// The device channel of a macOS or iOS device.
    Device,
    /// A macOS user channel.
    User,
    /// A Shared iPad user channel.
    SharedIpadUser,
    /// The device channel of a User Enrollment (BYOD).
    UserEnrollmentDevice,
    /// The user channel of a User Enrollment.
    UserEnrollmentUser,
}

impl ChannelKind {
    /// Whether this is a device (not user) channel.
    pub fn is_device(self) -> bool {
        matches!(self, Self::Device | Self::UserEnrollmentDevice)
    }

    /// The stable snake_case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::User => "user",
            Self::SharedIpadUser => "shared_ipad_user",
            Self::UserEnrollmentDevice => "user_enrollment_device",
            Self::UserEnrollmentUser => "user_enrollment_user",
        }
    }
}

/// A resolved channel: its ID, the ID of its device channel (for user channels) and its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// The enrollment ID of this channel.
    pub id: EnrollmentId,
    /// The device channel's enrollment ID, for user channels.
    pub parent: Option<EnrollmentId>,
    /// The kind of channel.
    pub kind: ChannelKind,
}

impl Channel {
    /// The enrollment ID of the device channel this channel belongs to (itself for device channels).
    pub fn device_id(&self) -> &EnrollmentId {
        self.parent.as_ref().unwrap_or(&self.id)
    }
}

/// Why a message's identifiers do not name a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// Neither `UDID` nor `EnrollmentID` is present.
    #[error("message carries neither UDID nor EnrollmentID")]
    MissingDeviceId,
    /// A key was present but empty or contained a `:` (which would make IDs ambiguous).
    #[error("identifier {key} is empty or contains ':'")]
    InvalidValue {
        /// The offending plist key.
        key: &'static str,
    },
    /// A Shared iPad user channel without `UserShortName`.
    #[error("Shared iPad user channel without UserShortName")]
    MissingUserShortName,
}

/// A stable enrollment ID string (see the module docs for its shape).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnrollmentId(String);

impl EnrollmentId {
    /// Wrap a string as an enrollment ID (no validation: IDs from storage or the API).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The ID as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnrollmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for EnrollmentId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

fn checked<'a>(key: &'static str, value: &'a str) -> Result<&'a str, ChannelError> {
    if value.is_empty() || value.contains(':') {
        Err(ChannelError::InvalidValue { key })
    } else {
        Ok(value)
    }
}

impl Identifiers {
    /// Resolve the channel these identifiers name (`docs/protocol.md#enrollment-ids`).
    pub fn channel(&self) -> Result<Channel, ChannelError> {
        if let Some(eid) = self.enrollment_id.as_deref() {
            let eid = checked("EnrollmentID", eid)?;
            let device = EnrollmentId::new(eid);
            return Ok(match self.enrollment_user_id.as_deref() {
                Some(user) => Channel {
                    id: EnrollmentId(format!("{eid}:{}", checked("EnrollmentUserID", user)?)),
                    parent: Some(device),
                    kind: ChannelKind::UserEnrollmentUser,
                },
                None => Channel {
                    id: device,
                    parent: None,
                    kind: ChannelKind::UserEnrollmentDevice,
                },
            });
        }
        let udid = checked(
            "UDID",
            self.udid.as_deref().ok_or(ChannelError::MissingDeviceId)?,
        )?;
        let device = EnrollmentId::new(udid);
        Ok(match self.user_id.as_deref() {
            None => Channel {
                id: device,
                parent: None,
                kind: ChannelKind::Device,
            },
            Some(uid) if uid.eq_ignore_ascii_case(SHARED_IPAD_USER_ID) => {
                let short = self
                    .user_short_name
                    .as_deref()
                    .ok_or(ChannelError::MissingUserShortName)?;
                Channel {
                    id: EnrollmentId(format!("{udid}:{}", checked("UserShortName", short)?)),
                    parent: Some(device),
                    kind: ChannelKind::SharedIpadUser,
                }
            }
            Some(uid) => Channel {
                id: EnrollmentId(format!("{udid}:{}", checked("UserID", uid)?)),
                parent: Some(device),
                kind: ChannelKind::User,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(udid: Option<&str>, user: Option<&str>, short: Option<&str>) -> Identifiers {
        Identifiers {
            udid: udid.map(Into::into),
            user_id: user.map(Into::into),
            user_short_name: short.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn device_channel() {
        let c = ids(Some("U1"), None, None).channel().unwrap();
        assert_eq!(c.id.as_str(), "U1");
        assert_eq!(c.parent, None);
        assert_eq!(c.kind, ChannelKind::Device);
        assert_eq!(c.device_id().as_str(), "U1");
    }

    #[test]
    fn macos_user_channel() {
        let c = ids(Some("U1"), Some("G1"), Some("jane")).channel().unwrap();
        assert_eq!(c.id.as_str(), "U1:G1");
        assert_eq!(c.parent.unwrap().as_str(), "U1");
        assert_eq!(c.kind, ChannelKind::User);
    }

    #[test]
    fn shared_ipad_user_channel_uses_short_name() {
        let c = ids(
            Some("U1"),
            Some(&SHARED_IPAD_USER_ID.to_lowercase()),
            Some("jane"),
        )
        .channel()
        .unwrap();
        assert_eq!(c.id.as_str(), "U1:jane");
        assert_eq!(c.kind, ChannelKind::SharedIpadUser);
        assert_eq!(
            ids(Some("U1"), Some(SHARED_IPAD_USER_ID), None).channel(),
            Err(ChannelError::MissingUserShortName)
        );
    }

    #[test]
    fn user_enrollment_channels() {
        let mut i = Identifiers {
            enrollment_id: Some("E1".into()),
            ..Default::default()
        };
        let c = i.channel().unwrap();
        assert_eq!(
            (c.id.as_str(), c.kind),
            ("E1", ChannelKind::UserEnrollmentDevice)
        );
        i.enrollment_user_id = Some("EU1".into());
        let c = i.channel().unwrap();
        assert_eq!(c.id.as_str(), "E1:EU1");
        assert_eq!(c.parent.unwrap().as_str(), "E1");
        assert_eq!(c.kind, ChannelKind::UserEnrollmentUser);
    }

    #[test]
    fn rejects_missing_and_ambiguous_ids() {
        assert_eq!(
            ids(None, None, None).channel(),
            Err(ChannelError::MissingDeviceId)
        );
        assert_eq!(
            ids(Some("a:b"), None, None).channel(),
            Err(ChannelError::InvalidValue { key: "UDID" })
        );
        assert_eq!(
            ids(Some(""), None, None).channel(),
            Err(ChannelError::InvalidValue { key: "UDID" })
        );
    }
}
