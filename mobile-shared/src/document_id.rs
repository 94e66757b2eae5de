//! automerge-repo document ids: 16 random bytes, base58check encoded.

use std::fmt;

/// A document id as automerge-repo clients write it (base58check of a UUID's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId(String);

impl DocumentId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(bs58::encode(bytes).with_check().into_string())
    }

    /// An id derived from `seed` (the first 16 bytes of its SHA-256), for documents that every
    /// party must be able to name without asking, such as a user's manifest.
    pub fn derived(seed: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(seed.as_bytes());
        Self(bs58::encode(&digest[..16]).with_check().into_string())
    }

    /// Parses an id; `None` unless it is base58check of exactly 16 bytes. Also accepts the
    /// `automerge:` URL form.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.strip_prefix("automerge:").unwrap_or(raw);
        let bytes = bs58::decode(raw).with_check(None).into_vec().ok()?;
        (bytes.len() == 16).then(|| Self(raw.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `automerge:` URL of the document.
    pub fn url(&self) -> String {
        format!("automerge:{}", self.0)
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
