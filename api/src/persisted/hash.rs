//! The name of a persisted query: the SHA-256 of its text, written as 64
//! lower-case hex digits (what Apollo clients send as `sha256Hash` and
//! manifests as `id`).

use sha2::{Digest as _, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryHash([u8; 32]);

impl QueryHash {
    /// The hash of a query's UTF-8 bytes.
    pub fn of(query: &str) -> Self {
        Self(Sha256::digest(query.as_bytes()).into())
    }

    /// 64 hex digits (either case; stored and shown in lower case), or
    /// `None`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for QueryHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for QueryHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueryHash({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_the_sha256_of_the_text_in_lower_case_hex() {
        // `printf '{ me { sub } }' | sha256sum`
        let known = "cd20086fc1ec36690fc447f1b609baa7954175069891335042ac73dc6d5dabc7";
        let hash = QueryHash::of("{ me { sub } }");
        assert_eq!(hash.to_hex(), known);
        assert_eq!(QueryHash::parse(known), Some(hash));
        assert_eq!(
            QueryHash::parse(&hash.to_hex().to_uppercase()),
            Some(hash),
            "upper case is the same hash"
        );
    }

    #[test]
    fn anything_but_64_hex_digits_is_no_hash() {
        for text in [
            "",
            "abc",
            &"a".repeat(63),
            &"a".repeat(65),
            &"g".repeat(64),
            &format!("{}é", "a".repeat(62)),
            &" ".repeat(64),
        ] {
            assert_eq!(QueryHash::parse(text), None, "{text:?}");
        }
    }
}
