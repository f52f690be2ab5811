//! The console's GraphQL documents, read from its own `js/queries.js`:
//! registered at start-up in registered-only mode (so the console works
//! there too), and run by the query-count test.
//!
//! The file holds `const NAME = `...`;` template strings (and numbers),
//! later ones using earlier ones as `${NAME}`; the exported operations are
//! what the console sends.

const QUERIES_JS: &str = include_str!("../../console/js/queries.js");

/// One operation the console sends: its export name and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub name: String,
    pub text: String,
}

/// Every exported operation of `queries.js`, in file order.
pub fn documents() -> Vec<Document> {
    parse(QUERIES_JS)
}

fn parse(source: &str) -> Vec<Document> {
    let mut values: Vec<(String, String)> = Vec::new();
    let mut exported = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("const ") {
        let before = &rest[..at];
        let is_export = before.trim_end().ends_with("export");
        rest = &rest[at + "const ".len()..];
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name.trim().to_string();
        let after = after.trim_start();
        let (value, remainder) = if let Some(body) = after.strip_prefix('`') {
            match body.split_once('`') {
                Some((text, remainder)) => (text.to_string(), remainder),
                None => break,
            }
        } else {
            match after.split_once(';') {
                Some((text, remainder)) => (text.trim().to_string(), remainder),
                None => break,
            }
        };
        rest = remainder;
        let value = substitute(&value, &values);
        let is_operation = ["query ", "mutation ", "subscription "]
            .iter()
            .any(|kind| value.trim_start().starts_with(kind));
        if is_export && is_operation {
            exported.push(Document {
                name: name.clone(),
                text: value.clone(),
            });
        }
        values.push((name, value));
    }
    exported
}

/// The documents as persisted query registrations, named `console.<NAME>`.
pub fn registrations() -> Vec<crate::persisted::Registration> {
    documents()
        .into_iter()
        .map(|d| crate::persisted::Registration {
            hash: crate::persisted::QueryHash::of(&d.text),
            name: format!("console.{}", d.name),
            query: d.text,
        })
        .collect()
}

/// `${NAME}` replaced by the value defined before it.
fn substitute(text: &str, values: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (name, value) in values.iter().rev() {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::{SchemaLimits, build_schema};

    #[test]
    fn templates_are_filled_in_and_only_exported_operations_listed() {
        let source = "const A = `x y`;\nexport const N = 3;\nexport const Q = `query Q { f(first: ${N}) { ${A} } }`;\nconst P = `query P { z }`;\n";
        assert_eq!(
            parse(source),
            vec![Document {
                name: "Q".into(),
                text: "query Q { f(first: 3) { x y } }".into()
            }]
        );
    }

    /// Every document is valid against the schema, within its depth and
    /// complexity limits: the console never sends what the API refuses.
    #[tokio::test]
    async fn every_console_document_passes_the_schema_s_validation() {
        let schema = build_schema(None, SchemaLimits::default());
        let documents = documents();
        assert!(documents.len() >= 15, "{documents:?}");
        for document in documents {
            assert!(!document.text.contains("${"), "{document:?}");
            let response = schema.execute(document.text.as_str()).await;
            // Without state a resolver answers UNAVAILABLE (or the query
            // needs variables); validation errors have no path and name
            // the rule.
            for error in &response.errors {
                let message = &error.message;
                assert!(
                    !message.contains("too complex")
                        && !message.contains("too deep")
                        && !message.contains("Unknown field")
                        && !message.contains("Unknown type")
                        && !message.contains("Unknown argument"),
                    "{}: {message}",
                    document.name
                );
            }
        }
    }
}
