//! Layer compression: chosen by the speaker, stored with the snapshot, sent
//! to the agent. One type on both sides; it is text only at the edges
//! (GraphQL, the agent's CLI, JSON), always lowercase on the wire and in
//! stored rows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Read by every runtime.
    #[default]
    Gzip,
    /// Several times faster to write.
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// Any case, as the agent's CLI has always accepted.
impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            other => Err(format!(
                "unknown compression \"{other}\" (use gzip or zstd)"
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_and_sent_as_lowercase_text() {
        for (c, text) in [(Compression::Gzip, "gzip"), (Compression::Zstd, "zstd")] {
            assert_eq!(serde_json::to_value(c).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<Compression>(text.into()).unwrap(),
                c
            );
            assert_eq!(c.to_string(), text);
            assert_eq!(text.to_uppercase().parse::<Compression>(), Ok(c));
        }
        assert!("brotli".parse::<Compression>().is_err());
    }
}
