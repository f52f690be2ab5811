//! The rule file's own examples, and the scanner's handling of heads.

use std::io::Read;

use dcs_protocol::{Acknowledgement, Severity};

use super::rules::{self, Example, Shape};
use super::*;

/// Runs one example through a fresh scanner, as a walk would present it.
fn run(example: &Example) -> Findings {
    let mut scanner = Scanner::new();
    let relative = example.path.trim_start_matches('/').as_bytes();
    if example.directory {
        scanner.directory(relative);
        let mut file = relative.to_vec();
        file.extend_from_slice(b"/data");
        // Its content does not matter here.
        let _ = scanner.file(&file, example.size.unwrap_or(0));
    } else {
        let text = example.text.as_deref().unwrap_or_default().as_bytes();
        let size = example.size.unwrap_or(text.len() as u64);
        if let Some(mut head) = scanner.file(relative, size) {
            head.fill_from(&mut &text[..]).unwrap();
            scanner.end_file(head);
        }
    }
    scanner.finish()
}

#[test]
fn the_rule_file_parses_and_every_rule_has_examples_both_ways() {
    let rules = rules::built_in();
    assert!(rules.rules.len() >= 20);
    for rule in &rules.rules {
        assert!(
            rule.examples.iter().any(|e| e.found),
            "rule {} has no example it finds",
            rule.id
        );
        assert!(
            rule.examples.iter().any(|e| !e.found),
            "rule {} has no example it leaves alone",
            rule.id
        );
    }
}

#[test]
fn every_rule_finds_its_examples_and_nothing_else() {
    for rule in &rules::built_in().rules {
        for example in &rule.examples {
            let findings = run(example);
            let mine: Vec<_> = findings
                .report()
                .findings
                .iter()
                .filter(|f| f.rule == rule.id)
                .collect();
            if !example.found {
                assert!(
                    mine.is_empty(),
                    "rule {}: {example:?} gave {mine:?}",
                    rule.id
                );
                continue;
            }
            assert_eq!(mine.len(), 1, "rule {}: {example:?} gave {mine:?}", rule.id);
            let finding = mine[0];
            assert_eq!(finding.path, example.path, "rule {}", rule.id);
            assert_eq!(finding.severity, rule.severity, "rule {}", rule.id);
            assert_eq!(finding.line, example.line, "rule {}: {example:?}", rule.id);
            match rule.shape {
                Shape::Size { directories, .. } => {
                    assert_eq!(finding.size, example.size, "rule {}", rule.id);
                    let exclude = if directories {
                        format!("{}/*", example.path)
                    } else {
                        example.path.clone()
                    };
                    assert_eq!(finding.suggested_exclude, Some(exclude));
                }
                _ => {
                    assert_eq!(finding.size, None);
                    assert_eq!(finding.suggested_exclude, None);
                }
            }
        }
    }
}

#[test]
fn content_rules_name_a_line_and_location_rules_do_not() {
    for rule in &rules::built_in().rules {
        for example in rule.examples.iter().filter(|e| e.found) {
            let content = matches!(rule.shape, Shape::Content { .. });
            assert_eq!(
                example.line.is_some(),
                content,
                "rule {}: {example:?}",
                rule.id
            );
        }
    }
}

#[test]
fn every_keyword_rule_example_holds_one_of_its_keywords() {
    // A keyword that never occurs in a real token would hide the rule.
    let text = include_str!("rules.toml");
    let file: toml::Table = toml::from_str(text).unwrap();
    for rule in file["rule"].as_array().unwrap() {
        let Some(keywords) = rule.get("keywords").and_then(|k| k.as_array()) else {
            continue;
        };
        for example in rule["examples"].as_array().unwrap() {
            let found = example
                .get("found")
                .and_then(|f| f.as_bool())
                .unwrap_or(true);
            let text = example["text"].as_str().unwrap();
            if found {
                assert!(
                    keywords.iter().any(|k| text.contains(k.as_str().unwrap())),
                    "{:?}: no keyword in {text:?}",
                    rule["id"]
                );
            }
        }
    }
}

