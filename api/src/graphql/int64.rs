//! `Int64`, the schema's scalar for byte counts and durations.
//!
//! GraphQL's `Int` is 32 bits by the spec: a 3 GiB layer does not fit, and
//! strict clients (graphql-core, Apollo's codegen) reject such a value. The
//! value travels as a JSON string of decimal digits, not a JSON number,
//! because JavaScript clients parse every JSON number into a double and
//! silently round integers past 2^53; a string reaches them exactly and a
//! strict client validates it with one rule (an optional `-`, then digits,
//! within the signed 64-bit range). Inputs take the same string, or an
//! integer literal or JSON integer, so hand-written queries stay easy.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// A signed 64-bit integer, in the schema as `Int64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Int64(pub i64);

impl From<i64> for Int64 {
    fn from(value: i64) -> Self {
        Self(value)
    }
}

/// A signed 64-bit integer (-9223372036854775808 to 9223372036854775807),
/// for byte counts and durations that can pass `Int`'s 32 bits. Sent as a
/// string of decimal digits (`"3221225472"`), so JavaScript clients, whose
/// numbers are doubles, get it exactly (`BigInt(value)`, or `Number(value)`
/// below 2^53). Accepted as input in the same form, or as an integer.
#[Scalar(name = "Int64")]
impl ScalarType for Int64 {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => parse_decimal(text).map(Self).ok_or_else(|| {
                InputValueError::custom(format!(
                    "\"{}\" is not a signed 64-bit integer in decimal digits",
                    excerpt(text)
                ))
            }),
            Value::Number(number) => number.as_i64().map(Self).ok_or_else(|| {
                InputValueError::custom(format!("{number} is not a signed 64-bit integer"))
            }),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        match value {
            Value::String(text) => parse_decimal(text).is_some(),
            Value::Number(number) => number.as_i64().is_some(),
            _ => false,
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// `-?[0-9]+` within the i64 range, nothing else: no `+`, no spaces, no
/// exponent, no fraction (`str::parse` alone would take a leading `+`).
fn parse_decimal(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The start of a refused input, so a huge string makes a short message.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    if text.chars().count() <= MAX_CHARS {
        return text.to_string();
    }
    let start: String = text.chars().take(MAX_CHARS).collect();
    format!("{start}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<i64, String> {
        <Int64 as ScalarType>::parse(value)
            .map(|v| v.0)
            .map_err(|e| e.into_server_error(Default::default()).message)
    }

    #[test]
    fn values_past_32_bits_are_strings_of_digits() {
        let three_gib = 3 * 1024 * 1024 * 1024_i64;
        assert_eq!(
            Int64(three_gib).to_value(),
            Value::String("3221225472".into())
        );
        assert_eq!(
            Int64(i64::MIN).to_value(),
            Value::String("-9223372036854775808".into())
        );
    }

    #[test]
    fn inputs_are_digits_or_integers_within_64_bits() {
        assert_eq!(parse(Value::String("3221225472".into())), Ok(3221225472));
        assert_eq!(parse(Value::String("-1".into())), Ok(-1));
        assert_eq!(
            parse(Value::String("9223372036854775807".into())),
            Ok(i64::MAX)
        );
        assert_eq!(parse(Value::from(3221225472_i64)), Ok(3221225472));
        assert_eq!(parse(Value::from(i64::MIN)), Ok(i64::MIN));
    }

    #[test]
    fn anything_else_is_refused_with_a_short_message() {
        let huge = "9".repeat(100_000);
        for text in [
            "9223372036854775808",
            "+1",
            " 1",
            "1 ",
            "1e3",
            "1.0",
            "0x10",
            "",
            "-",
            "١٢",
            huge.as_str(),
        ] {
            let refused = parse(Value::String(text.into()));
            let message = refused.expect_err(text);
            assert!(message.len() < 200, "{message}");
        }
        for value in [
            Value::from(u64::MAX),
            Value::from(1.5),
            Value::Boolean(true),
            Value::Null,
            Value::List(vec![Value::from(1)]),
        ] {
            assert!(parse(value.clone()).is_err(), "{value}");
            assert!(!<Int64 as ScalarType>::is_valid(&value), "{value}");
        }
    }
}
