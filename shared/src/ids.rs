//! Identifier newtypes. Each validates on construction, so a value of the type is always well formed.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be 1 to {max} characters of A-Z, a-z, 0-9, '_' or '-' (got {len} characters)")]
    BadSlug { what: &'static str, max: usize, len: usize },
    #[error("{what} must be 1 to {max} characters without control characters (got {len} characters)")]
    BadText { what: &'static str, max: usize, len: usize },
}

fn is_slug(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_plain_text(s: &str, max: usize) -> bool {
    let n = s.chars().count();
    n >= 1 && n <= max && !s.chars().any(char::is_control)
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `s`: 1..=MAX_LEN characters of `[A-Za-z0-9_-]`.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if is_slug(s, Self::MAX_LEN) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError::BadSlug { what: $what, max: Self::MAX_LEN, len: s.chars().count() })
                }
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

slug_id!(
    /// A room id as it appears in URLs: 1–64 of `[A-Za-z0-9_-]`.
    RoomId, "room id", 64
);
slug_id!(
    /// A tenant id: 1–64 of `[A-Za-z0-9_-]`. Rooms of different tenants never see each other.
    TenantId, "tenant", 64
);
slug_id!(
    /// A media node id: 1–64 of `[A-Za-z0-9_-]`.
    NodeId, "node id", 64
);
slug_id!(
    /// A region name such as `eu-west` or `us-east`: 1–64 of `[A-Za-z0-9_-]`.
    Region, "region", 64
);

impl TenantId {
    /// The tenant of tokens that name none.
    pub fn default_tenant() -> Self {
        TenantId("default".to_owned())
    }
}

/// A user id (the JWT `sub`): 1–128 characters, no control characters. One user is one participant, however
/// many connections (tabs) it has.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Longest accepted value, in characters.
    pub const MAX_LEN: usize = 128;

    /// Validates `s`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if is_plain_text(s, Self::MAX_LEN) {
            Ok(UserId(s.to_owned()))
        } else {
            Err(IdError::BadText { what: "user id", max: Self::MAX_LEN, len: s.chars().count() })
        }
    }

    /// The pseudo-user that authors announcements from the admin API.
    pub fn system() -> Self {
        UserId("system".to_owned())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One WebSocket connection of a room, numbered by the room (never reused within a room's lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Validates a display name: 1–80 characters, no control characters. Surrounding spaces are trimmed.
pub fn parse_display_name(s: &str) -> Result<String, IdError> {
    const MAX: usize = 80;
    let trimmed = s.trim();
    if is_plain_text(trimmed, MAX) {
        Ok(trimmed.to_owned())
    } else {
        Err(IdError::BadText { what: "name", max: MAX, len: trimmed.chars().count() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_follow_the_contract() {
        assert!(RoomId::parse("math-101_A").is_ok());
        assert!(RoomId::parse(&"a".repeat(64)).is_ok());
        assert!(RoomId::parse(&"a".repeat(65)).is_err());
        assert!(RoomId::parse("").is_err());
        assert!(RoomId::parse("a/b").is_err());
        assert!(RoomId::parse("é").is_err());
    }

    #[test]
    fn user_ids_reject_control_characters_and_length() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("a\nb").is_err());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn ids_validate_when_deserialized() {
        assert!(serde_json::from_str::<RoomId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<RoomId>("\"not ok\"").is_err());
    }

    #[test]
    fn display_names_are_trimmed() {
        assert_eq!(parse_display_name("  Ada  ").as_deref(), Ok("Ada"));
        assert!(parse_display_name("   ").is_err());
    }
}
