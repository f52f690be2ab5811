//! `--change` instructions for committing a container into an image.
//!
//! `commit --change 'CMD ["/bin/app"]'` adjusts the new image's config the way
//! a Dockerfile instruction would, without a rebuild. Parsing is kept apart
//! from applying so that bad input is rejected before any work is done, and so
//! both halves can be tested without a container runtime.
//!
//! Where this deliberately differs from Docker:
//! - A CMD/ENTRYPOINT argument that starts with `[` must be a JSON array of
//!   strings. Docker silently falls back to the shell form, which turns a typo
//!   into a container that runs `sh -c '["/bin/app",]'`.
//! - `$VAR` is not expanded (ENV, LABEL, WORKDIR, USER): `$` is literal.
//!   Expansion would depend on the config being changed, so applying the same
//!   change list twice could give different results.
//! - WORKDIR must be absolute, because there is no "previous WORKDIR" in a
//!   single commit that a relative path could sensibly be resolved against.
//! - NUL bytes are rejected in values that end up in `execve` (argv, env,
//!   working directory), since the container could never start.
//! - Error messages and [`describe_changes`] never repeat ENV or LABEL values:
//!   those often hold secrets, and both end up in logs or image history.

use std::borrow::Cow;
use std::collections::HashSet;
use std::str::FromStr;

use serde_json::{Map, Value};

/// One requested change to the image configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Default arguments (`Cmd`); empty clears the field.
    Cmd(Vec<String>),
    /// Executable (`Entrypoint`); empty clears the field.
    Entrypoint(Vec<String>),
    /// Environment variables, set in order.
    Env(Vec<(String, String)>),
    /// Absolute, lexically cleaned working directory.
    Workdir(String),
    /// `name`, `uid`, `uid:gid` or `name:group`.
    User(String),
    /// Labels, merged in order.
    Label(Vec<(String, String)>),
    /// Normalised port specs such as `"8080/tcp"` or `"53/udp"`.
    Expose(Vec<String>),
}

impl ConfigChange {
    /// The Dockerfile keyword for this change, in upper case.
    pub fn instruction(&self) -> &'static str {
        match self {
            Self::Cmd(_) => "CMD",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Env(_) => "ENV",
            Self::Workdir(_) => "WORKDIR",
            Self::User(_) => "USER",
            Self::Label(_) => "LABEL",
            Self::Expose(_) => "EXPOSE",
        }
    }
}

/// Why a `--change` string was rejected.
///
/// Messages name the instruction so the user knows which of several
/// `--change` flags is wrong. They echo names, paths, users and ports, but
/// never ENV or LABEL values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error("--change is empty; expected an instruction such as CMD, ENV or EXPOSE")]
    Empty,
    #[error(
        "unknown instruction {0:?} in --change (supported: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE)"
    )]
    UnknownInstruction(String),
    #[error("{0} in --change needs an argument")]
    MissingArgument(&'static str),
    #[error(
        "{instruction} in --change starts with \"[\" but is not valid JSON ({reason}); use a JSON array of strings such as [\"/bin/app\", \"--flag\"] or the shell form without brackets"
    )]
    InvalidJson {
        instruction: &'static str,
        reason: String,
    },
    #[error("{0} in --change must be a JSON array of strings, such as [\"/bin/app\", \"--flag\"]")]
    NotStringArray(&'static str),
    #[error("{instruction} in --change has an unterminated {quote} quote")]
    UnterminatedQuote {
        instruction: &'static str,
        quote: char,
    },
    #[error("{0} in --change ends with a lone backslash")]
    DanglingEscape(&'static str),
    #[error(
        "{instruction} in --change expects NAME=VALUE pairs, but word {position} has no \"=\" (quote values that contain spaces)"
    )]
    MissingEquals {
        instruction: &'static str,
        /// 1-based; the word itself is not shown as it may be part of a value.
        position: usize,
    },
    #[error("{instruction} in --change names {name:?} but gives no value (use NAME=VALUE)")]
    MissingValue {
        instruction: &'static str,
        name: String,
    },
    #[error("{0} in --change has an empty name")]
    EmptyName(&'static str),
    #[error(
        "ENV in --change has the name {0:?}, but environment variable names cannot contain \"=\""
    )]
    InvalidEnvName(String),
    #[error("{0} in --change contains a NUL byte, which a process cannot receive")]
    NulByte(&'static str),
    #[error("WORKDIR in --change must be an absolute path, but got {0:?}")]
    RelativeWorkdir(String),
    #[error("USER in --change must be NAME, UID, UID:GID or NAME:GROUP, but got {0:?}")]
    InvalidUser(String),
    #[error("EXPOSE in --change has an invalid port {spec:?}: {reason}")]
    InvalidPort { spec: String, reason: &'static str },
    #[error(
        "LABEL in --change may not set {0:?}: labels under {RESERVED_LABEL_PREFIX} belong to the service"
    )]
    ReservedLabel(String),
}

/// Label keys the service itself gives meaning to (`dcs.io/owner`). An
/// image carrying one would hand every desktop started from it to whoever
/// wrote it, since containerd copies image labels into containers.
pub const RESERVED_LABEL_PREFIX: &str = "dcs.io/";

type Parser = fn(&str) -> Result<ConfigChange, ChangeError>;

/// Supported keywords; the order matches the list in the
/// [`ChangeError::UnknownInstruction`] message.
const PARSERS: [(&str, Parser); 7] = [
    ("CMD", parse_cmd),
    ("ENTRYPOINT", parse_entrypoint),
    ("ENV", parse_env),
    ("WORKDIR", parse_workdir),
    ("USER", parse_user),
    ("LABEL", parse_label),
    ("EXPOSE", parse_expose),
];

impl FromStr for ConfigChange {
    type Err = ChangeError;

    /// Parses one `--change` value, e.g. `ENV PATH=/usr/bin:/bin`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ChangeError::Empty);
        }
        let (keyword, arg) = match s.find(char::is_whitespace) {
            Some(i) => (&s[..i], s[i..].trim_start()),
            None => (s, ""),
        };
        let Some(&(instruction, parse)) = PARSERS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(keyword))
        else {
            return Err(ChangeError::UnknownInstruction(keyword.to_owned()));
        };
        if arg.is_empty() {
            return Err(ChangeError::MissingArgument(instruction));
        }
        parse(arg)
    }
}

fn parse_cmd(arg: &str) -> Result<ConfigChange, ChangeError> {
    parse_argv("CMD", arg).map(ConfigChange::Cmd)
}

fn parse_entrypoint(arg: &str) -> Result<ConfigChange, ChangeError> {
    parse_argv("ENTRYPOINT", arg).map(ConfigChange::Entrypoint)
}

