//! Exclude patterns as requests carry them (`createSnapshot`,
//! `previewSnapshot`): globs over absolute container paths. Parsed here, by
//! the one parser both sides can use, so that the API refuses a pattern the
//! agent would refuse before anything is queued or sent.
//!
//! A pattern with a leading `/` is anchored at the container's root; one
//! without matches at any depth. `*` stays within a directory, `**` crosses
//! them; a trailing `/` is ignored; `\` escapes the next character.

use globset::{Glob, GlobBuilder};

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid exclude pattern \"{pattern}\": {reason}")]
pub struct ExcludePatternError {
    pub pattern: String,
    pub reason: String,
}

/// The glob of one pattern, or why there is none.
pub fn exclude_glob(pattern: &str) -> Result<Glob, ExcludePatternError> {
    let error = |reason: String| ExcludePatternError {
        pattern: pattern.to_string(),
        reason,
    };
    let trimmed = pattern.trim();
    if trimmed.is_empty() || trimmed.trim_end_matches('/').is_empty() {
        return Err(error("it would exclude everything or nothing".into()));
    }
    if trimmed.contains('\0') {
        return Err(error("it contains a NUL byte".into()));
    }
    container_glob(trimmed).map_err(|e| error(e.kind().to_string()))
}

/// The glob of a pattern over absolute container paths, without the checks
/// of [`exclude_glob`]: for patterns written by us (the agent's default
/// excludes and its scan rules), in the same syntax as a request's.
pub fn container_glob(pattern: &str) -> Result<Glob, globset::Error> {
    let trimmed = pattern.trim_end_matches('/');
    let anchored = if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("**/{trimmed}")
    };
    GlobBuilder::new(&anchored)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        exclude_glob(pattern)
            .unwrap()
            .compile_matcher()
            .is_match(path)
    }

    #[test]
    fn patterns_are_anchored_or_match_at_any_depth() {
        assert!(matches("/data/", "/data"));
        assert!(!matches("/data", "/srv/data"));
        assert!(matches("*.pyc", "/usr/lib/a.pyc"));
        assert!(matches("/home/*/.cache", "/home/alice/.cache"));
        assert!(!matches("/home/*/.cache", "/home/alice/x/.cache"));
        assert!(matches("/home/**/.cache", "/home/alice/x/.cache"));
        assert!(matches(r"/a\*b", "/a*b"));
        assert!(!matches(r"/a\*b", "/axb"));
    }

    #[test]
    fn bad_patterns_are_refused_with_their_reason() {
        for bad in ["", "  ", "/", "//", "/a/[", "/a/{b", "/a\0b"] {
            let error = exclude_glob(bad).expect_err(bad);
            assert_eq!(error.pattern, bad);
            assert!(!error.reason.is_empty());
        }
        assert!(exclude_glob("/a/[bc]").is_ok());
    }
}
