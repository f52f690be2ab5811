//! The secret scan: what a snapshot would publish that it should not.
//!
//! The scan rides along the walk that builds a layer (or a preview): it is
//! told about each entry as the walk meets it and never walks or opens
//! anything itself. The walk's safety rules hold for it: names are never
//! resolved, links never followed. Per regular file:
//! 1. [`Scanner::file`]: location and size rules run on the path and size;
//!    the answer says whether the content rules want the file's head;
//! 2. the head (the first [`HEAD_BYTES`]) is collected: by a [`HeadReader`]
//!    wrapped around the data on its way into the tar (commit), or read
//!    from the already pinned file (preview);
//! 3. [`Scanner::end_file`]: content rules run on the head, unless it is
//!    binary (a NUL byte within the first [`BINARY_PROBE`] bytes).
//!
//! Findings name the path, the rule and (for content) the line, never what
//! matched. Rules live in `rules.toml` (see `rules`).

mod content;
pub mod rules;
#[cfg(test)]
mod tests;

use std::io::{self, Read};

use dcs_protocol::{Acknowledgement, Finding, ScanReport, Severity};
use memchr::memchr;

use rules::{RuleSet, Shape};

/// Content rules read at most this much of each file: a secret must begin
/// and end within a file's first 1 MiB to be found. Configuration files,
/// histories and key files are far smaller; past that, files are data.
pub const HEAD_BYTES: usize = 1 << 20;

/// A NUL byte within this many first bytes makes a file binary: content
/// rules skip it.
pub const BINARY_PROBE: usize = 8 * 1024;

/// What one walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    report: ScanReport,
    /// Secrets left out of the report once it was full: they cannot be
    /// acknowledged, so they block a commit until excluded.
    unlisted_secrets: u64,
}

/// What stops a commit: secrets that no acknowledgement covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocking {
    /// Listed in the report, sorted by path.
    pub listed: Vec<Finding>,
    /// More that the full report could not list.
    pub unlisted: u64,
}

impl Blocking {
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.unlisted == 0
    }

    pub fn count(&self) -> u64 {
        self.listed.len() as u64 + self.unlisted
    }
}

impl Findings {
    pub fn report(&self) -> &ScanReport {
        &self.report
    }

    pub fn into_report(self) -> ScanReport {
        self.report
    }

    /// The secrets that `acknowledged` does not cover.
    pub fn blocking(&self, acknowledged: &[Acknowledgement]) -> Blocking {
        Blocking {
            listed: self.report.unacknowledged(acknowledged).cloned().collect(),
            unlisted: self.unlisted_secrets,
        }
    }

    /// Adds the findings of another pass over the same change (the delta
    /// of a two-pass commit). Both layers are pushed, so a secret either
    /// pass saw is published: the union, one finding per path and rule.
    pub fn merge(&mut self, other: Findings) {
        self.unlisted_secrets += other.unlisted_secrets;
        self.report.truncated |= other.report.truncated;
        let mut all = std::mem::take(&mut self.report.findings);
        all.extend(other.report.findings);
        let mut all = sorted(all);
        dedup(&mut all);
        for finding in all {
            self.push(finding);
        }
    }

    fn push(&mut self, finding: Finding) {
        if self.report.findings.len() >= ScanReport::MAX_FINDINGS {
            self.report.truncated = true;
            if finding.severity == Severity::Secret {
                self.unlisted_secrets += 1;
            }
            return;
        }
        self.report.findings.push(finding);
    }
}

fn sorted(mut findings: Vec<Finding>) -> Vec<Finding> {
    findings.sort_by(|a, b| (&a.path, &a.rule, a.line).cmp(&(&b.path, &b.rule, b.line)));
    findings
}

/// One finding per path and rule (the first line), in a sorted list.
fn dedup(findings: &mut Vec<Finding>) {
    findings.dedup_by(|later, earlier| later.path == earlier.path && later.rule == earlier.rule);
}

/// How much content the scan read, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volume {
    /// Files whose head was searched (text files).
    pub files: u64,
    pub bytes: u64,
}

/// A file's head being collected for the content rules.
#[derive(Debug)]
pub struct Head {
    bytes: Vec<u8>,
    limit: usize,
    /// A NUL byte was seen in the probe: nothing more is kept.
    binary: bool,
}

