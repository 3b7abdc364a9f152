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
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
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
}
