//! Image references (`registry/path:tag@digest`), parsed without regular
//! expressions. `oci-client`'s parser compiles a large regex on first use
//! (about 30 ms), a third of a small commit from the command line; this
//! follows the same grammar (Docker's distribution reference) by hand, and a
//! property test holds the two to the same answers.

use std::fmt;

use serde::{Deserialize, Serialize};

pub const DEFAULT_REGISTRY: &str = "docker.io";
const MAX_NAME: usize = 255;

/// A parsed reference: registry host, repository path (with Docker Hub's
/// `library/` filled in), and the tag and digest when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Where a snapshot is pushed: always a tag. The API authorises this value
/// and sends it in the job; the agent pushes exactly it, so both sides can
/// never read one string two ways.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

impl Target {
    /// `registry/repository`, what the speaker prefixes are checked against.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// `registry/repository:tag`; parses back to the same [`Target`].
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// Parses a push target: a tag is required in effect (`latest` when none is
/// written), a digest is refused (digests name content, they cannot be
/// pushed to).
pub fn parse_target(input: &str) -> Result<Target, String> {
    let parsed = parse(input)?;
    if parsed.digest.is_some() {
        return Err("push to a tag, not to a digest".into());
    }
    Ok(Target {
        registry: parsed.registry,
        repository: parsed.repository,
        tag: parsed.tag.unwrap_or_else(|| "latest".to_string()),
    })
}

/// Parses a reference; the message says what is wrong.
pub fn parse(input: &str) -> Result<Parsed, String> {
    if input.is_empty() {
        return Err("it is empty".into());
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => {
            check_digest(digest)?;
            (rest, Some(digest.to_string()))
        }
        None => (input, None),
    };
    // A tag follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            let tag = &rest[at + 1..];
            check_tag(tag)?;
            (&rest[..at], Some(tag.to_string()))
        }
        None => (rest, None),
    };
    if name.len() > MAX_NAME {
        return Err(format!("the name is longer than {MAX_NAME} characters"));
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            check_domain(first)?;
            (first.to_string(), path.to_string())
        }
        _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
    };
    for component in path.split('/') {
        check_component(component)?;
    }
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Ok(Parsed {
        registry,
        repository,
        tag,
        digest,
    })
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn check_component(component: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "\"{component}\" is not a valid path component (lowercase letters, digits and separators)"
        )
    };
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Host names (labels of letters, digits and inner `-`), IPv4, or `[IPv6]`,
/// with an optional port.
fn check_domain(domain: &str) -> Result<(), String> {
    let bad = || format!("\"{domain}\" is not a valid registry host");
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (None, port)
    } else {
        match domain.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    if let Some(host) = host {
        let label_ok = |label: &str| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let ok = tag.len() <= 128
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("\"{tag}\" is not a valid tag"))
    }
}