/// Exec form (`["a","b"]`) or shell form (`echo hi` -> `/bin/sh -c 'echo hi'`).
/// The shell form is passed to the shell untouched, as Docker does.
fn parse_argv(instruction: &'static str, arg: &str) -> Result<Vec<String>, ChangeError> {
    let argv = if arg.starts_with('[') {
        let value: Value = serde_json::from_str(arg).map_err(|e| ChangeError::InvalidJson {
            instruction,
            reason: e.to_string(),
        })?;
        let Value::Array(items) = value else {
            return Err(ChangeError::NotStringArray(instruction));
        };
        items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(ChangeError::NotStringArray(instruction)),
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec!["/bin/sh".to_owned(), "-c".to_owned(), arg.to_owned()]
    };
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ChangeError::NulByte(instruction));
    }
    Ok(argv)
}

fn parse_env(arg: &str) -> Result<ConfigChange, ChangeError> {
    let pairs = parse_pairs("ENV", arg)?;
    for (name, value) in &pairs {
        if name.contains('\0') || value.contains('\0') {
            return Err(ChangeError::NulByte("ENV"));
        }
        if name.contains('=') {
            return Err(ChangeError::InvalidEnvName(name.clone()));
        }
    }
    Ok(ConfigChange::Env(pairs))
}

fn parse_label(arg: &str) -> Result<ConfigChange, ChangeError> {
    let pairs = parse_pairs("LABEL", arg)?;
    if let Some((name, _)) = pairs.iter().find(|(name, _)| {
        name.get(..RESERVED_LABEL_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_LABEL_PREFIX))
    }) {
        return Err(ChangeError::ReservedLabel(name.clone()));
    }
    Ok(ConfigChange::Label(pairs))
}

/// `NAME=VALUE [NAME2="v 2" ...]`, or Docker's legacy `NAME VALUE WITH SPACES`
/// when the first word has no unquoted `=`. Names and values are unquoted.
fn parse_pairs(instruction: &'static str, arg: &str) -> Result<Vec<(String, String)>, ChangeError> {
    let mut lexer = Lexer::new(instruction, arg);
    let first = lexer.word(true)?;
    let Some(eq) = first.eq else {
        // Legacy form: the rest of the line, spaces included, is the value.
        if first.text.is_empty() {
            return Err(ChangeError::EmptyName(instruction));
        }
        lexer.skip_whitespace();
        if lexer.at_end() {
            return Err(ChangeError::MissingValue {
                instruction,
                name: first.text,
            });
        }
        let value = lexer.word(false)?.text;
        return Ok(vec![(first.text, value)]);
    };
    let mut pairs = vec![split_pair(instruction, first.text, eq)?];
    loop {
        lexer.skip_whitespace();
        if lexer.at_end() {
            return Ok(pairs);
        }
        let word = lexer.word(true)?;
        let Some(eq) = word.eq else {
            return Err(ChangeError::MissingEquals {
                instruction,
                position: pairs.len() + 1,
            });
        };
        pairs.push(split_pair(instruction, word.text, eq)?);
    }
}

fn split_pair(
    instruction: &'static str,
    mut text: String,
    eq: usize,
) -> Result<(String, String), ChangeError> {
    if eq == 0 {
        return Err(ChangeError::EmptyName(instruction));
    }
    let value = text.split_off(eq + 1);
    text.truncate(eq);
    Ok((text, value))
}

fn parse_workdir(arg: &str) -> Result<ConfigChange, ChangeError> {
    let path = Lexer::new("WORKDIR", arg).word(false)?.text;
    if path.contains('\0') {
        return Err(ChangeError::NulByte("WORKDIR"));
    }
    if !path.starts_with('/') {
        return Err(ChangeError::RelativeWorkdir(path));
    }
    Ok(ConfigChange::Workdir(clean_absolute_path(&path)))
}

/// Lexical clean-up like Go's `filepath.Clean`, which Docker applies to
/// WORKDIR, so `/app/` and `/app` give the same config.
fn clean_absolute_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parse_user(arg: &str) -> Result<ConfigChange, ChangeError> {
    let user = Lexer::new("USER", arg).word(false)?.text;
    let valid = user.split(':').count() <= 2 && user.split(':').all(valid_user_part);
    if !valid {
        return Err(ChangeError::InvalidUser(user));
    }
    Ok(ConfigChange::User(user))
}

/// A user or group name or numeric id. Names are otherwise left to the
/// image's passwd/group files, which differ between distributions.
fn valid_user_part(part: &str) -> bool {
    let numeric = part.bytes().all(|b| b.is_ascii_digit());
    !part.is_empty()
        && !part.chars().any(|c| c.is_whitespace() || c.is_control())
        && (!numeric || part.parse::<u32>().is_ok())
}

fn parse_expose(arg: &str) -> Result<ConfigChange, ChangeError> {
    let mut lexer = Lexer::new("EXPOSE", arg);
    let mut ports = Vec::new();
    loop {
        lexer.skip_whitespace();
        if lexer.at_end() {
            break;
        }
        expand_port_spec(&lexer.word(true)?.text, &mut ports)?;
    }
    let mut seen = HashSet::new();
    ports.retain(|p| seen.insert(p.clone()));
    Ok(ConfigChange::Expose(ports))
}

/// `port[/proto]` or `start-end[/proto]`, appending normalised entries.
fn expand_port_spec(spec: &str, out: &mut Vec<String>) -> Result<(), ChangeError> {
    let invalid = |reason| ChangeError::InvalidPort {
        spec: spec.to_owned(),
        reason,
    };
    if spec.contains(':') {
        return Err(invalid(
            "EXPOSE takes container ports only; publish host ports when running the image",
        ));
    }
    let (range, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid("the protocol must be tcp, udp or sctp"));
    }
    let (start, end) = match range.split_once('-') {
        Some((start, end)) => (parse_port(start), parse_port(end)),
        None => (parse_port(range), parse_port(range)),
    };
    let (start, end) = (start.map_err(invalid)?, end.map_err(invalid)?);
    if start > end {
        return Err(invalid("the range starts above its end"));
    }
    out.extend((start..=end).map(|port| format!("{port}/{proto}")));
    Ok(())
}

fn parse_port(s: &str) -> Result<u16, &'static str> {
    const RANGE: &str = "ports must be numbers from 1 to 65535";
    if s.is_empty() {
        return Err("a port number is missing");
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RANGE);
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(RANGE),
        Ok(port) => Ok(port),
    }
}

/// A word after quote removal, with the byte offset in `text` of its first
/// `=` that was neither quoted nor escaped (the NAME=VALUE separator).
struct Word {
    text: String,
    eq: Option<usize>,
}

