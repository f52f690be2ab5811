//! The modules of `api/src` depend on each other one way: http, graphql
//! and the workers on the services, the services on the database, the
//! agent client, the bus and the outbox, and the shared state only on
//! leaves. This test reads every `api/src/**/*.rs`, takes each file's
//! dependencies from its `use` lines (`crate::`, `super::`, `self::` and
//! child-module paths) and its inline paths (`crate::x::`, `super::x::`,
//! and `child::x` into a module the file declares, as a derive's field
//! list names its parts), and fails on any cycle, naming it. The planted
//! cases below prove that it sees one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// Module path (`service::snapshots`; `crate` for `lib.rs`) to the files'
/// dependencies on other modules of the crate.
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn the_api_modules_have_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&root, &root, &mut files);
    assert!(files.len() > 20, "read {} files", files.len());
    let graph = graph(&files);
    // The reader must see the edges the code has, or it proves nothing.
    assert!(
        graph["dispatch"].contains("service::transitions"),
        "{graph:?}"
    );
    assert!(graph["graphql::schema"].contains("state"), "{graph:?}");
    assert!(
        graph["graphql::query"].contains("graphql::query::snapshots"),
        "{graph:?}"
    );
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "import cycles in api/src:\n{}",
        cycles
            .iter()
            .map(|c| c.join(" -> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_cycle_planted_in_the_real_tree_is_named() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&root, &root, &mut files);
    // The state calling up into the dispatcher: what it did before.
    files
        .get_mut("state.rs")
        .expect("state.rs")
        .push_str("\nfn planted() { let _ = crate::dispatch::MAX_ATTEMPTS; }\n");
    let cycles = cycles(&graph(&files));
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].contains(&"state".to_string()), "{cycles:?}");
    assert!(cycles[0].contains(&"dispatch".to_string()), "{cycles:?}");
}

#[test]
fn a_planted_cycle_through_a_use_line_and_an_inline_path_is_found() {
    let files = in_memory(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        ("a.rs", "use crate::b::{Thing, other::More};\n"),
        ("b.rs", "pub mod other;\nfn f() { crate::c::g(); }\n"),
        ("b/other.rs", "pub struct More;\n"),
        (
            "c.rs",
            "// crate::b::not_a_dependency\nfn g() { super::a::h() }\n\
             #[cfg(test)]\nmod tests { use crate::b::*; }\n",
        ),
    ]);
    let graph = graph(&files);
    assert_eq!(graph["a"], set(&["b", "b::other"]));
    assert_eq!(graph["b"], set(&["c"]), "a comment is no dependency");
    assert_eq!(graph["c"], set(&["a"]), "nor is a unit test");
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c", "a"]]);
}

#[test]
fn a_planted_cycle_through_super_and_a_child_module_is_found() {
    let files = in_memory(&[
        ("lib.rs", "pub mod web;\n"),
        ("web/mod.rs", "mod routes;\nuse routes::Router;\n"),
        ("web/routes.rs", "use super::{Limits, self as parent};\n"),
    ]);
    assert_eq!(
        cycles(&graph(&files)),
        vec![vec!["web", "web::routes", "web"]]
    );
}

/// A parent that names its children inline (as a merged GraphQL object
/// lists its parts) and a child that reaches back up through a path in a
/// string attribute (a resolver's complexity function in the schema).
#[test]
fn a_planted_cycle_through_an_inline_child_path_is_found() {
    let files = in_memory(&[
        ("lib.rs", "pub mod graphql;\n"),
        ("graphql/mod.rs", "pub mod query;\npub mod schema;\n"),
        (
            "graphql/schema.rs",
            "pub struct Schema(super::query::Query);\npub fn cost() -> usize { 1 }\n",
        ),
        (
            "graphql/query/mod.rs",
            "mod snapshots;\n\
             pub struct Query(snapshots::SnapshotsQuery, std::marker::PhantomData<u8>);\n",
        ),
        (
            "graphql/query/snapshots.rs",
            "#[graphql(complexity = \"crate::graphql::schema::cost()\")]\n\
             pub struct SnapshotsQuery(Vec::<u8>);\n",
        ),
    ]);
    let graph = graph(&files);
    assert_eq!(
        graph["graphql::query"],
        set(&["graphql::query::snapshots"]),
        "a child named inline is a dependency; another crate's path is not"
    );
    assert_eq!(
        cycles(&graph),
        vec![vec![
            "graphql::query",
            "graphql::query::snapshots",
            "graphql::schema",
            "graphql::query"
        ]]
    );
}

