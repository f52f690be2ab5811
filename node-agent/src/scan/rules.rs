//! The scan's rules: `rules.toml` (the only place they are written),
//! parsed and compiled once per process.
//!
//! The file's header says what each field means; this module turns it into
//! matchers: one glob set over every rule's `paths`, one keyword automaton
//! for the content rules that apply to every text file, and a regular
//! expression per content check.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use dcs_protocol::Severity;
use globset::{GlobSet, GlobSetBuilder};
use regex::bytes::Regex;
use serde::Deserialize;

use dcs_protocol::excludes::container_glob;

/// The rules built into the agent.
pub fn built_in() -> &'static RuleSet {
    static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
        RuleSet::parse(include_str!("rules.toml"))
            .unwrap_or_else(|e| panic!("scan/rules.toml is invalid (its unit test says why): {e}"))
    });
    &RULES
}

/// What a rule looks at, from the fields it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `paths` only: the file's being there is the finding.
    Location,
    /// `content`, with `paths` (only those files) or `keywords` (every
    /// text file, lines holding a keyword).
    Content { everywhere: bool },
    /// `paths` and `min_bytes`: a big file, or a directory with many bytes
    /// below it.
    Size { directories: bool, min_bytes: u64 },
}

#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub severity: Severity,
    pub shape: Shape,
    content: Option<Regex>,
    /// The content expression may run on past the keyword's line.
    pub multiline: bool,
    allow: Vec<Regex>,
    pub examples: Vec<Example>,
}

/// One example of a rule, run by the unit tests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub path: String,
    #[serde(default)]
    pub text: Option<String>,
    /// Bytes of a file (or below a directory), for size rules.
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub directory: bool,
    /// The line the finding names (content rules).
    #[serde(default)]
    pub line: Option<u32>,
    #[serde(default = "yes")]
    pub found: bool,
}

fn yes() -> bool {
    true
}

impl Rule {
    /// The position of the first match in `text` that no `allow` pattern
    /// excuses: where its `secret` group starts, else where it starts.
    pub fn find(&self, text: &[u8]) -> Option<usize> {
        let regex = self.content.as_ref()?;
        regex.captures_iter(text).find_map(|captures| {
            let whole = captures.get(0)?;
            let value = captures.name("secret").unwrap_or(whole);
            let excused = self.allow.iter().any(|a| a.is_match(value.as_bytes()));
            (!excused).then_some(value.start())
        })
    }
}

#[derive(Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Every rule's `paths`, in one set; `path_rule[i]` is glob i's rule.
    paths: GlobSet,
    path_rule: Vec<usize>,
    /// Files content rules never read (public documentation).
    skip_content: GlobSet,
    /// Keywords of the content rules that apply everywhere;
    /// `keyword_rules[i]` are the rules of keyword i.
    keywords: AhoCorasick,
    keyword_rules: Vec<Vec<usize>>,
    /// How many rules `keyword_rules` names, each once.
    everywhere: usize,
}