impl Head {
    /// Wraps the file's data on its way elsewhere (into the tar): keeps a
    /// copy of its first bytes, changes nothing of what passes.
    pub fn reader<R: Read>(&mut self, inner: R) -> HeadReader<'_, R> {
        HeadReader { inner, head: self }
    }

    /// Reads the head from `file` (a preview): the probe first, the rest
    /// only for a text file.
    pub fn fill_from(&mut self, file: &mut impl Read) -> io::Result<()> {
        let mut chunk = vec![0u8; BINARY_PROBE.min(self.limit).max(1)];
        while self.wants_more() {
            let room = self.limit - self.bytes.len();
            let n = match file.read(&mut chunk[..room.min(BINARY_PROBE)]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.keep(&chunk[..n]);
        }
        Ok(())
    }

    fn wants_more(&self) -> bool {
        !self.binary && self.bytes.len() < self.limit
    }

    fn keep(&mut self, data: &[u8]) {
        if !self.wants_more() {
            return;
        }
        let before = self.bytes.len();
        let take = data.len().min(self.limit - before);
        self.bytes.extend_from_slice(&data[..take]);
        if before < BINARY_PROBE {
            let probe_end = self.bytes.len().min(BINARY_PROBE);
            self.binary = memchr(0, &self.bytes[before..probe_end]).is_some();
        }
    }

    fn is_binary(&self) -> bool {
        memchr(0, &self.bytes[..self.bytes.len().min(BINARY_PROBE)]).is_some()
    }
}

/// See [`Head::reader`].
#[derive(Debug)]
pub struct HeadReader<'a, R> {
    inner: R,
    head: &'a mut Head,
}

impl<R: Read> Read for HeadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.head.keep(&buf[..n]);
        Ok(n)
    }
}

/// The scan of one walk. Entries must come in the walk's order (a
/// directory before what is below it, and what is below it together), as
/// both the overlay walk and a layer tar give them.
#[derive(Debug)]
pub struct Scanner {
    rules: &'static RuleSet,
    findings: Findings,
    /// The size-rule directory being weighed (the outermost match).
    watched: Option<Watched>,
    /// The file between `file` and `end_file`.
    current: Current,
    /// Reused buffers.
    spare_head: Vec<u8>,
    matched_globs: Vec<usize>,
    rule_ids: Vec<usize>,
    pub volume: Volume,
}

#[derive(Debug)]
struct Watched {
    relative: Vec<u8>,
    rule: usize,
    bytes: u64,
}

#[derive(Debug, Default)]
struct Current {
    absolute: Vec<u8>,
    /// Content rules its path selected.
    path_rules: Vec<usize>,
    everywhere: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    pub fn new() -> Self {
        Self::with_rules(rules::built_in())
    }

    pub fn with_rules(rules: &'static RuleSet) -> Self {
        Self {
            rules,
            findings: Findings::default(),
            watched: None,
            current: Current::default(),
            spare_head: Vec::new(),
            matched_globs: Vec::new(),
            rule_ids: Vec::new(),
            volume: Volume::default(),
        }
    }

    /// A regular file (its first name) of `size` bytes, at `relative` (to
    /// the root, no leading `/`). Runs the location and size rules; returns
    /// the head to collect when content rules want it.
    pub fn file(&mut self, relative: &[u8], size: u64) -> Option<Head> {
        self.weigh(relative, size);
        self.match_path(relative);
        let mut located_secret = false;
        self.current.path_rules.clear();
        for i in 0..self.rule_ids.len() {
            let index = self.rule_ids[i];
            let rule = &self.rules.rules[index];
            match rule.shape {
                Shape::Location => {
                    located_secret |= rule.severity == Severity::Secret;
                    self.add(index, None, None);
                }
                Shape::Content { .. } => self.current.path_rules.push(index),
                Shape::Size {
                    directories: false,
                    min_bytes,
                } if size >= min_bytes => self.add(index, None, Some(size)),
                Shape::Size { .. } => {}
            }
        }
        // A file already found by where it is needs no reading: its whole
        // content is the secret.
        self.current.everywhere = !located_secret;
        let wanted = size > 0
            && (self.current.everywhere || !self.current.path_rules.is_empty())
            && !self.rules.skips_content(&self.current.absolute);
        if !wanted {
            return None;
        }
        let mut bytes = std::mem::take(&mut self.spare_head);
        bytes.clear();
        Some(Head {
            bytes,
            limit: usize::try_from(size).unwrap_or(usize::MAX).min(HEAD_BYTES),
            binary: false,
        })
    }

