//! Paths left out of a layer: a default list of places that hold only
//! runtime state (temporary files, sockets, X11 and VNC session files), plus
//! globs from the request.
//!
//! Patterns are absolute paths inside the container (`/home/*/.cache`); a
//! pattern without a leading `/` matches at any depth. `*` does not cross
//! `/`, `**` does. A pattern that matches a directory excludes everything
//! below it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use dcs_protocol::excludes::exclude_glob;
use globset::{GlobSet, GlobSetBuilder};

/// Excluded unless the request turns the defaults off. Contents only: the
/// directories themselves stay, so the image keeps `/tmp` with its mode.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "/tmp/*",
    "/var/tmp/*",
    "/run/*",
    "/var/run/*",
    "**/.X11-unix",
    "**/.ICE-unix",
    "**/.Xauthority",
    "**/.ICEauthority",
    "**/.xsession-errors*",
    "**/.vnc/*.pid",
    "**/.vnc/*.log",
];

/// A pattern this agent (and so the API) refuses, and why.
pub use dcs_protocol::excludes::ExcludePatternError as ExcludeError;

#[derive(Debug, Clone)]
pub struct Excludes {
    set: GlobSet,
    patterns: Vec<String>,
}

impl Excludes {
    pub fn new(extra: &[String], with_defaults: bool) -> Result<Self, ExcludeError> {
        let mut patterns: Vec<String> = Vec::new();
        if with_defaults {
            patterns.extend(DEFAULT_EXCLUDES.iter().map(|p| p.to_string()));
        }
        patterns.extend(extra.iter().cloned());
        let mut builder = GlobSetBuilder::new();
        for pattern in &patterns {
            // The parser the API checks requests with: a pattern it takes
            // is one this agent takes.
            builder.add(exclude_glob(pattern)?);
        }
        let set = builder.build().map_err(|e| ExcludeError {
            pattern: patterns.join(", "),
            reason: e.to_string(),
        })?;
        Ok(Self { set, patterns })
    }

    /// No exclusions at all.
    pub fn none() -> Self {
        Self {
            set: GlobSet::empty(),
            patterns: Vec::new(),
        }
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The first pattern (index into `patterns`) that matches this path
    /// itself: what a preview credits an excluded entry to.
    pub fn matching_pattern(&self, relative: &[u8]) -> Option<usize> {
        if self.set.is_empty() {
            return None;
        }
        self.set
            .matches(Path::new(OsStr::from_bytes(&absolute(relative))))
            .into_iter()
            .min()
    }

    /// Whether this path (relative to the root, no leading `/`) matches.
    pub fn is_excluded(&self, relative: &[u8]) -> bool {
        if self.set.is_empty() {
            return false;
        }
        self.set
            .is_match(Path::new(OsStr::from_bytes(&absolute(relative))))
    }

    /// Whether this path or one of its parent directories matches: for
    /// streams of entries, where no walk skips excluded directories.
    pub fn is_excluded_or_below(&self, relative: &[u8]) -> bool {
        let relative = relative.strip_suffix(b"/").unwrap_or(relative);
        let mut end = 0;
        while end < relative.len() {
            end = relative[end..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(relative.len(), |p| end + p);
            if self.is_excluded(&relative[..end]) {
                return true;
            }
            end += 1;
        }
        false
    }
}

fn absolute(relative: &[u8]) -> Vec<u8> {
    let mut absolute = Vec::with_capacity(relative.len() + 1);
    absolute.push(b'/');
    absolute.extend_from_slice(relative);
    absolute
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_the_directories_but_not_their_contents() {
        let e = Excludes::new(&[], true).unwrap();
        assert!(!e.is_excluded(b"tmp"));
        assert!(e.is_excluded(b"tmp/x"));
        assert!(e.is_excluded(b"tmp/.X11-unix"));
        assert!(e.is_excluded(b"root/.vnc/host:1.pid"));
        assert!(e.is_excluded(b"home/speaker/.Xauthority"));
        assert!(!e.is_excluded(b"home/speaker/.vnc/xstartup"));
        assert!(!e.is_excluded(b"etc/tmp/x"));
        assert!(e.is_excluded_or_below(b"tmp/a/b/c"));
        assert!(!e.is_excluded_or_below(b"usr/bin/tool"));
    }

    #[test]
    fn request_patterns_are_anchored_or_match_anywhere() {
        let e = Excludes::new(&["/data/".into(), "*.pyc".into()], false).unwrap();
        assert!(e.is_excluded(b"data"));
        assert!(e.is_excluded_or_below(b"data/x/y"));
        assert!(!e.is_excluded(b"srv/data"));
        assert!(e.is_excluded(b"usr/lib/a.pyc"));
        assert!(!e.is_excluded(b"tmp/x"));
    }

    #[test]
    fn a_preview_credits_the_first_matching_pattern() {
        let e = Excludes::new(&["/tmp/a".into(), "*.log".into()], true).unwrap();
        let first_default = Some(0);
        assert_eq!(e.matching_pattern(b"tmp/a"), first_default);
        let log = e.patterns().iter().position(|p| p == "*.log");
        assert_eq!(e.matching_pattern(b"srv/x.log"), log);
        assert_eq!(e.matching_pattern(b"srv/x.txt"), None);
        assert_eq!(Excludes::none().matching_pattern(b"tmp/x"), None);
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Excludes::new(&["/a/[".into()], false).is_err());
        assert!(Excludes::new(&["/".into()], false).is_err());
        assert!(Excludes::new(&["//".into()], false).is_err());
    }
}