/// Shell-like quote removal as Docker does it: `\x` outside quotes is `x`;
/// `'...'` is literal; inside `"..."` only `\"`, `\\` and `\$` are escapes
/// and any other backslash is kept. Adjacent pieces join into one word.
struct Lexer<'a> {
    instruction: &'static str,
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl<'a> Lexer<'a> {
    fn new(instruction: &'static str, input: &'a str) -> Self {
        Self {
            instruction,
            chars: input.chars().peekable(),
        }
    }

    fn skip_whitespace(&mut self) {
        while self.chars.next_if(|c| c.is_whitespace()).is_some() {}
    }

    fn at_end(&mut self) -> bool {
        self.chars.peek().is_none()
    }

    /// Reads one word; with `split` false, reads to the end of the input and
    /// keeps unquoted whitespace, as Docker does for legacy ENV values.
    fn word(&mut self, split: bool) -> Result<Word, ChangeError> {
        let mut text = String::new();
        let mut eq = None;
        while let Some(c) = self.chars.next_if(|c| !(split && c.is_whitespace())) {
            match c {
                '\\' => match self.chars.next() {
                    Some(next) => text.push(next),
                    None => return Err(ChangeError::DanglingEscape(self.instruction)),
                },
                '\'' => loop {
                    match self.chars.next() {
                        Some('\'') => break,
                        Some(next) => text.push(next),
                        None => return Err(self.unterminated('\'')),
                    }
                },
                '"' => loop {
                    match self.chars.next() {
                        Some('"') => break,
                        Some('\\') => match self.chars.next() {
                            Some(next @ ('"' | '\\' | '$')) => text.push(next),
                            Some(next) => {
                                text.push('\\');
                                text.push(next);
                            }
                            None => return Err(self.unterminated('"')),
                        },
                        Some(next) => text.push(next),
                        None => return Err(self.unterminated('"')),
                    }
                },
                '=' if eq.is_none() => {
                    eq = Some(text.len());
                    text.push('=');
                }
                _ => text.push(c),
            }
        }
        Ok(Word { text, eq })
    }

    fn unterminated(&self, quote: char) -> ChangeError {
        ChangeError::UnterminatedQuote {
            instruction: self.instruction,
            quote,
        }
    }
}

/// Applies the changes, in order, to the `config` object of an OCI image
/// config (the object under the top-level `"config"` key), creating keys as
/// needed.
///
/// A value that is not an object (usually `null`) is replaced by one, and so
/// are `Env`, `Labels` and `ExposedPorts` fields of the wrong type, because
/// base images commonly carry `"Labels": null` and the like. Applying the same
/// list twice gives the same result as applying it once.
pub fn apply_changes(config: &mut Value, changes: &[ConfigChange]) {
    // Docker rule: an ENTRYPOINT in a Dockerfile discards the CMD inherited
    // from the base image, because the old CMD was written as arguments for
    // the old entrypoint. A CMD set in the same Dockerfile survives, whether
    // it comes before or after the ENTRYPOINT. Here the change list plays the
    // part of the Dockerfile: an ENTRYPOINT change removes Cmd unless the list
    // also has a CMD change.
    let sets_cmd = changes.iter().any(|c| matches!(c, ConfigChange::Cmd(_)));
    let config = ensure_object(config);
    for change in changes {
        match change {
            ConfigChange::Cmd(argv) => set_argv(config, "Cmd", argv),
            ConfigChange::Entrypoint(argv) => {
                set_argv(config, "Entrypoint", argv);
                if !sets_cmd {
                    config.shift_remove("Cmd");
                }
            }
            ConfigChange::Env(pairs) => {
                let env = ensure_array(config.entry("Env").or_insert(Value::Null));
                for (name, value) in pairs {
                    set_env(env, name, value);
                }
            }
            ConfigChange::Workdir(dir) => {
                config.insert("WorkingDir".to_owned(), Value::from(dir.as_str()));
            }
            ConfigChange::User(user) => {
                config.insert("User".to_owned(), Value::from(user.as_str()));
            }
            ConfigChange::Label(pairs) => {
                let labels = ensure_object(config.entry("Labels").or_insert(Value::Null));
                for (name, value) in pairs {
                    labels.insert(name.clone(), Value::from(value.as_str()));
                }
            }
            ConfigChange::Expose(ports) => {
                let exposed = ensure_object(config.entry("ExposedPorts").or_insert(Value::Null));
                for port in ports {
                    exposed
                        .entry(port.as_str())
                        .or_insert_with(|| Value::Object(Map::new()));
                }
            }
        }
    }
}

/// An empty argv removes the field rather than storing `[]`, matching how
/// OCI configs omit unset Cmd/Entrypoint.
fn set_argv(config: &mut Map<String, Value>, key: &str, argv: &[String]) {
    if argv.is_empty() {
        config.shift_remove(key);
    } else {
        config.insert(key.to_owned(), Value::from(argv.to_vec()));
    }
}

/// Replaces the first `NAME=...` entry in place (keeping the order users see
/// in `inspect`) and drops later duplicates; appends if there is none.
/// Entries that are not strings are left alone.
fn set_env(env: &mut Vec<Value>, name: &str, value: &str) {
    let entry = format!("{name}={value}");
    let mut found = false;
    env.retain_mut(|item| {
        let Some(existing) = item.as_str() else {
            return true;
        };
        let existing_name = existing.split_once('=').map_or(existing, |(n, _)| n);
        if existing_name != name {
            return true;
        }
        if found {
            return false;
        }
        found = true;
        *item = Value::from(entry.as_str());
        true
    });
    if !found {
        env.push(Value::from(entry));
    }
}

fn ensure_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("value was just made an object"),
    }
}

fn ensure_array(value: &mut Value) -> &mut Vec<Value> {
    if !value.is_array() {
        *value = Value::Array(Vec::new());
    }
    match value {
        Value::Array(items) => items,
        _ => unreachable!("value was just made an array"),
    }
}