#[test]
fn dependencies_that_run_one_way_pass() {
    let files = in_memory(&[
        (
            "lib.rs",
            "pub mod http;\npub mod service;\npub mod state;\n",
        ),
        ("http.rs", "use crate::{service, state::AppState};\n"),
        ("service/mod.rs", "pub mod snapshots;\n"),
        ("service/snapshots.rs", "use crate::state::AppState;\n"),
        ("state.rs", "use std::sync::Arc;\nuse sea_orm::Db;\n"),
    ]);
    let graph = graph(&files);
    assert_eq!(graph["http"], set(&["service", "state"]));
    assert!(cycles(&graph).is_empty());
}

fn read_tree(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("readable source tree") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            read_tree(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap().to_string_lossy();
            let text = std::fs::read_to_string(&path).expect("readable source file");
            files.insert(relative.replace('\\', "/"), text);
        }
    }
}

fn in_memory(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// `lib.rs` -> `crate`, `a/mod.rs` -> `a`, `a/b.rs` -> `a::b`.
fn module_of(file: &str) -> String {
    let path = file.trim_end_matches(".rs");
    let path = path.strip_suffix("/mod").unwrap_or(path);
    if path == "lib" {
        "crate".to_string()
    } else {
        path.replace('/', "::")
    }
}

fn graph(files: &BTreeMap<String, String>) -> Graph {
    let modules: BTreeSet<String> = files.keys().map(|f| module_of(f)).collect();
    let mut graph = Graph::new();
    for (file, text) in files {
        let module = module_of(file);
        let code = without_comments(without_tests(text));
        let mut dependencies = BTreeSet::new();
        for path in referenced_paths(&code) {
            if let Some(target) = resolve(&module, &path, &modules)
                && target != module
                && target != "crate"
            {
                dependencies.insert(target);
            }
        }
        graph.insert(module, dependencies);
    }
    graph
}

/// The code before its unit tests (by custom at the end of a file): their
/// `use super::*` names the file's own module, and tests are no part of
/// the layering.
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// The code without `//` comments (doc comments name modules in links,
/// which is no dependency). A `//` right after `:` is a URL in a string.
fn without_comments(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let mut end = line.len();
        let bytes = line.as_bytes();
        for i in 0..bytes.len().saturating_sub(1) {
            if bytes[i] == b'/' && bytes[i + 1] == b'/' && (i == 0 || bytes[i - 1] != b':') {
                end = i;
                break;
            }
        }
        code.push_str(&line[..end]);
        code.push('\n');
    }
    code
}

/// Every path the code names: the `use` trees expanded, and inline paths
/// elsewhere (any `a::b`; [`resolve`] keeps those that start at `crate`,
/// `super`, `self` or a child module, and drops other crates' paths).
fn referenced_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = String::new();
    let mut remaining = code;
    while let Some(start) = find_keyword(remaining, "use") {
        rest.push_str(&remaining[..start]);
        let after = &remaining[start + 3..];
        let end = after.find(';').unwrap_or(after.len());
        expand_use(&after[..end], &mut Vec::new(), &mut paths);
        remaining = &after[(end + 1).min(after.len())..];
    }
    rest.push_str(remaining);
    let bytes = rest.as_bytes();
    let mut from = 0;
    while let Some(found) = rest[from..].find("::") {
        let separator = from + found;
        from = separator + 2;
        // Back to the start of the path's first segment; a `::` inside a
        // path already read is skipped (its start was taken before).
        let mut start = separator;
        while start > 0 && is_ident_char(bytes[start - 1]) {
            start -= 1;
        }
        if start == separator || (start > 0 && bytes[start - 1] == b':') {
            continue;
        }
        let tail: String = rest[start..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        from = start + tail.len();
        paths.push(
            tail.split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        );
    }
    paths
}

