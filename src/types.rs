//! Small value types shared by every layer: database GUIDs and log sequence numbers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A log sequence number: the position of a record in a database's log.
///
/// LSNs start at 1 and increase by exactly 1 per record, across generations, for the life of the database;
/// 0 means "before the first record". A gap is therefore always detectable.
pub type Lsn = u64;

/// The identity of one database, shared by its state store, checkpoint and every log generation (ESE's
/// "log signature"). Copies of one database share it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Guid(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl Guid {
    /// A fresh random GUID (UUID version 4).
    pub fn new_random() -> Self {
        Guid(*uuid::Uuid::new_v4().as_bytes())
    }

    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        uuid::Uuid::parse_str(s)
            .map(|u| Guid(*u.as_bytes()))
            .map_err(|e| crate::Error::InvalidArgument(format!("not a GUID: {s:?}: {e}")))
    }
}

/// The current time as microseconds since the Unix epoch (0 if the clock is before 1970).
///
/// Only ever called outside `apply`: times that reach the state travel inside operations.
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