#[test]
fn invalid_rule_files_are_refused() {
    let header = "[content]\nskip_paths = []\n";
    for (rule, why) in [
        (
            "id = \"x\"\nseverity = \"SECRET\"\ndescription = \"\"\ncontent = 'a'",
            "no keywords, no paths",
        ),
        (
            "id = \"x\"\nseverity = \"SECRET\"\ndescription = \"\"\nkeywords = ['a']\ncontent = '('",
            "bad regex",
        ),
        (
            "id = \"x\"\nseverity = \"SECRET\"\ndescription = \"\"\npaths = ['a']\nmin_bytes = 1",
            "secret size rule",
        ),
        (
            "id = \"X\"\nseverity = \"SECRET\"\ndescription = \"\"\npaths = ['a']",
            "id case",
        ),
        (
            "id = \"x\"\nseverity = \"secret\"\ndescription = \"\"\npaths = ['a']",
            "severity case",
        ),
        (
            "id = \"x\"\nseverity = \"SECRET\"\ndescription = \"\"\npaths = ['a']\ntypo = 1",
            "unknown field",
        ),
        (
            "id = \"x\"\nseverity = \"SECRET\"\ndescription = \"\"\npaths = ['a']\nkeywords = ['a']\ncontent = 'a'",
            "paths and keywords",
        ),
        (
            "id = \"x\"\nseverity = \"SECRET\"\ndescription = \"\"",
            "nothing to match",
        ),
    ] {
        let text = format!("{header}[[rule]]\n{rule}\n");
        assert!(rules::RuleSet::parse(&text).is_err(), "accepted: {why}");
    }
    let twice = format!(
        "{header}[[rule]]\nid = \"x\"\nseverity = \"SECRET\"\ndescription = \"\"\npaths = ['a']\n\
         [[rule]]\nid = \"x\"\nseverity = \"SECRET\"\ndescription = \"\"\npaths = ['b']\n"
    );
    assert!(rules::RuleSet::parse(&twice).is_err());
}

const TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";

/// Scans one file with content `data`, its head collected the commit's way
/// (a reader around the data) and the preview's way (read from the file);
/// both must agree. Returns (rule, line) pairs.
fn scan_file(path: &str, data: &[u8]) -> Vec<(String, Option<u32>)> {
    let relative = path.trim_start_matches('/').as_bytes();
    let mut results = Vec::new();
    for commit_way in [true, false] {
        let mut scanner = Scanner::new();
        if let Some(mut head) = scanner.file(relative, data.len() as u64) {
            if commit_way {
                let mut passed = Vec::new();
                head.reader(&mut &data[..])
                    .read_to_end(&mut passed)
                    .unwrap();
                assert_eq!(passed, data, "the reader changes nothing that passes");
            } else {
                head.fill_from(&mut &data[..]).unwrap();
            }
            scanner.end_file(head);
        }
        let found: Vec<_> = scanner
            .finish()
            .into_report()
            .findings
            .into_iter()
            .map(|f| (f.rule, f.line))
            .collect();
        results.push(found);
    }
    assert_eq!(results[0], results[1], "commit and preview scans differ");
    results.pop().unwrap()
}

#[test]
fn a_secret_just_under_the_cap_is_found_and_one_past_it_is_not() {
    let filler_line = "x".repeat(99) + "\n";
    let mut under = filler_line.repeat((HEAD_BYTES - TOKEN.len() - 1) / 100);
    let lines = under.len() / 100;
    under.push_str(&" ".repeat(HEAD_BYTES - TOKEN.len() - 1 - under.len()));
    under.push_str(TOKEN);
    under.push('\n');
    assert_eq!(under.len(), HEAD_BYTES);
    assert_eq!(
        scan_file("/srv/under", under.as_bytes()),
        [("github-token".to_string(), Some(lines as u32 + 1))]
    );

    // Two bytes later its last character is past the cap: not found. Nor
    // is a token wholly past it.
    let mut straddling = under.clone();
    straddling.insert_str(0, "yy");
    assert!(scan_file("/srv/straddling", straddling.as_bytes()).is_empty());
    let mut past = filler_line.repeat(HEAD_BYTES / 100 + 1);
    past.push_str(TOKEN);
    assert!(scan_file("/srv/past", past.as_bytes()).is_empty());
}

#[test]
fn binary_files_are_not_searched() {
    let mut data = vec![0u8; 10];
    data.extend_from_slice(TOKEN.as_bytes());
    assert!(scan_file("/srv/blob", &data).is_empty());
    // A NUL past the probe does not make a file binary.
    let mut late = vec![b'a'; BINARY_PROBE];
    late.push(0);
    late.push(b'\n');
    late.extend_from_slice(TOKEN.as_bytes());
    assert_eq!(
        scan_file("/srv/late", &late),
        [("github-token".into(), Some(2))]
    );
}

#[test]
fn documentation_is_not_searched_but_keys_by_location_are_found_there() {
    assert!(scan_file("/usr/share/doc/x/README", TOKEN.as_bytes()).is_empty());
    assert_eq!(
        scan_file("/usr/share/doc/x/.ssh/id_rsa", b"x"),
        [("ssh-private-key-file".into(), None)]
    );
}

#[test]
fn a_file_found_by_location_is_not_read() {
    let mut scanner = Scanner::new();
    assert!(scanner.file(b"root/.aws/credentials", 100).is_none());
    assert!(scanner.file(b"srv/empty", 0).is_none());
    assert!(scanner.file(b"srv/text", 1).is_some());
}