impl RuleSet {
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RuleFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        let mut paths = GlobSetBuilder::new();
        let mut path_rule = Vec::new();
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (index, spec) in file.rule.into_iter().enumerate() {
            let id = spec.id.clone();
            let fail = |reason: String| format!("rule {id}: {reason}");
            if !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                || id.is_empty()
            {
                return Err(fail("ids are lowercase words joined by dashes".into()));
            }
            if rules.iter().any(|r: &Rule| r.id == id) {
                return Err(fail("the id is used twice".into()));
            }
            for pattern in &spec.paths {
                let glob = container_glob(pattern).map_err(|e| fail(e.to_string()))?;
                paths.add(glob);
                path_rule.push(index);
            }
            let shape = spec.shape().map_err(fail)?;
            if let Shape::Content { everywhere: true } = shape {
                for keyword in &spec.keywords {
                    match keywords.iter().position(|k| k == keyword) {
                        Some(i) => keyword_rules[i].push(index),
                        None => {
                            keywords.push(keyword.clone());
                            keyword_rules.push(vec![index]);
                        }
                    }
                }
            }
            let content = spec
                .content
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| fail(e.to_string()))?;
            let allow = spec
                .allow
                .iter()
                .map(|a| Regex::new(a))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(e.to_string()))?;
            rules.push(Rule {
                id: spec.id,
                severity: spec.severity,
                shape,
                content,
                multiline: spec.multiline,
                allow,
                examples: spec.examples,
            });
        }
        let mut skip = GlobSetBuilder::new();
        for pattern in &file.content.skip_paths {
            skip.add(container_glob(pattern).map_err(|e| e.to_string())?);
        }
        // Exact, case-sensitive literals: the token prefixes are.
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&keywords)
            .map_err(|e| e.to_string())?;
        let mut everywhere: Vec<usize> = keyword_rules.iter().flatten().copied().collect();
        everywhere.sort_unstable();
        everywhere.dedup();
        Ok(Self {
            rules,
            paths: paths.build().map_err(|e| e.to_string())?,
            path_rule,
            skip_content: skip.build().map_err(|e| e.to_string())?,
            keywords: automaton,
            keyword_rules,
            everywhere: everywhere.len(),
        })
    }

    /// The rules whose `paths` match this absolute path, each once, into
    /// `out` (cleared first); `scratch` is reused glob-match space.
    pub fn rules_for_path(&self, absolute: &[u8], scratch: &mut Vec<usize>, out: &mut Vec<usize>) {
        out.clear();
        if self.path_rule.is_empty() {
            return;
        }
        self.paths.matches_into(as_path(absolute), scratch);
        out.extend(scratch.iter().map(|&glob| self.path_rule[glob]));
        out.sort_unstable();
        out.dedup();
    }

    /// Whether content rules leave this absolute path alone.
    pub fn skips_content(&self, absolute: &[u8]) -> bool {
        self.skip_content.is_match(as_path(absolute))
    }

    pub fn keywords(&self) -> &AhoCorasick {
        &self.keywords
    }

    /// The rules keyword `pattern` (an automaton pattern id) belongs to.
    pub fn keyword_rules(&self, pattern: usize) -> &[usize] {
        &self.keyword_rules[pattern]
    }

    /// How many rules apply to every text file.
    pub fn everywhere_count(&self) -> usize {
        self.everywhere
    }
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    content: ContentSettings,
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentSettings {
    skip_paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    severity: Severity,
    #[allow(dead_code)] // for readers of the file, and the tests
    description: String,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    multiline: bool,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    min_bytes: Option<u64>,
    #[serde(default)]
    directories: bool,
    #[serde(default)]
    examples: Vec<Example>,
}

impl RuleSpec {
    /// Which of the four shapes the fields make; anything else is refused.
    fn shape(&self) -> Result<Shape, String> {
        let paths = !self.paths.is_empty();
        let keywords = !self.keywords.is_empty();
        match (&self.content, self.min_bytes) {
            (None, Some(min_bytes)) => {
                if !paths || keywords || self.multiline || !self.allow.is_empty() {
                    return Err("a size rule has `paths` and `min_bytes` only".into());
                }
                if self.severity != Severity::Warning {
                    return Err("size rules are warnings".into());
                }
                Ok(Shape::Size {
                    directories: self.directories,
                    min_bytes,
                })
            }
            (None, None) => {
                if !paths || keywords || self.multiline || !self.allow.is_empty() {
                    return Err("a location rule has `paths` only".into());
                }
                Ok(Shape::Location)
            }
            (Some(_), Some(_)) => Err("a rule checks content or size, not both".into()),
            (Some(_), None) => {
                if self.directories {
                    return Err("content rules look at files, not directories".into());
                }
                if !paths && !keywords {
                    return Err("a content rule for every file needs `keywords`".into());
                }
                if paths && keywords {
                    return Err("`paths` or `keywords`, not both".into());
                }
                Ok(Shape::Content { everywhere: !paths })
            }
        }
    }
}