/// The start of a `use` item: the word `use` where a statement starts
/// (after `;`, a brace, an attribute, `pub` or `pub(..)`), so that `use`
/// in a sentence inside a string is not read as one.
fn find_keyword(text: &str, keyword: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find(keyword) {
        let at = from + found;
        let after = at + keyword.len();
        from = after;
        let word = (at == 0 || !is_ident_char(bytes[at - 1]))
            && after < bytes.len()
            && bytes[after].is_ascii_whitespace();
        let before = text[..at].trim_end();
        let starts_statement = before.is_empty()
            || before.ends_with([';', '{', '}', ']', ')'])
            || (before.ends_with("pub")
                && !before[..before.len() - 3]
                    .bytes()
                    .next_back()
                    .is_some_and(is_ident_char));
        if word && starts_statement {
            return Some(at);
        }
    }
    None
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `a::{b, c::{d, e as f}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    let (head, group) = match tree.find('{') {
        Some(open) => (&tree[..open], Some(inside_braces(&tree[open + 1..]))),
        None => (tree, None),
    };
    let head = head.split(" as ").next().unwrap_or("");
    let depth = prefix.len();
    prefix.extend(
        head.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "*")
            .map(String::from),
    );
    match group {
        Some(group) => {
            for item in split_top_level(group) {
                expand_use(item, prefix, out);
            }
        }
        None => out.push(prefix.clone()),
    }
    prefix.truncate(depth);
}

/// The text up to the brace that closes one already opened.
fn inside_braces(text: &str) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return &text[..i],
            '}' => depth -= 1,
            _ => {}
        }
    }
    text
}

/// Splits a use group at the commas outside nested braces.
fn split_top_level(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items.into_iter().filter(|i| !i.trim().is_empty()).collect()
}

/// The longest known module a path names, from the module `from`; `None`
/// for paths into other crates.
fn resolve(from: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let mut base: Vec<String> = if from == "crate" {
        Vec::new()
    } else {
        from.split("::").map(String::from).collect()
    };
    let mut segments = path.iter().peekable();
    match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            base.clear();
            segments.next();
        }
        Some("super") => {
            while segments.peek().is_some_and(|s| *s == "super") {
                base.pop();
                segments.next();
            }
        }
        Some("self") => {
            segments.next();
        }
        Some(first) => {
            // A child module of `from` named without `self::`.
            let mut child = base.clone();
            child.push(first.to_string());
            if !modules.contains(&child.join("::")) {
                return None;
            }
        }
        None => return None,
    }
    let mut best = if base.is_empty() {
        "crate".to_string()
    } else {
        base.join("::")
    };
    for segment in segments {
        if segment == "self" {
            continue;
        }
        base.push(segment.clone());
        let candidate = base.join("::");
        if modules.contains(&candidate) {
            best = candidate;
        } else {
            break;
        }
    }
    Some(best)
}

/// Each cycle once, as a closed walk from its smallest module: the strongly
/// connected components of more than one module, each named by a shortest
/// way round from its first member.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    for start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        let component: BTreeSet<String> = reachable(graph, start)
            .into_iter()
            .filter(|m| reachable(graph, m).contains(start))
            .collect();
        seen.extend(component.iter().cloned());
        if component.len() > 1 {
            found.push(way_round(graph, start, &component));
        }
    }
    found
}

fn reachable(graph: &Graph, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([start.to_string()]);
    let mut queue = VecDeque::from([start.to_string()]);
    while let Some(module) = queue.pop_front() {
        for next in graph.get(&module).into_iter().flatten() {
            if seen.insert(next.clone()) {
                queue.push_back(next.clone());
            }
        }
    }
    seen
}

/// A shortest walk `start -> ... -> start` inside the component.
fn way_round(graph: &Graph, start: &str, component: &BTreeSet<String>) -> Vec<String> {
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([start.to_string()]);
    while let Some(module) = queue.pop_front() {
        for next in graph.get(&module).into_iter().flatten() {
            if !component.contains(next) {
                continue;
            }
            if next == start {
                // Back from the last module to the first, then reversed.
                let mut inner = Vec::new();
                let mut at = module.clone();
                while at != start {
                    inner.push(at.clone());
                    at = came_from[&at].clone();
                }
                inner.reverse();
                let mut walk = vec![start.to_string()];
                walk.extend(inner);
                walk.push(start.to_string());
                return walk;
            }
            if !came_from.contains_key(next) {
                came_from.insert(next.clone(), module.clone());
                queue.push_back(next.clone());
            }
        }
    }
    component.iter().cloned().collect()
}