/// `algorithm:hex`, with sha256 and sha512 lengths checked.
fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || format!("\"{digest}\" is not a valid digest");
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
    let hex_ok = hex.len() >= 32
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let length_ok = match algorithm {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => true,
    };
    if algorithm_ok && hex_ok && length_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::Reference;
    use proptest::prelude::*;

    fn theirs(input: &str) -> Option<(String, String, Option<String>, Option<String>)> {
        let r: Reference = input.parse().ok()?;
        Some((
            r.registry().to_string(),
            r.repository().to_string(),
            r.tag().map(String::from),
            r.digest().map(String::from),
        ))
    }

    fn ours(input: &str) -> Option<(String, String, Option<String>, Option<String>)> {
        let p = parse(input).ok()?;
        Some((p.registry, p.repository, p.tag, p.digest))
    }

    /// Where we differ on purpose: Docker's own parser takes a first
    /// component with capitals as the registry (oci-spec has a FIXME there),
    /// and we refuse a registry that is not a valid host name.
    fn known_divergence(input: &str) -> bool {
        let Some((first, _)) = input.split_once('/') else {
            return false;
        };
        let domain_like = first.contains('.') || first.contains(':') || first == "localhost";
        (!domain_like && first.chars().any(|c| c.is_ascii_uppercase()))
            || (domain_like && check_domain(first).is_err())
    }

    fn same(input: &str) {
        if known_divergence(input) {
            return;
        }
        let (a, b) = (ours(input), theirs(input));
        match (&a, &b) {
            (Some(a), Some(b)) => {
                assert_eq!((&a.0, &a.1, &a.3), (&b.0, &b.1, &b.3), "{input}");
                // oci-client fills in `latest`; ours keeps "no tag" apart.
                assert_eq!(
                    a.2.clone().unwrap_or("latest".into()),
                    b.2.clone().unwrap_or("latest".into()),
                    "{input}"
                );
            }
            (None, None) => {}
            _ => panic!("{input}: ours {a:?}, oci-client {b:?}"),
        }
    }

    #[test]
    fn follows_docker_where_oci_client_does_not() {
        // Capitals in the first component make it the registry (Docker),
        // so the repository part is checked on its own.
        assert_eq!(parse("UPPER/case:tag").unwrap().registry, "UPPER");
        assert!(parse("UPPER/Case:tag").is_err());
        assert!(parse("0.0_a/app").is_err(), "not a host name");
        assert!(parse("reg.example/App:1").is_err());
        // IPv6 registries, as Docker accepts them (oci-client does not).
        assert_eq!(parse("[::1]:5000/app:1").unwrap().registry, "[::1]:5000");
    }

    #[test]
    fn agrees_with_oci_client_on_examples() {
        for input in [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "127.0.0.1:5000/team/app:v1",
            "localhost/dcs-test/busybox:1",
            "registry.example/a/b/c:tag_1.0-x",
            "registry.example:443/a__b/c-d/e.f:x",
            "reg.example/Upper:1",
            "reg.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "reg.example/app:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "reg.example/app@sha256:bad",
            "reg.example/-app:1",
            "reg.example/app:-1",
            "reg.example//app",
            "reg.example/app:",
            ":tag",
            "",
        ] {
            same(input);
        }
    }

    #[test]
    fn targets_are_tags() {
        let t = parse_target("127.0.0.1:5000/workshops/alice/app").unwrap();
        assert_eq!(t.tag, "latest");
        assert_eq!(t.repository_path(), "127.0.0.1:5000/workshops/alice/app");
        assert_eq!(
            parse_target("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert!(
            parse_target("reg.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
                .is_err()
        );
        assert!(parse_target("reg.example/App:1").is_err());
    }

    /// What the agent is sent is what it pushes: the oci-client reference
    /// made from a target names the same registry, repository and tag, and
    /// the target's text reads back to itself.
    fn pushes_what_was_authorised(input: &str) {
        let Ok(target) = parse_target(input) else {
            return;
        };
        assert_eq!(
            parse_target(&target.to_string()).as_ref(),
            Ok(&target),
            "{input}"
        );
        if known_divergence(input) {
            return;
        }
        let oci = Reference::with_tag(
            target.registry.clone(),
            target.repository.clone(),
            target.tag.clone(),
        );
        let theirs: Reference = target
            .to_string()
            .parse()
            .expect("oci-client reads a target");
        assert_eq!(
            (oci.registry(), oci.repository(), oci.tag()),
            (theirs.registry(), theirs.repository(), theirs.tag()),
            "{input}"
        );
    }

    proptest! {
        #[test]
        fn agrees_with_oci_client(input in "[a-zA-Z0-9._:/@-]{0,40}") {
            same(&input);
        }

        #[test]
        fn agrees_on_plausible_references(
            host in prop::option::of("(localhost|[a-z]{1,5}\\.[a-z]{2,3}|127\\.0\\.0\\.1:[0-9]{2,5})"),
            path in "[a-z0-9]{1,4}([._-]{1,2}[a-z0-9]{1,4}){0,2}(/[a-z0-9]{1,5}){0,2}",
            tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
        ) {
            let mut input = String::new();
            if let Some(h) = host { input.push_str(&h); input.push('/'); }
            input.push_str(&path);
            if let Some(t) = tag { input.push(':'); input.push_str(&t); }
            same(&input);
            pushes_what_was_authorised(&input);
        }

        #[test]
        fn targets_read_back_to_themselves(input in "[a-zA-Z0-9._:/@-]{0,40}") {
            pushes_what_was_authorised(&input);
        }
    }
}
