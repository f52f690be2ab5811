//! Pages of growing lists (snapshots, containers, nodes, webhook
//! deliveries): keyset pagination, and the cursors that mark where a page
//! ended.
//!
//! A cursor is opaque to clients: base64url of `<list>:<JSON position>`.
//! It names its list, so a cursor of one list handed to another is refused,
//! and it must be exactly what the API would have written for that
//! position (checked by writing it again), so a hand-edited, truncated or
//! re-encoded cursor is refused too: `BAD_USER_INPUT`, never a database
//! error. A cursor is a position, not a permission: every page is filtered
//! by what its caller may see, wherever it starts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::errors::{ApiError, ApiResult};

/// One page of a list, and whether more rows follow it.
#[derive(Debug)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub has_next_page: bool,
}

impl<T> Page<T> {
    /// From the rows of a query limited to `first + 1`: the extra row only
    /// says that there is a next page.
    pub fn from_one_more(mut rows: Vec<T>, first: usize) -> Self {
        let has_next_page = rows.len() > first;
        rows.truncate(first);
        Self {
            rows,
            has_next_page,
        }
    }
}

/// `first + 1`, the row count a page query asks for, as SQL's LIMIT takes it.
pub fn limit_with_one_more(first: usize) -> u64 {
    u64::try_from(first).map_or(u64::MAX, |n| n.saturating_add(1))
}

/// Where a page of one list ended.
pub trait Position: Serialize + DeserializeOwned {
    /// The list's name in its cursors.
    const LIST: &'static str;

    /// Whether the decoded values can be a position of this list at all
    /// (lengths, time range): what a database would refuse with an error
    /// instead of an empty page.
    fn is_plausible(&self) -> bool;
}

/// No cursor the API writes is longer: its positions are short.
const MAX_CURSOR_CHARS: usize = 2_048;

/// Text in a position: the longest name or id any list holds is far
/// shorter (Kubernetes names: 253), and Postgres refuses NUL in text.
pub const MAX_POSITION_TEXT: usize = 512;

pub fn plausible_text(text: &str) -> bool {
    text.len() <= MAX_POSITION_TEXT && !text.contains('\0')
}

/// Times in positions: every stored time is in this range; Postgres
/// refuses some that chrono takes (before 4713 BC).
pub fn plausible_time(at: &DateTime<Utc>) -> bool {
    let earliest = DateTime::UNIX_EPOCH;
    let latest = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
        .map(|t| t.to_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    (earliest..=latest).contains(at)
}

pub fn encode<P: Position>(position: &P) -> String {
    // Positions are plain structs of strings, ids and times: serialising
    // them cannot fail.
    let json = serde_json::to_string(position).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(format!("{}:{json}", P::LIST))
}

pub fn decode<P: Position>(cursor: &str) -> ApiResult<P> {
    let invalid = || ApiError::bad_input(format!("invalid cursor for `{}`", P::LIST));
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (list, json) = text.split_once(':').ok_or_else(invalid)?;
    if list != P::LIST {
        return Err(invalid());
    }
    let position: P = serde_json::from_str(json).map_err(|_| invalid())?;
    if !position.is_plausible() || encode(&position) != cursor {
        return Err(invalid());
    }
    Ok(position)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Spot {
        name: String,
    }

    impl Position for Spot {
        const LIST: &'static str = "spots";
        fn is_plausible(&self) -> bool {
            plausible_text(&self.name)
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Other {
        name: String,
    }

    impl Position for Other {
        const LIST: &'static str = "others";
        fn is_plausible(&self) -> bool {
            true
        }
    }

    fn raw(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    #[test]
    fn a_cursor_decodes_to_its_position() {
        let spot = Spot {
            name: "node-1/ü".into(),
        };
        assert_eq!(decode::<Spot>(&encode(&spot)).unwrap(), spot);
    }

    #[test]
    fn forged_cursors_are_bad_input() {
        let other = encode(&Other { name: "a".into() });
        let valid = encode(&Spot { name: "a".into() });
        let forged = [
            String::new(),
            "not base64!".into(),
            "%%%".into(),
            // Another list's cursor.
            other,
            // Hand-written JSON: spaces, an unknown field, a wrong type.
            raw(r#"spots:{ "name": "a" }"#),
            raw(r#"spots:{"name":"a","admin":true}"#),
            raw(r#"spots:{"name":1}"#),
            raw("spots:"),
            raw("spots"),
            // NUL and overlong text, which Postgres would refuse.
            raw("spots:{\"name\":\"a\\u0000b\"}"),
            raw(&format!("spots:{{\"name\":\"{}\"}}", "x".repeat(600))),
            // Padded, or in the other base64 alphabet.
            format!("{valid}="),
            base64::engine::general_purpose::STANDARD.encode(r#"spots:{"name":"a?>"}"#),
            // Not UTF-8.
            URL_SAFE_NO_PAD.encode([0xff, 0xfe, b':']),
            // Huge.
            "A".repeat(1_000_000),
        ];
        for cursor in forged {
            let error = decode::<Spot>(&cursor).expect_err(&cursor);
            assert_eq!(error.message, "invalid cursor for `spots`");
        }
    }

    #[test]
    fn a_page_keeps_first_rows_and_knows_about_the_next() {
        let page = Page::from_one_more(vec![1, 2, 3], 2);
        assert_eq!(page.rows, vec![1, 2]);
        assert!(page.has_next_page);
        let last = Page::from_one_more(vec![1, 2], 2);
        assert!(!last.has_next_page);
        assert_eq!(limit_with_one_more(usize::MAX), u64::MAX);
    }

    #[test]
    fn times_outside_what_is_stored_are_implausible() {
        assert!(plausible_time(&Utc::now()));
        assert!(!plausible_time(
            &DateTime::from_timestamp(-1_000_000_000_000, 0).unwrap()
        ));
        assert!(!plausible_time(&DateTime::<Utc>::MAX_UTC));
    }
}
