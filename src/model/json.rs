//! Reading JSON with one depth bound for the whole service.
//!
//! Bodies from outside ([`parse_body`]) may nest at most [`MAX_DEPTH`]
//! levels (SPEC §8). What Clientele stores nests those bodies a few levels
//! deeper (a history entry's `changes.attributes.to…`), so JSON it wrote
//! itself is read back with [`decode`], without serde_json's own limit of
//! 128: its depth was bounded on the way in.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Nesting levels a body may have (arrays and objects).
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("the body nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the body is not valid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
}

/// Parses a body received from outside.
pub fn parse_body(bytes: &[u8]) -> Result<Value, JsonError> {
    if depth(bytes) > MAX_DEPTH {
        return Err(JsonError::TooDeep);
    }
    Ok(decode(bytes)?)
}

/// Reads JSON that Clientele wrote itself, whose depth is already bounded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    deserializer.disable_recursion_limit();
    let value = T::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Whether a string or a key anywhere in `value` holds a NUL.
pub fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The deepest nesting of arrays and objects in `bytes`, outside strings.
/// Invalid JSON gets some number; the parser then refuses it.
fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn a_nul_is_found_in_any_string_or_key() {
        let nul: Value = serde_json::from_str(r#"{"a": [1, {"b": "x\u0000"}]}"#).unwrap();
        let key: Value = serde_json::from_str(r#"{"\u0000": 1}"#).unwrap();
        let clean: Value = serde_json::from_str(r#"{"a": [null, true, 1.5, "\\u0000"]}"#).unwrap();
        assert!(has_nul(&nul) && has_nul(&key));
        assert!(!has_nul(&clean));
    }

    #[test]
    fn bodies_may_nest_128_levels_and_no_more() {
        assert!(parse_body(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert!(matches!(
            parse_body(nested(MAX_DEPTH + 1).as_bytes()),
            Err(JsonError::TooDeep)
        ));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let body = format!(r#"{{"a": "{}\"[[[", "b": [1]}}"#, "[".repeat(500));
        assert_eq!(depth(body.as_bytes()), 2);
        assert!(parse_body(body.as_bytes()).is_ok());
    }

    #[test]
    fn what_clientele_wrote_deeper_is_read_back() {
        let deep = nested(MAX_DEPTH + 5);
        let value: Value = decode(deep.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), deep);
        assert!(
            serde_json::from_str::<Value>(&deep).is_err(),
            "serde_json alone refuses it"
        );
    }

    #[test]
    fn syntax_errors_are_not_depth_errors() {
        assert!(matches!(parse_body(b"{not json"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse_body(b"[1] [2]"), Err(JsonError::Syntax(_))));
    }

    /// Nesting levels of a parsed value, counted as [`depth`] counts them.
    fn levels(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(levels).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(levels).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// JSON nested exactly `kinds.len()` levels, an array or an object at
    /// each (`true` is an object), every level holding a string of
    /// brackets, quotes and backslashes before its child: noise that the
    /// depth count must see through.
    fn nested_with_noise(kinds: &[bool], noise: &str) -> String {
        let noise = serde_json::to_string(noise).expect("a string serializes");
        let mut text = String::from("1");
        for &object in kinds.iter().rev() {
            text = if object {
                format!("{{{noise}: {noise}, \"k\": {text}}}")
            } else {
                format!("[{noise}, {text}]")
            };
        }
        text
    }

    /// Bytes drawn mostly from JSON's structural characters, so that random
    /// bodies reach deep nesting, strings and escapes, plus invalid UTF-8.
    fn json_soup() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            8 => prop::sample::select(b"[]{}\\\":,1 ae-.".to_vec()),
            1 => any::<u8>(),
        ];
        prop::collection::vec(byte, 0..400)
    }

    /// Nested JSON up to past the bound, with a few bytes overwritten,
    /// inserted or removed: bodies at the edge of validity.
    fn damaged_nesting() -> impl Strategy<Value = Vec<u8>> {
        let levels = prop_oneof![0..=8usize, MAX_DEPTH - 2..=MAX_DEPTH + 2];
        let kinds = levels.prop_flat_map(|n| prop::collection::vec(any::<bool>(), n));
        let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..4);
        (kinds, r#"[\[\]{}"\\a]{0,4}"#, edits).prop_map(|(kinds, noise, edits)| {
            let mut bytes = nested_with_noise(&kinds, &noise).into_bytes();
            for (at, byte, edit) in edits {
                if bytes.is_empty() {
                    break;
                }
                let at = at.index(bytes.len());
                match edit {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            bytes
        })
    }

    proptest! {
        #[test]
        fn parse_body_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(value) = parse_body(&bytes) {
                prop_assert!(levels(&value) <= MAX_DEPTH);
            }
        }

        /// `parse_body` is the unbounded parser with one extra refusal:
        /// nesting beyond `MAX_DEPTH`, and nothing else.
        #[test]
        fn parse_body_is_the_parser_bounded_at_max_depth(bytes in prop_oneof![json_soup(), damaged_nesting()]) {
            match (decode::<Value>(&bytes), parse_body(&bytes)) {
                (Ok(value), Ok(parsed)) => {
                    prop_assert!(levels(&value) <= MAX_DEPTH);
                    prop_assert_eq!(parsed, value);
                }
                (Ok(value), Err(JsonError::TooDeep)) => prop_assert!(levels(&value) > MAX_DEPTH),
                (Ok(_), Err(JsonError::Syntax(e))) => prop_assert!(false, "decoded, yet a syntax error: {}", e),
                (Err(_), parsed) => prop_assert!(parsed.is_err()),
            }
        }

        #[test]
        fn nesting_is_refused_exactly_beyond_max_depth(
            kinds in prop::collection::vec(any::<bool>(), MAX_DEPTH - 8..=MAX_DEPTH + 8),
            noise in r#"[\[\]{}"\\a]{0,6}"#,
        ) {
            let text = nested_with_noise(&kinds, &noise);
            match parse_body(text.as_bytes()) {
                Ok(value) => {
                    prop_assert!(kinds.len() <= MAX_DEPTH, "{} levels accepted", kinds.len());
                    prop_assert_eq!(levels(&value), kinds.len());
                }
                Err(JsonError::TooDeep) => prop_assert!(kinds.len() > MAX_DEPTH, "{} levels refused", kinds.len()),
                Err(JsonError::Syntax(e)) => prop_assert!(false, "{text}: {e}"),
            }
        }
    }
}