#[test]
fn a_preview_reads_only_the_probe_of_a_binary_file() {
    struct Counting<'a>(&'a [u8], usize);
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n;
            Ok(n)
        }
    }
    let data = vec![0u8; 4 * HEAD_BYTES];
    let mut scanner = Scanner::new();
    let mut head = scanner.file(b"srv/blob", data.len() as u64).unwrap();
    let mut file = Counting(&data, 0);
    head.fill_from(&mut file).unwrap();
    assert_eq!(file.1, BINARY_PROBE);
    let text = vec![b'a'; 4 * HEAD_BYTES];
    let mut head = scanner.file(b"srv/text", text.len() as u64).unwrap();
    let mut file = Counting(&text, 0);
    head.fill_from(&mut file).unwrap();
    assert_eq!(file.1, HEAD_BYTES);
}

#[test]
fn hard_links_are_found_by_name() {
    let mut scanner = Scanner::new();
    assert!(scanner.file(b"srv/plain", 3).is_some());
    scanner.hard_link(b"root/.aws/credentials");
    scanner.hard_link(b"root/.kube/config");
    scanner.hard_link(b"srv/other-name");
    let rules: Vec<_> = scanner
        .finish()
        .into_report()
        .findings
        .into_iter()
        .map(|f| (f.path, f.rule))
        .collect();
    assert_eq!(
        rules,
        [
            (
                "/root/.aws/credentials".into(),
                "aws-credentials-file".into()
            ),
            ("/root/.kube/config".into(), "kubeconfig-credentials".into()),
        ]
    );
}

#[test]
fn only_the_outermost_cache_is_weighed_and_siblings_close_it() {
    let mut scanner = Scanner::new();
    scanner.directory(b"root");
    scanner.directory(b"root/.cache");
    scanner.directory(b"root/.cache/pip");
    assert!(scanner.file(b"root/.cache/pip/a", 40 << 20).is_some());
    scanner.directory(b"root/.cache/npm/.cache");
    assert!(
        scanner
            .file(b"root/.cache/npm/.cache/b", 20 << 20)
            .is_some()
    );
    // Not below /root/.cache: closes it.
    scanner.directory(b"root/.cachex");
    assert!(scanner.file(b"root/.cachex/c", 100 << 20).is_some());
    scanner.directory(b"srv/.npm");
    assert!(scanner.file(b"srv/.npm/d", 1 << 20).is_some());
    let found: Vec<_> = scanner
        .finish()
        .into_report()
        .findings
        .into_iter()
        .map(|f| (f.path, f.size))
        .collect();
    assert_eq!(found, [("/root/.cache".to_string(), Some(60 << 20))]);
}

#[test]
fn reports_are_bounded_and_unlisted_secrets_still_block() {
    let mut scanner = Scanner::new();
    for i in 0..ScanReport::MAX_FINDINGS + 5 {
        assert!(
            scanner
                .file(format!("home/u{i:05}/.netrc").as_bytes(), 10)
                .is_none()
        );
    }
    let findings = scanner.finish();
    assert_eq!(findings.report().findings.len(), ScanReport::MAX_FINDINGS);
    assert!(findings.report().truncated);
    let acknowledged: Vec<_> = findings
        .report()
        .findings
        .iter()
        .map(|f| Acknowledgement {
            rule: f.rule.clone(),
            path: f.path.clone(),
        })
        .collect();
    let blocking = findings.blocking(&acknowledged);
    assert!(blocking.listed.is_empty());
    assert_eq!(blocking.unlisted, 5);
    assert!(!blocking.is_empty());
}

#[test]
fn merging_passes_keeps_one_finding_per_path_and_rule() {
    let scan = |files: &[(&str, &str)]| {
        let mut scanner = Scanner::new();
        for (path, text) in files {
            if let Some(mut head) = scanner.file(path.as_bytes(), text.len() as u64) {
                head.fill_from(&mut text.as_bytes()).unwrap();
                scanner.end_file(head);
            }
        }
        scanner.finish()
    };
    let mut bulk = scan(&[("a/.netrc", "x"), ("b", &format!("\n{TOKEN}"))]);
    let delta = scan(&[("b", &format!("\n\n{TOKEN}")), ("c", TOKEN)]);
    bulk.merge(delta);
    let found: Vec<_> = bulk
        .report()
        .findings
        .iter()
        .map(|f| (f.path.as_str(), f.rule.as_str(), f.line))
        .collect();
    assert_eq!(
        found,
        [
            ("/a/.netrc", "netrc-file", None),
            ("/b", "github-token", Some(2)),
            ("/c", "github-token", Some(1)),
        ]
    );
    assert_eq!(
        bulk.report().secrets().count(),
        3,
        "all are secrets: {found:?}"
    );
    assert!(
        bulk.report()
            .findings
            .iter()
            .all(|f| f.severity == Severity::Secret)
    );
}
