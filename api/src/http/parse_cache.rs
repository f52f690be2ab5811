//! Parsed documents of recent short query texts. Clients send the same few
//! documents over and over (the console's, a tool's), and parsing one is a
//! measurable share of a cheap request; a clone of the parsed document
//! costs less. Only short texts are kept and only a bounded number, so a
//! client sending a new text each time costs the cache its memory bound,
//! nothing more. The executor still checks depth, directives, validation
//! and complexity on every request: only the parse is skipped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_graphql::parser::types::ExecutableDocument;

/// Texts longer than this are parsed each time: the documents clients
/// repeat are short, and long ones would make the bound a lot of memory.
const MAX_TEXT_BYTES: usize = 2 * 1024;
/// How many documents are kept; the oldest goes first.
const MAX_DOCUMENTS: usize = 256;

#[derive(Default)]
pub(super) struct ParseCache {
    inner: Mutex<Documents>,
}

#[derive(Default)]
struct Documents {
    by_text: HashMap<Box<str>, ExecutableDocument>,
    /// Insertion order, for eviction.
    order: VecDeque<Box<str>>,
}

impl ParseCache {
    /// Gives `request` its parsed document from the cache, or parses it and
    /// keeps the result when it parses and is short. A text that does not
    /// parse is left to the executor, which reports why.
    pub(super) fn prepare(&self, request: &mut async_graphql::Request) {
        if request.query.len() > MAX_TEXT_BYTES {
            return;
        }
        if let Some(document) = self.lock().by_text.get(request.query.as_str()) {
            request.set_parsed_query(document.clone());
            return;
        }
        let Ok(document) = request.parsed_query() else {
            return;
        };
        let document = document.clone();
        let mut documents = self.lock();
        if documents.by_text.contains_key(request.query.as_str()) {
            return;
        }
        if documents.order.len() >= MAX_DOCUMENTS
            && let Some(oldest) = documents.order.pop_front()
        {
            documents.by_text.remove(&oldest);
        }
        let text: Box<str> = request.query.as_str().into();
        documents.order.push_back(text.clone());
        documents.by_text.insert(text, document);
    }

    /// A poisoned lock only means a panic elsewhere mid-update; the map
    /// is still a valid cache.
    fn lock(&self) -> std::sync::MutexGuard<'_, Documents> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> async_graphql::Request {
        async_graphql::Request::new(text)
    }

    #[test]
    fn a_repeated_text_gets_the_same_document() {
        let cache = ParseCache::default();
        let mut first = request("{ me { sub } }");
        cache.prepare(&mut first);
        let mut second = request("{ me { sub } }");
        cache.prepare(&mut second);
        assert_eq!(cache.len(), 1);
        let a = format!("{:?}", first.parsed_query().unwrap());
        let b = format!("{:?}", second.parsed_query().unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn broken_and_long_texts_are_not_kept() {
        let cache = ParseCache::default();
        let mut broken = request("{ me { ");
        cache.prepare(&mut broken);
        assert!(
            broken.parsed_query().is_err(),
            "the executor sees the error"
        );
        let long = format!("{{ me {{ sub }} }} # {}", "x".repeat(MAX_TEXT_BYTES));
        let mut long = request(&long);
        cache.prepare(&mut long);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_bound_holds_against_a_new_text_each_time() {
        let cache = ParseCache::default();
        for n in 0..MAX_DOCUMENTS * 3 {
            cache.prepare(&mut request(&format!("query Q{n} {{ me {{ sub }} }}")));
        }
        assert_eq!(cache.len(), MAX_DOCUMENTS);
        // The newest are the ones kept.
        let newest = format!("query Q{} {{ me {{ sub }} }}", MAX_DOCUMENTS * 3 - 1);
        assert!(cache.lock().by_text.contains_key(newest.as_str()));
    }
}
