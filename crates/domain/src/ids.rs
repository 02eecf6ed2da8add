//! Identifiers as their own types, so a case's identifier is never passed
//! where a consent's is expected. Each is a string on the wire and in
//! storage (serde transparent) and reads as `&str` where text is wanted.

use serde::{Deserialize, Serialize};

macro_rules! identifier {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                $name(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                $name(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

identifier!(
    /// A case, shared by both institutions: the consent's, the referral's
    /// and every message's about it.
    CaseId
);

identifier!(
    /// A consent record, kept by the institution that collected it.
    ConsentId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_plain_strings_on_the_wire() {
        let id = CaseId::from("k-1");
        assert_eq!(serde_json::to_string(&id).expect("json"), "\"k-1\"");
        assert_eq!(serde_json::from_str::<CaseId>("\"k-1\"").expect("json"), id);
        assert_eq!(id, "k-1");
        assert_eq!(&*id, "k-1");
        assert_eq!(id.to_string(), "k-1");
    }
}