    /// Runs the content rules on the head collected for the last `file`.
    pub fn end_file(&mut self, head: Head) {
        if !head.is_binary() {
            self.volume.files += 1;
            self.volume.bytes += head.bytes.len() as u64;
            let mut hits = Vec::new();
            content::scan_head(
                self.rules,
                &head.bytes,
                &self.current.path_rules,
                self.current.everywhere,
                |rule, line| hits.push((rule, line)),
            );
            for (rule, line) in hits {
                self.add(rule, Some(line), None);
            }
        }
        self.spare_head = head.bytes;
    }

    /// A further name of a regular file whose data went under its first
    /// name. Location rules apply to every name; a rule that also checks
    /// content counts as matched (the content was read under the other name).
    pub fn hard_link(&mut self, relative: &[u8]) {
        self.weigh(relative, 0);
        self.match_path(relative);
        for i in 0..self.rule_ids.len() {
            let index = self.rule_ids[i];
            let rule = &self.rules.rules[index];
            let by_name = matches!(rule.shape, Shape::Location)
                || (matches!(rule.shape, Shape::Content { everywhere: false })
                    && rule.severity == Severity::Secret);
            if by_name {
                self.add(index, None, None);
            }
        }
    }

    /// A directory: size rules on directories weigh what is below it.
    pub fn directory(&mut self, relative: &[u8]) {
        self.weigh(relative, 0);
        if self.watched.is_some() {
            return;
        }
        self.match_path(relative);
        let rules = self.rules;
        let rule = self.rule_ids.iter().copied().find(|&i| {
            matches!(
                rules.rules[i].shape,
                Shape::Size {
                    directories: true,
                    ..
                }
            )
        });
        if let Some(rule) = rule {
            self.watched = Some(Watched {
                relative: relative.to_vec(),
                rule,
                bytes: 0,
            });
        }
    }

    /// Sets the current path and the rules whose `paths` match it.
    fn match_path(&mut self, relative: &[u8]) {
        set_absolute(&mut self.current.absolute, relative);
        self.rules.rules_for_path(
            &self.current.absolute,
            &mut self.matched_globs,
            &mut self.rule_ids,
        );
    }

    /// The walk is over.
    pub fn finish(mut self) -> Findings {
        self.close_watched();
        let mut findings = self.findings;
        findings.report.findings = sorted(std::mem::take(&mut findings.report.findings));
        dedup(&mut findings.report.findings);
        findings
    }

    /// Entry `relative` comes next: closes the watched directory if it is
    /// not below it, else adds `bytes` to it.
    fn weigh(&mut self, relative: &[u8], bytes: u64) {
        match &mut self.watched {
            Some(watched) if is_below(relative, &watched.relative) => watched.bytes += bytes,
            Some(_) => self.close_watched(),
            None => {}
        }
    }

    fn close_watched(&mut self) {
        let Some(watched) = self.watched.take() else {
            return;
        };
        let Shape::Size { min_bytes, .. } = self.rules.rules[watched.rule].shape else {
            return;
        };
        if watched.bytes >= min_bytes {
            set_absolute(&mut self.current.absolute, &watched.relative);
            let mut exclude = self.current.absolute.clone();
            exclude.extend_from_slice(b"/*");
            self.push_finding(watched.rule, None, Some(watched.bytes), Some(exclude));
        }
    }

    fn add(&mut self, rule: usize, line: Option<u32>, size: Option<u64>) {
        // A size warning suggests leaving the file out by its path.
        let exclude = size.map(|_| self.current.absolute.clone());
        self.push_finding(rule, line, size, exclude);
    }

    fn push_finding(
        &mut self,
        rule: usize,
        line: Option<u32>,
        size: Option<u64>,
        exclude: Option<Vec<u8>>,
    ) {
        let rule = &self.rules.rules[rule];
        self.findings.push(Finding {
            path: String::from_utf8_lossy(&self.current.absolute).into_owned(),
            rule: rule.id.clone(),
            severity: rule.severity,
            line,
            size,
            suggested_exclude: exclude.map(|e| String::from_utf8_lossy(&e).into_owned()),
        });
    }
}

fn set_absolute(out: &mut Vec<u8>, relative: &[u8]) {
    out.clear();
    out.push(b'/');
    out.extend_from_slice(relative);
}

/// Whether `path` is strictly below directory `dir` (both relative).
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}
