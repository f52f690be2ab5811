//! Content rules on the head of one text file.
//!
//! Rules for every text file are found through their keywords: one pass of
//! a multi-literal search over the head, and a rule's regular expression
//! runs only on a line holding one of its keywords (the way gitleaks
//! prefilters). Most text holds none of these literals, so most of a head
//! costs one fast scan. Rules tied to paths run over the whole head.

use memchr::{memchr, memchr_iter, memrchr};

use super::rules::RuleSet;

/// How far a `multiline` rule's expression may run past the keyword's line.
const MULTILINE_WINDOW: usize = 16 * 1024;

/// Runs the rules on `head`: `path_rules` (the content rules `paths`
/// selected) on all of it, and, when `everywhere` is set, the keyword rules.
/// Calls `found(rule, line)` at most once per rule, with the 1-based line
/// of its first match.
pub(super) fn scan_head(
    rules: &RuleSet,
    head: &[u8],
    path_rules: &[usize],
    everywhere: bool,
    mut found: impl FnMut(usize, u32),
) {
    for &index in path_rules {
        if let Some(at) = rules.rules[index].find(head) {
            found(index, line_of(head, at));
        }
    }
    if !everywhere || rules.everywhere_count() == 0 {
        return;
    }
    // Rules already found, and for each the start of the line it was last
    // tried on (a line with many keyword hits is matched once per rule).
    let mut done: Vec<usize> = Vec::new();
    let mut tried: Vec<(usize, usize)> = Vec::new();
    // The line of the last hit: [start, end), end at its newline. Hits come
    // in order, so finding a line's bounds costs its length once.
    let mut line = (0, 0);
    let mut from = 0;
    while from < head.len() && done.len() < rules.everywhere_count() {
        let input = aho_corasick::Input::new(head).span(from..head.len());
        let Some(hit) = rules.keywords().find(input) else {
            break;
        };
        // Next search from the byte after this hit's start: keywords that
        // overlap this one are still seen.
        from = hit.start() + 1;
        if hit.start() >= line.1 {
            let start =
                memrchr(b'\n', &head[line.1..hit.start()]).map_or(line.1, |i| line.1 + i + 1);
            let end = memchr(b'\n', &head[hit.start()..]).map_or(head.len(), |i| hit.start() + i);
            line = (start, end);
        }
        let (line_start, line_end) = line;
        for &index in rules.keyword_rules(hit.pattern().as_usize()) {
            if done.contains(&index) {
                continue;
            }
            match tried.iter_mut().find(|(rule, _)| *rule == index) {
                Some((_, start)) if *start == line_start => continue,
                Some((_, start)) => *start = line_start,
                None => tried.push((index, line_start)),
            }
            let rule = &rules.rules[index];
            let end = if rule.multiline {
                head.len().min(line_start + MULTILINE_WINDOW)
            } else {
                line_end
            };
            if let Some(at) = rule.find(&head[line_start..end]) {
                done.push(index);
                found(index, line_of(head, line_start + at));
            }
        }
    }
}

/// The 1-based line of byte `at`.
fn line_of(head: &[u8], at: usize) -> u32 {
    let newlines = memchr_iter(b'\n', &head[..at.min(head.len())]).count();
    u32::try_from(newlines + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleSet {
        RuleSet::parse(
            r#"
            [content]
            skip_paths = []
            [[rule]]
            id = "a"
            severity = "SECRET"
            description = "token A"
            keywords = ["tokA_"]
            content = '''tokA_[0-9]{4}'''
            [[rule]]
            id = "b"
            severity = "SECRET"
            description = "token B, whose keyword overlaps A's"
            keywords = ["A_9"]
            content = '''A_9[0-9]{3}'''
            [[rule]]
            id = "pem"
            severity = "SECRET"
            description = "a block"
            keywords = ["BEGIN"]
            multiline = true
            content = '''BEGIN\n[a-z]{8}'''
            "#,
        )
        .unwrap()
    }

    fn scan(rules: &RuleSet, head: &[u8]) -> Vec<(String, u32)> {
        let mut found = Vec::new();
        scan_head(rules, head, &[], true, |rule, line| {
            found.push((rules.rules[rule].id.clone(), line))
        });
        found.sort();
        found
    }

    #[test]
    fn each_rule_reports_its_first_line() {
        let rules = rules();
        let text = b"x\ntokA_12\ntokA_1234 tokA_5678\n\ntokA_5555\n";
        assert_eq!(scan(&rules, text), [("a".into(), 3)]);
    }

    #[test]
    fn overlapping_keywords_are_both_seen() {
        let rules = rules();
        // "tokA_9123" holds A's keyword and, from its 4th byte, B's.
        assert_eq!(
            scan(&rules, b"tokA_9123\n"),
            [("a".into(), 1), ("b".into(), 1)]
        );
    }

    #[test]
    fn multiline_rules_read_past_the_line() {
        let rules = rules();
        assert_eq!(
            scan(&rules, b"1\n2\nBEGIN\nabcdefgh\n"),
            [("pem".into(), 3)]
        );
        assert!(scan(&rules, b"BEGIN abcdefgh\n").is_empty());
    }

    #[test]
    fn a_line_full_of_keywords_costs_one_match_per_rule() {
        let rules = rules();
        // 100,000 hits on one line without a match: linear, not quadratic
        // (a debug build would take minutes otherwise).
        let line = b"tokA_x ".repeat(100_000);
        let started = std::time::Instant::now();
        assert!(scan(&rules, &line).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of(b"abc", 0), 1);
        assert_eq!(line_of(b"a\nb\nc", 4), 3);
        assert_eq!(line_of(b"a\n", 2), 2);
    }
}