/// A short description naming what changed but never the values (values can
/// hold secrets), for the image history: e.g. `CMD, ENV PATH HOME, LABEL a`.
///
/// Only ENV and LABEL name their keys; every other instruction is named by
/// its keyword alone. Keys with unusual characters are quoted so a crafted
/// key cannot forge extra entries or lines in the history.
pub fn describe_changes(changes: &[ConfigChange]) -> String {
    changes
        .iter()
        .map(|change| {
            let mut out = change.instruction().to_owned();
            if let ConfigChange::Env(pairs) | ConfigChange::Label(pairs) = change {
                let mut seen = HashSet::new();
                for (name, _) in pairs {
                    if seen.insert(name.as_str()) {
                        out.push(' ');
                        out.push_str(&display_name(name));
                    }
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn display_name(name: &str) -> Cow<'_, str> {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    if plain {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<ConfigChange, ChangeError> {
        s.parse()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn applied(config: Value, changes: &[&str]) -> Value {
        let changes: Vec<ConfigChange> = changes.iter().map(|c| parse(c).unwrap()).collect();
        let mut config = config;
        apply_changes(&mut config, &changes);
        config
    }

    // ---- instruction keyword ----

    #[test]
    fn keyword_is_case_insensitive_and_whitespace_is_trimmed() {
        let expected = ConfigChange::Cmd(strings(&["/bin/sh", "-c", "echo hi"]));
        assert_eq!(parse("CMD echo hi"), Ok(expected.clone()));
        assert_eq!(parse("  cmd   echo hi \n"), Ok(expected.clone()));
        assert_eq!(parse("Cmd\techo hi"), Ok(expected));
        assert_eq!(
            parse("workdir /app"),
            Ok(ConfigChange::Workdir("/app".into()))
        );
    }

    #[test]
    fn empty_change_is_an_error() {
        assert_eq!(parse(""), Err(ChangeError::Empty));
        assert_eq!(parse(" \t\n"), Err(ChangeError::Empty));
    }

    #[test]
    fn unknown_instruction_is_an_error_with_supported_list() {
        let err = parse("RUN apt-get update").unwrap_err();
        assert_eq!(err, ChangeError::UnknownInstruction("RUN".into()));
        assert_eq!(
            err.to_string(),
            r#"unknown instruction "RUN" in --change (supported: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE)"#
        );
        // No space between keyword and JSON: like Docker, not a CMD.
        assert_eq!(
            parse(r#"CMD["a"]"#),
            Err(ChangeError::UnknownInstruction(r#"CMD["a"]"#.into()))
        );
    }

    #[test]
    fn supported_list_in_message_matches_parsers() {
        let names: Vec<&str> = PARSERS.iter().map(|(name, _)| *name).collect();
        let message = ChangeError::UnknownInstruction("X".into()).to_string();
        assert!(message.contains(&format!("(supported: {})", names.join(", "))));
    }

    #[test]
    fn every_instruction_needs_an_argument() {
        for (name, _) in PARSERS {
            for input in [name.to_owned(), format!("  {}   ", name.to_lowercase())] {
                assert_eq!(parse(&input), Err(ChangeError::MissingArgument(name)));
            }
        }
        assert_eq!(
            ChangeError::MissingArgument("USER").to_string(),
            "USER in --change needs an argument"
        );
    }

    #[test]
    fn instruction_names_match_keywords() {
        let cases = [
            ("CMD a", "CMD"),
            ("ENTRYPOINT a", "ENTRYPOINT"),
            ("ENV A=1", "ENV"),
            ("WORKDIR /", "WORKDIR"),
            ("USER root", "USER"),
            ("LABEL a=b", "LABEL"),
            ("EXPOSE 80", "EXPOSE"),
        ];
        for (input, name) in cases {
            assert_eq!(parse(input).unwrap().instruction(), name);
        }
    }

    // ---- CMD / ENTRYPOINT ----

    #[test]
    fn cmd_json_form() {
        assert_eq!(
            parse(r#"CMD ["/bin/app", "--x", "a b"]"#),
            Ok(ConfigChange::Cmd(strings(&["/bin/app", "--x", "a b"])))
        );
        assert_eq!(
            parse(r#"CMD ["\u00e9\n", "\"q\""]"#),
            Ok(ConfigChange::Cmd(strings(&["é\n", "\"q\""])))
        );
    }

    #[test]
    fn cmd_shell_form_is_passed_to_sh_untouched() {
        assert_eq!(
            parse(r#"CMD echo "$HOME"  'x' \n"#),
            Ok(ConfigChange::Cmd(strings(&[
                "/bin/sh",
                "-c",
                r#"echo "$HOME"  'x' \n"#
            ])))
        );
        // Only a leading '[' selects the JSON form.
        assert_eq!(
            parse(r#"CMD {"a": 1}"#),
            Ok(ConfigChange::Cmd(strings(&[
                "/bin/sh",
                "-c",
                r#"{"a": 1}"#
            ])))
        );
    }

    #[test]
    fn cmd_empty_array_is_allowed() {
        assert_eq!(parse("CMD []"), Ok(ConfigChange::Cmd(vec![])));
        assert_eq!(
            parse("ENTRYPOINT [ ]"),
            Ok(ConfigChange::Entrypoint(vec![]))
        );
    }

    #[test]
    fn entrypoint_json_and_shell_form() {
        assert_eq!(
            parse(r#"ENTRYPOINT ["/entry.sh"]"#),
            Ok(ConfigChange::Entrypoint(strings(&["/entry.sh"])))
        );
        assert_eq!(
            parse("entrypoint exec /entry.sh"),
            Ok(ConfigChange::Entrypoint(strings(&[
                "/bin/sh",
                "-c",
                "exec /entry.sh"
            ])))
        );
    }

    #[test]
    fn cmd_invalid_json_is_an_error() {
        for input in [
            r#"CMD ["a""#,
            r#"CMD ["a",]"#,
            r#"CMD ["a"] extra"#,
            "CMD [a]",
        ] {
            match parse(input) {
                Err(ChangeError::InvalidJson { instruction, .. }) => assert_eq!(instruction, "CMD"),
                other => panic!("{input}: {other:?}"),
            }
        }
        let message = parse(r#"ENTRYPOINT ["a""#).unwrap_err().to_string();
        assert!(
            message.starts_with("ENTRYPOINT in --change starts with \"[\" but is not valid JSON (")
        );
    }

    #[test]
    fn cmd_json_must_be_array_of_strings() {
        for input in [
            r#"CMD [1]"#,
            r#"CMD ["a", null]"#,
            r#"CMD [["a"]]"#,
            r#"CMD ["a", {}]"#,
        ] {
            assert_eq!(
                parse(input),
                Err(ChangeError::NotStringArray("CMD")),
                "{input}"
            );
        }
        assert_eq!(
            parse(r#"ENTRYPOINT [true]"#),
            Err(ChangeError::NotStringArray("ENTRYPOINT"))
        );
        assert_eq!(
            ChangeError::NotStringArray("CMD").to_string(),
            r#"CMD in --change must be a JSON array of strings, such as ["/bin/app", "--flag"]"#
        );
    }

    #[test]
    fn cmd_nul_byte_is_an_error() {
        assert_eq!(
            parse(r#"CMD ["a\u0000b"]"#),
            Err(ChangeError::NulByte("CMD"))
        );
        assert_eq!(
            parse("ENTRYPOINT a\0b"),
            Err(ChangeError::NulByte("ENTRYPOINT"))
        );
    }

    // ---- ENV / LABEL ----

    #[test]
    fn env_single_and_multiple_pairs() {
        assert_eq!(
            parse("ENV PATH=/usr/bin:/bin"),
            Ok(ConfigChange::Env(pairs(&[("PATH", "/usr/bin:/bin")])))
        );
        assert_eq!(
            parse("ENV A=1   B=2\tC=3"),
            Ok(ConfigChange::Env(pairs(&[
                ("A", "1"),
                ("B", "2"),
                ("C", "3")
            ])))
        );
    }

    #[test]
    fn env_values_may_be_empty_or_contain_equals() {
        assert_eq!(
            parse(r#"ENV A= B="" C=x=y"#),
            Ok(ConfigChange::Env(pairs(&[
                ("A", ""),
                ("B", ""),
                ("C", "x=y")
            ])))
        );
    }

    #[test]
    fn env_double_quotes_and_escapes() {
        assert_eq!(
            parse(r#"ENV MSG="hello \"world\" \\ \$HOME \n" X=a\ b"#),
            Ok(ConfigChange::Env(pairs(&[
                ("MSG", r#"hello "world" \ $HOME \n"#),
                ("X", "a b")
            ])))
        );
    }

    #[test]
    fn env_single_quotes_are_literal_and_pieces_join() {
        assert_eq!(
            parse(r#"ENV A='x "y" \z' B='it'\''s'"#),
            Ok(ConfigChange::Env(pairs(&[
                ("A", r#"x "y" \z"#),
                ("B", "it's")
            ])))
        );
        assert_eq!(
            parse(r#"ENV A=pre"mid dle"'post'"#),
            Ok(ConfigChange::Env(pairs(&[("A", "premid dlepost")])))
        );
    }

    #[test]
    fn env_dollar_is_not_expanded() {
        assert_eq!(
            parse("ENV PATH=/opt/bin:$PATH"),
            Ok(ConfigChange::Env(pairs(&[("PATH", "/opt/bin:$PATH")])))
        );
    }

    #[test]
    fn env_legacy_form() {
        assert_eq!(
            parse("ENV GREETING hello   big world"),
            Ok(ConfigChange::Env(pairs(&[(
                "GREETING",
                "hello   big world"
            )])))
        );
        assert_eq!(
            parse(r#"ENV A "quoted value" x=y"#),
            Ok(ConfigChange::Env(pairs(&[("A", "quoted value x=y")])))
        );
        assert_eq!(
            parse(r#"ENV A """#),
            Ok(ConfigChange::Env(pairs(&[("A", "")])))
        );
    }

    #[test]
    fn env_missing_value_in_legacy_form() {
        assert_eq!(
            parse("ENV FOO"),
            Err(ChangeError::MissingValue {
                instruction: "ENV",
                name: "FOO".into()
            })
        );
        assert_eq!(
            parse("ENV FOO").unwrap_err().to_string(),
            r#"ENV in --change names "FOO" but gives no value (use NAME=VALUE)"#
        );
    }

    #[test]
    fn env_missing_equals_does_not_echo_the_word() {
        let err = parse("ENV PASSWORD=hunter2 s3cret").unwrap_err();
        assert_eq!(
            err,
            ChangeError::MissingEquals {
                instruction: "ENV",
                position: 2
            }
        );
        let message = err.to_string();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(
            message,
            r#"ENV in --change expects NAME=VALUE pairs, but word 2 has no "=" (quote values that contain spaces)"#
        );
    }

    #[test]
    fn env_empty_name_is_an_error() {
        assert_eq!(parse("ENV =x"), Err(ChangeError::EmptyName("ENV")));
        assert_eq!(parse("ENV A=1 =x"), Err(ChangeError::EmptyName("ENV")));
        assert_eq!(parse(r#"ENV "" x"#), Err(ChangeError::EmptyName("ENV")));
        assert_eq!(parse(r#"ENV ""=x"#), Err(ChangeError::EmptyName("ENV")));
    }

    #[test]
    fn env_name_with_equals_is_an_error() {
        assert_eq!(
            parse(r#"ENV "A=B"=c"#),
            Err(ChangeError::InvalidEnvName("A=B".into()))
        );
        assert_eq!(
            parse(r"ENV A\=B=c"),
            Err(ChangeError::InvalidEnvName("A=B".into()))
        );
    }

    #[test]
    fn env_quote_errors() {
        assert_eq!(
            parse(r#"ENV A="open"#),
            Err(ChangeError::UnterminatedQuote {
                instruction: "ENV",
                quote: '"'
            })
        );
        assert_eq!(
            parse(r#"ENV A="open\""#),
            Err(ChangeError::UnterminatedQuote {
                instruction: "ENV",
                quote: '"'
            })
        );
        assert_eq!(
            parse("ENV A='open"),
            Err(ChangeError::UnterminatedQuote {
                instruction: "ENV",
                quote: '\''
            })
        );
        assert_eq!(parse(r"ENV A=b\"), Err(ChangeError::DanglingEscape("ENV")));
        assert_eq!(
            parse("ENV A='x").unwrap_err().to_string(),
            "ENV in --change has an unterminated ' quote"
        );
    }

    #[test]
    fn env_nul_byte_is_an_error() {
        assert_eq!(parse("ENV A=x\0y"), Err(ChangeError::NulByte("ENV")));
        assert_eq!(parse("ENV A\0B=x"), Err(ChangeError::NulByte("ENV")));
    }

    #[test]
    fn label_pairs_with_quoted_keys() {
        assert_eq!(
            parse(r#"LABEL a=b "my key"="my value" org.opencontainers.image.title='T x'"#),
            Ok(ConfigChange::Label(pairs(&[
                ("a", "b"),
                ("my key", "my value"),
                ("org.opencontainers.image.title", "T x")
            ])))
        );
        // Label keys may contain '=' when quoted; only ENV names may not.
        assert_eq!(
            parse(r#"LABEL "a=b"=c"#),
            Ok(ConfigChange::Label(pairs(&[("a=b", "c")])))
        );
        // Labels may contain NUL: they are only JSON strings.
        assert_eq!(
            parse("LABEL a=x\0y"),
            Ok(ConfigChange::Label(pairs(&[("a", "x\0y")])))
        );
    }

    #[test]
    fn label_legacy_form() {
        assert_eq!(
            parse("LABEL maintainer Jane Doe"),
            Ok(ConfigChange::Label(pairs(&[("maintainer", "Jane Doe")])))
        );
    }

    #[test]
    fn label_errors() {
        assert_eq!(parse("LABEL =x"), Err(ChangeError::EmptyName("LABEL")));
        assert_eq!(
            parse("LABEL a=1 dcs.io/owner=mallory"),
            Err(ChangeError::ReservedLabel("dcs.io/owner".into()))
        );
        assert_eq!(
            parse(r#"LABEL "DCS.IO/Owner"=x"#),
            Err(ChangeError::ReservedLabel("DCS.IO/Owner".into()))
        );
        assert!(parse("LABEL dcs.iox=1 io.dcs/owner=2").is_ok());
        assert_eq!(
            parse("LABEL a=1 b"),
            Err(ChangeError::MissingEquals {
                instruction: "LABEL",
                position: 2
            })
        );
        assert_eq!(
            parse("LABEL a"),
            Err(ChangeError::MissingValue {
                instruction: "LABEL",
                name: "a".into()
            })
        );
        assert_eq!(
            parse(r#"LABEL a="x"#),
            Err(ChangeError::UnterminatedQuote {
                instruction: "LABEL",
                quote: '"'
            })
        );
    }

    // ---- WORKDIR ----

    #[test]
    fn workdir_absolute_and_cleaned() {
        assert_eq!(
            parse("WORKDIR /app"),
            Ok(ConfigChange::Workdir("/app".into()))
        );
        assert_eq!(
            parse("WORKDIR //srv/./app/../www/"),
            Ok(ConfigChange::Workdir("/srv/www".into()))
        );
        assert_eq!(parse("WORKDIR /.."), Ok(ConfigChange::Workdir("/".into())));
        assert_eq!(
            parse(r#"WORKDIR "/my dir""#),
            Ok(ConfigChange::Workdir("/my dir".into()))
        );
        assert_eq!(
            parse("WORKDIR /my  dir"),
            Ok(ConfigChange::Workdir("/my  dir".into()))
        );
    }

    #[test]
    fn workdir_relative_is_an_error() {
        assert_eq!(
            parse("WORKDIR app"),
            Err(ChangeError::RelativeWorkdir("app".into()))
        );
        assert_eq!(
            parse("WORKDIR ./app"),
            Err(ChangeError::RelativeWorkdir("./app".into()))
        );
        assert_eq!(
            parse("WORKDIR app").unwrap_err().to_string(),
            r#"WORKDIR in --change must be an absolute path, but got "app""#
        );
    }

    #[test]
    fn workdir_nul_and_quote_errors() {
        assert_eq!(parse("WORKDIR /a\0b"), Err(ChangeError::NulByte("WORKDIR")));
        assert_eq!(
            parse(r#"WORKDIR "/a"#),
            Err(ChangeError::UnterminatedQuote {
                instruction: "WORKDIR",
                quote: '"'
            })
        );
    }

    // ---- USER ----

    #[test]
    fn user_forms() {
        for user in [
            "app",
            "1000",
            "1000:1000",
            "app:staff",
            "app:1000",
            "www-data",
        ] {
            assert_eq!(
                parse(&format!("USER {user}")),
                Ok(ConfigChange::User(user.into()))
            );
        }
        assert_eq!(parse(r#"USER "app""#), Ok(ConfigChange::User("app".into())));
    }

    #[test]
    fn user_invalid_forms() {
        for user in [
            "a:b:c",
            ":g",
            "u:",
            "a b",
            "4294967296",
            "1:4294967296",
            "a\0b",
            "''",
        ] {
            let err = parse(&format!("USER {user}")).unwrap_err();
            assert!(
                matches!(err, ChangeError::InvalidUser(_)),
                "{user}: {err:?}"
            );
        }
        assert_eq!(
            parse("USER a:b:c").unwrap_err().to_string(),
            r#"USER in --change must be NAME, UID, UID:GID or NAME:GROUP, but got "a:b:c""#
        );
    }

    // ---- EXPOSE ----

    #[test]
    fn expose_ports_and_protocols() {
        assert_eq!(
            parse("EXPOSE 8080"),
            Ok(ConfigChange::Expose(strings(&["8080/tcp"])))
        );
        assert_eq!(
            parse("EXPOSE 53/udp 80/TCP 9/Sctp 65535 1"),
            Ok(ConfigChange::Expose(strings(&[
                "53/udp",
                "80/tcp",
                "9/sctp",
                "65535/tcp",
                "1/tcp"
            ])))
        );
        assert_eq!(
            parse(r#"EXPOSE "8080""#),
            Ok(ConfigChange::Expose(strings(&["8080/tcp"])))
        );
    }

    #[test]
    fn expose_ranges_expand_and_duplicates_are_dropped() {
        assert_eq!(
            parse("EXPOSE 8000-8002/udp 8001/udp 80 80/tcp 7-7"),
            Ok(ConfigChange::Expose(strings(&[
                "8000/udp", "8001/udp", "8002/udp", "80/tcp", "7/tcp"
            ])))
        );
        match parse("EXPOSE 1-65535") {
            Ok(ConfigChange::Expose(ports)) => assert_eq!(ports.len(), 65535),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expose_invalid_ports() {
        let cases = [
            ("0", "ports must be numbers from 1 to 65535"),
            ("65536", "ports must be numbers from 1 to 65535"),
            (
                "99999999999999999999",
                "ports must be numbers from 1 to 65535",
            ),
            ("http", "ports must be numbers from 1 to 65535"),
            ("+80", "ports must be numbers from 1 to 65535"),
            ("80/http", "the protocol must be tcp, udp or sctp"),
            ("80/", "the protocol must be tcp, udp or sctp"),
            ("80/tcp/udp", "the protocol must be tcp, udp or sctp"),
            ("81-80", "the range starts above its end"),
            ("80-", "a port number is missing"),
            ("-80", "a port number is missing"),
            ("/tcp", "a port number is missing"),
            ("1-2-3", "ports must be numbers from 1 to 65535"),
            (
                "8080:80",
                "EXPOSE takes container ports only; publish host ports when running the image",
            ),
        ];
        for (spec, reason) in cases {
            assert_eq!(
                parse(&format!("EXPOSE 80 {spec}")),
                Err(ChangeError::InvalidPort {
                    spec: spec.into(),
                    reason
                }),
                "{spec}"
            );
        }
        assert_eq!(
            parse(r#"EXPOSE """#),
            Err(ChangeError::InvalidPort {
                spec: String::new(),
                reason: "a port number is missing"
            })
        );
        assert_eq!(
            parse("EXPOSE 0").unwrap_err().to_string(),
            r#"EXPOSE in --change has an invalid port "0": ports must be numbers from 1 to 65535"#
        );
    }

    // ---- apply_changes ----

    #[test]
    fn apply_to_null_creates_object() {
        let config = applied(
            Value::Null,
            &[
                r#"CMD ["/bin/app"]"#,
                "ENV A=1",
                "WORKDIR /app",
                "USER app",
                "LABEL k=v",
                "EXPOSE 80",
            ],
        );
        assert_eq!(
            config,
            json!({
                "Cmd": ["/bin/app"],
                "Env": ["A=1"],
                "WorkingDir": "/app",
                "User": "app",
                "Labels": {"k": "v"},
                "ExposedPorts": {"80/tcp": {}},
            })
        );
    }

    #[test]
    fn apply_replaces_non_object_config_and_mistyped_fields() {
        assert_eq!(applied(json!(42), &["USER a"]), json!({"User": "a"}));
        let config = applied(
            json!({"Env": null, "Labels": "bad", "ExposedPorts": null}),
            &["ENV A=1", "LABEL a=b", "EXPOSE 1"],
        );
        assert_eq!(
            config,
            json!({"Env": ["A=1"], "Labels": {"a": "b"}, "ExposedPorts": {"1/tcp": {}}})
        );
    }

    #[test]
    fn apply_keeps_unrelated_fields() {
        let base = json!({"Hostname": "", "StopSignal": "SIGTERM", "Cmd": ["old"]});
        let config = applied(base, &[r#"CMD ["new"]"#]);
        assert_eq!(
            config,
            json!({"Hostname": "", "StopSignal": "SIGTERM", "Cmd": ["new"]})
        );
    }

    #[test]
    fn apply_cmd_shell_form_and_clear() {
        let config = applied(json!({"Cmd": ["old"]}), &["CMD echo hi"]);
        assert_eq!(config, json!({"Cmd": ["/bin/sh", "-c", "echo hi"]}));
        let config = applied(json!({"Cmd": ["old"], "User": "x"}), &["CMD []"]);
        assert_eq!(config, json!({"User": "x"}));
    }

    #[test]
    fn apply_later_change_wins() {
        let config = applied(
            Value::Null,
            &["CMD [\"a\"]", "CMD [\"b\"]", "USER x", "USER y"],
        );
        assert_eq!(config, json!({"Cmd": ["b"], "User": "y"}));
    }

    #[test]
    fn apply_entrypoint_clears_inherited_cmd() {
        let base = json!({"Entrypoint": ["/old"], "Cmd": ["--old-flag"]});
        let config = applied(base.clone(), &[r#"ENTRYPOINT ["/new"]"#]);
        assert_eq!(config, json!({"Entrypoint": ["/new"]}));
        let config = applied(base, &["ENTRYPOINT []"]);
        assert_eq!(config, json!({}));
    }

    #[test]
    fn apply_entrypoint_keeps_cmd_from_same_list_in_either_order() {
        let base = json!({"Cmd": ["--old-flag"]});
        let expected = json!({"Cmd": ["--new"], "Entrypoint": ["/new"]});
        let config = applied(
            base.clone(),
            &[r#"CMD ["--new"]"#, r#"ENTRYPOINT ["/new"]"#],
        );
        assert_eq!(config, expected);
        let config = applied(base, &[r#"ENTRYPOINT ["/new"]"#, r#"CMD ["--new"]"#]);
        assert_eq!(config, json!({"Entrypoint": ["/new"], "Cmd": ["--new"]}));
    }

    #[test]
    fn apply_cmd_does_not_touch_entrypoint() {
        let base = json!({"Entrypoint": ["/e"], "Cmd": ["a"]});
        let config = applied(base, &[r#"CMD ["b"]"#]);
        assert_eq!(config, json!({"Entrypoint": ["/e"], "Cmd": ["b"]}));
    }

    #[test]
    fn apply_env_replaces_in_place_and_appends() {
        let base = json!({"Env": ["PATH=/bin", "HOME=/root", "PATH=/dup", 7, "BARE", "PATHX=1"]});
        let config = applied(base, &["ENV PATH=/usr/bin:/bin NEW=1 BARE=set"]);
        assert_eq!(
            config,
            json!({"Env": ["PATH=/usr/bin:/bin", "HOME=/root", 7, "BARE=set", "PATHX=1", "NEW=1"]})
        );
    }

    #[test]
    fn apply_env_same_key_twice_last_wins() {
        let config = applied(Value::Null, &["ENV A=1 A=2", "ENV B=x"]);
        assert_eq!(config, json!({"Env": ["A=2", "B=x"]}));
    }

    #[test]
    fn apply_labels_merge_and_keep_order() {
        let base = json!({"Labels": {"a": "1", "b": "2"}});
        let config = applied(base, &["LABEL a=new c=3"]);
        assert_eq!(config, json!({"Labels": {"a": "new", "b": "2", "c": "3"}}));
        let keys: Vec<&String> = config["Labels"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[test]
    fn apply_expose_merges_ports() {
        let base = json!({"ExposedPorts": {"22/tcp": {}, "80/tcp": {"kept": true}}});
        let config = applied(base, &["EXPOSE 80 53/udp"]);
        assert_eq!(
            config,
            json!({"ExposedPorts": {"22/tcp": {}, "80/tcp": {"kept": true}, "53/udp": {}}})
        );
    }

    #[test]
    fn apply_workdir_and_user() {
        let base = json!({"WorkingDir": "/old", "User": "root"});
        let config = applied(base, &["WORKDIR /srv/", "USER 1000:1000"]);
        assert_eq!(config, json!({"WorkingDir": "/srv", "User": "1000:1000"}));
    }

    #[test]
    fn apply_nothing_only_normalises_config() {
        let mut config = Value::Null;
        apply_changes(&mut config, &[]);
        assert_eq!(config, json!({}));
        let mut config = json!({"Cmd": ["x"]});
        apply_changes(&mut config, &[]);
        assert_eq!(config, json!({"Cmd": ["x"]}));
    }

    // ---- describe_changes ----

    #[test]
    fn describe_names_keys_not_values() {
        let changes: Vec<ConfigChange> = [
            r#"CMD ["/bin/app", "--token=abc"]"#,
            "ENV PATH=/usr/bin HOME=/root",
            "LABEL a=secret",
        ]
        .iter()
        .map(|c| parse(c).unwrap())
        .collect();
        assert_eq!(describe_changes(&changes), "CMD, ENV PATH HOME, LABEL a");
    }

    #[test]
    fn describe_every_instruction() {
        let changes: Vec<ConfigChange> = [
            "ENTRYPOINT /e.sh",
            "WORKDIR /secret-dir",
            "USER secret-user",
            "EXPOSE 4242",
            "ENV A=1 A=2",
        ]
        .iter()
        .map(|c| parse(c).unwrap())
        .collect();
        assert_eq!(
            describe_changes(&changes),
            "ENTRYPOINT, WORKDIR, USER, EXPOSE, ENV A"
        );
        assert_eq!(describe_changes(&[]), "");
    }

    #[test]
    fn describe_quotes_unusual_keys() {
        let change = parse(r#"LABEL "a b"=1 "x, LABEL y"=2 "l\nf"=3 org.k-1/x=4"#).unwrap();
        assert_eq!(
            describe_changes(&[change]),
            r#"LABEL "a b" "x, LABEL y" "l\\nf" org.k-1/x"#
        );
        let change = ConfigChange::Label(pairs(&[("line\nbreak", "v")]));
        assert_eq!(describe_changes(&[change]), r#"LABEL "line\nbreak""#);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn env_name() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_]{0,15}"
    }

    fn no_nul() -> impl Strategy<Value = String> {
        any::<String>().prop_map(|s| s.replace('\0', ""))
    }

    fn double_quoted(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            if matches!(c, '"' | '\\' | '$') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }

    fn single_quoted(s: &str) -> String {
        format!("'{}'", s.replace('\'', r"'\''"))
    }

    fn change() -> impl Strategy<Value = ConfigChange> {
        let kv = || proptest::collection::vec((env_name(), ".{0,8}"), 0..4);
        prop_oneof![
            proptest::collection::vec(".{0,6}", 0..3).prop_map(ConfigChange::Cmd),
            proptest::collection::vec(".{0,6}", 0..3).prop_map(ConfigChange::Entrypoint),
            kv().prop_map(ConfigChange::Env),
            "/[a-z/]{0,8}".prop_map(ConfigChange::Workdir),
            "[a-z0-9:]{1,8}".prop_map(ConfigChange::User),
            kv().prop_map(ConfigChange::Label),
            proptest::collection::vec("[0-9]{1,3}/(tcp|udp)", 0..3).prop_map(ConfigChange::Expose),
        ]
    }

    fn base_config() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            Just(json!({})),
            Just(json!({"Cmd": ["c"], "Entrypoint": ["e"], "Env": ["A=0", "A=dup", "PATH=/bin"]})),
            Just(json!({"Env": null, "Labels": null, "ExposedPorts": null, "User": "root"})),
            Just(json!({"Labels": {"a": "1"}, "ExposedPorts": {"80/tcp": {}}, "Env": [1, "X"]})),
        ]
    }

    proptest! {
        #[test]
        fn env_round_trips_double_quoted(name in env_name(), value in no_nul()) {
            let input = format!("ENV {name}={}", double_quoted(&value));
            prop_assert_eq!(parse_change(&input), Ok(ConfigChange::Env(vec![(name, value)])));
        }

        #[test]
        fn env_round_trips_single_quoted(name in env_name(), value in no_nul()) {
            let input = format!("env {name}={}", single_quoted(&value));
            prop_assert_eq!(parse_change(&input), Ok(ConfigChange::Env(vec![(name, value)])));
        }

        #[test]
        fn env_round_trips_many_pairs(
            items in proptest::collection::vec((env_name(), no_nul(), any::<bool>()), 1..6),
            sep in "[ \t]{1,3}",
        ) {
            let words: Vec<String> = items
                .iter()
                .map(|(k, v, double)| {
                    let quoted = if *double { double_quoted(v) } else { single_quoted(v) };
                    format!("{k}={quoted}")
                })
                .collect();
            let input = format!("ENV {}", words.join(&sep));
            let expected: Vec<(String, String)> =
                items.into_iter().map(|(k, v, _)| (k, v)).collect();
            prop_assert_eq!(parse_change(&input), Ok(ConfigChange::Env(expected)));
        }

        #[test]
        fn label_round_trips_with_quoted_keys(
            key in any::<String>().prop_filter("non-empty", |k| !k.is_empty()),
            value in any::<String>(),
        ) {
            let input = format!("LABEL {}={}", double_quoted(&key), single_quoted(&value));
            prop_assert_eq!(parse_change(&input), Ok(ConfigChange::Label(vec![(key, value)])));
        }

        #[test]
        fn cmd_json_round_trips(argv in proptest::collection::vec(no_nul(), 0..5)) {
            let input = format!("CMD {}", serde_json::to_string(&argv).unwrap());
            prop_assert_eq!(parse_change(&input), Ok(ConfigChange::Cmd(argv)));
        }

        #[test]
        fn cmd_shell_form_keeps_trimmed_text(text in no_nul()) {
            let trimmed = text.trim();
            prop_assume!(!trimmed.is_empty() && !trimmed.starts_with('['));
            prop_assert_eq!(
                parse_change(&format!("ENTRYPOINT {text}")),
                Ok(ConfigChange::Entrypoint(vec!["/bin/sh".into(), "-c".into(), trimmed.into()]))
            );
        }

        #[test]
        fn expose_never_panics_and_only_yields_valid_ports(arg in any::<String>()) {
            if let Ok(ConfigChange::Expose(ports)) = parse_change(&format!("EXPOSE {arg}")) {
                for port in ports {
                    let (number, proto) = port.split_once('/').unwrap();
                    prop_assert!(matches!(proto, "tcp" | "udp" | "sctp"));
                    prop_assert!(number.parse::<u16>().is_ok_and(|n| n >= 1));
                    prop_assert_eq!(number.parse::<u16>().unwrap().to_string(), number);
                }
            }
        }

        #[test]
        fn expose_round_trips(
            specs in proptest::collection::vec((1u16.., 0u16..4, 0usize..4), 1..6),
        ) {
            let protos = ["tcp", "udp", "sctp", ""];
            let mut words = Vec::new();
            let mut expected = Vec::new();
            for (start, len, proto) in specs {
                let end = start.saturating_add(len);
                let range = if start == end { start.to_string() } else { format!("{start}-{end}") };
                let (word, proto) = match protos[proto] {
                    "" => (range, "tcp"),
                    p => (format!("{range}/{}", p.to_uppercase()), p),
                };
                words.push(word);
                for port in start..=end {
                    let port = format!("{port}/{proto}");
                    if !expected.contains(&port) {
                        expected.push(port);
                    }
                }
            }
            prop_assert_eq!(
                parse_change(&format!("EXPOSE {}", words.join(" "))),
                Ok(ConfigChange::Expose(expected))
            );
        }

        #[test]
        fn parse_never_panics(input in any::<String>(), keyword in 0usize..8) {
            let prefix = PARSERS.get(keyword).map_or("", |(name, _)| *name);
            let _ = parse_change(&format!("{prefix} {input}"));
            let _ = parse_change(&input);
        }

        #[test]
        fn apply_is_idempotent(
            base in base_config(),
            changes in proptest::collection::vec(change(), 0..6),
        ) {
            let mut once = base;
            apply_changes(&mut once, &changes);
            let mut twice = once.clone();
            apply_changes(&mut twice, &changes);
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn describe_never_contains_env_or_label_values(
            changes in proptest::collection::vec(change(), 0..6),
            secrets in proptest::collection::vec("@[^@]{0,12}", 1..6),
        ) {
            // Values carry '@', which no key or keyword contains, so any
            // occurrence in the description would be a leak.
            let mut secrets = secrets.into_iter().cycle();
            let changes: Vec<ConfigChange> = changes
                .into_iter()
                .map(|change| match change {
                    ConfigChange::Env(pairs) => ConfigChange::Env(
                        pairs.into_iter().map(|(k, _)| (k, secrets.next().unwrap())).collect(),
                    ),
                    ConfigChange::Label(pairs) => ConfigChange::Label(
                        pairs.into_iter().map(|(k, _)| (k, secrets.next().unwrap())).collect(),
                    ),
                    other => other,
                })
                .collect();
            let description = describe_changes(&changes);
            prop_assert!(!description.contains('@'), "{}", description);
        }

        #[test]
        fn describe_lists_each_change_once(changes in proptest::collection::vec(change(), 0..6)) {
            let description = describe_changes(&changes);
            let keywords: Vec<&str> = changes.iter().map(ConfigChange::instruction).collect();
            let named: Vec<&str> = description
                .split(", ")
                .filter(|part| !part.is_empty())
                .map(|part| part.split(' ').next().unwrap())
                .collect();
            prop_assert_eq!(named, keywords);
        }
    }

    fn parse_change(s: &str) -> Result<ConfigChange, ChangeError> {
        s.parse()
    }
}
