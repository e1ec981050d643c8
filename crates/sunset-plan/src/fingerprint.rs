//! Plan fingerprints: the identity a checkpoint is tied to.
//!
//! The hash is taken over a canonical JSON form of the *parsed* plan (defaults applied, maps with
//! sorted keys, durations in milliseconds), not over the raw text: reformatting a plan or adding a
//! comment must not invalidate a twelve-hour backfill, but changing a mapping must.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// SHA-256 of a plan's canonical form, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Fingerprints any serializable plan model.
    pub fn of<T: Serialize>(plan: &T) -> Fingerprint {
        // serde_json's `Map` is a BTreeMap here (no `preserve_order`), so object keys are sorted;
        // ordered sections are serialized as sequences by their own types and keep their order.
        let canonical = serde_json::to_value(plan).expect("plan models serialize to JSON");
        let bytes = serde_json::to_vec(&canonical).expect("JSON values always serialize");
        Fingerprint(hex(&Sha256::digest(bytes)))
    }

    /// Rebuilds a fingerprint read back from a checkpoint.
    pub fn from_hex(hex: impl Into<String>) -> Fingerprint {
        Fingerprint(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, enough for humans to compare two plans at a glance.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
