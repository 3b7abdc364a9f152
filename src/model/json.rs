//! Reading JSON with one depth bound for the whole service.
//!
//! Bodies from outside ([`parse_body`], [`parse_delivery`]) may nest at
//! most [`MAX_DEPTH`] levels (SPEC §8). What Clientele stores nests those
//! bodies a few levels deeper (a history entry's `changes.attributes.to…`),
//! so JSON it wrote itself is read back with [`decode`], without
//! serde_json's own limit of 128: its depth was bounded on the way in.
//!
//! A delivery is read into a [`Json`] rather than a `serde_json::Value`:
//! the same tree, its strings borrowed from the body (adapters copy only
//! what they keep).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use super::Warning;

/// Nesting levels a body may have (arrays and objects).
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("the body nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the body is not valid JSON: {0}")]
    Syntax(serde_json::Error),
}

/// Not `#[from]`, which makes the cause a `source()` too: the message says
/// it already.
impl From<serde_json::Error> for JsonError {
    fn from(error: serde_json::Error) -> Self {
        Self::Syntax(error)
    }
}

/// A platform's delivery as read by [`parse_delivery`].
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<'a> {
    pub value: Json<'a>,
    /// How many escapes of lone UTF-16 surrogates were read as U+FFFD.
    pub lone_surrogates: usize,
}

impl Delivery<'_> {
    /// What reading the body repaired, for the event's history entry.
    /// Names no value: the raw body keeps them.
    pub fn warning(&self) -> Option<Warning> {
        (self.lone_surrogates > 0).then(|| Warning {
            field: "body".to_owned(),
            problem: format!(
                "holds {} escape(s) of a lone UTF-16 surrogate (\\uD800 to \\uDFFF without its pair), read as U+FFFD",
                self.lone_surrogates
            ),
        })
    }
}

/// Parses a request body received from outside, strictly.
pub fn parse_body(bytes: &[u8]) -> Result<Value, JsonError> {
    if scan(bytes).deepest > MAX_DEPTH {
        return Err(JsonError::TooDeep);
    }
    Ok(decode(bytes)?)
}

/// Parses a platform's webhook body. Unlike [`parse_body`] it reads an
/// escaped lone surrogate (`"Ana\ud83d"`, the half of an emoji that some
/// senders cut strings at) as U+FFFD, as any lossy UTF-16 decoder does: the
/// JSON is otherwise sound, and refusing it would make the platform retry
/// it forever. The raw body is kept as sent.
pub fn parse_delivery(bytes: &[u8]) -> Result<Delivery<'_>, JsonError> {
    let scan = scan(bytes);
    if scan.deepest > MAX_DEPTH {
        return Err(JsonError::TooDeep);
    }
    let value = if scan.lone_surrogates.is_empty() {
        decode(bytes)?
    } else {
        let mut repaired = bytes.to_vec();
        for &at in &scan.lone_surrogates {
            repaired[at..at + ESCAPE_LEN].copy_from_slice(br"\ufffd");
        }
        decode::<Json>(&repaired)?.into_owned()
    };
    Ok(Delivery {
        value,
        lone_surrogates: scan.lone_surrogates.len(),
    })
}

/// Reads JSON that Clientele wrote itself, whose depth is already bounded.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    deserializer.disable_recursion_limit();
    let value = T::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// JSON as a delivery is read: `serde_json::Value`'s tree, with strings
/// and keys borrowed from the body unless they hold an escape, and an
/// object's members in one sorted vector rather than a map of owned keys.
/// Reading a body allocates for its objects and arrays only.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// An object's members, sorted by key, each key once: a key sent twice
/// keeps its last value, as `serde_json::Value` does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    fn new(mut members: Vec<(Cow<'a, str>, Json<'a>)>) -> Self {
        // Stable: the members of a repeated key stay in the order sent.
        members.sort_by(|a, b| by_key(&a.0, &b.0));
        members.dedup_by(|later, earlier| {
            let repeated = later.0 == earlier.0;
            if repeated {
                std::mem::swap(&mut later.1, &mut earlier.1);
            }
            repeated
        });
        Self(members)
    }

    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        let at = self.0.binary_search_by(|(k, _)| by_key(k, key)).ok()?;
        Some(&self.0[at].1)
    }

    /// The members in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

/// Keys in the order `str` has them, compared byte by byte: keys are
/// short and mostly differ early, where calling `memcmp` cost more than
/// the comparison (6,300 instructions a delivery, 500 since).
fn by_key(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes().cmp(b.bytes())
}

impl<'a> Json<'a> {
    /// An object's member; `None` for anything else.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(object) => object.get(key),
            _ => None,
        }
    }

    /// The same JSON, holding its strings itself.
    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Number(n) => Json::Number(n),
            Json::String(s) => Json::String(Cow::Owned(s.into_owned())),
            Json::Array(items) => Json::Array(items.into_iter().map(Json::into_owned).collect()),
            Json::Object(Object(members)) => Json::Object(Object(
                members
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            )),
        }
    }
}

/// A `serde_json::Value` read as a [`Json`], borrowing its strings.
impl<'a> From<&'a Value> for Json<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(Cow::Borrowed(s)),
            Value::Array(items) => Json::Array(items.iter().map(Json::from).collect()),
            Value::Object(map) => Json::Object(Object::new(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from(v)))
                    .collect(),
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Builds a [`Json`] as serde_json's own visitor builds a `Value`.
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(f).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some((Key(key), value)) = map.next_entry()? {
            members.push((key, value));
        }
        Ok(Json::Object(Object::new(members)))
    }
}

/// An object's key, borrowed unless it holds an escape (serde's own
/// `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(s)))
    }
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

/// What one pass over a body finds. Invalid JSON gets some answer; the
/// parser then refuses it.
struct Scan {
    /// The deepest nesting of arrays and objects, outside strings.
    deepest: usize,
    /// Where each `\uXXXX` escape of a lone surrogate starts, inside strings.
    lone_surrogates: Vec<usize>,
}

/// The length of a `\uXXXX` escape.
const ESCAPE_LEN: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surrogate {
    High,
    Low,
}

fn scan(bytes: &[u8]) -> Scan {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut lone_surrogates = Vec::new();
    let mut in_string = false;
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        at += match (in_string, b) {
            (true, b'\\') => match surrogate(bytes, at) {
                None => 2,
                Some(Surrogate::High) if surrogate(bytes, at + ESCAPE_LEN) == Some(Surrogate::Low) => 2 * ESCAPE_LEN,
                Some(_) => {
                    lone_surrogates.push(at);
                    ESCAPE_LEN
                }
            },
            (true, b'"') => {
                in_string = false;
                1
            }
            // The rest of a string up to its next quote or escape, at once.
            (true, _) => memchr::memchr2(b'"', b'\\', &bytes[at..]).unwrap_or(bytes.len() - at),
            (false, b'"') => {
                in_string = true;
                1
            }
            (false, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
                1
            }
            (false, b']' | b'}') => {
                depth = depth.saturating_sub(1);
                1
            }
            (false, _) => 1,
        };
    }
    Scan {
        deepest,
        lone_surrogates,
    }
}

/// The surrogate that a `\uXXXX` escape at `at` names, if it is one.
fn surrogate(bytes: &[u8], at: usize) -> Option<Surrogate> {
    let escape = bytes.get(at..at + ESCAPE_LEN)?;
    let hex = escape.strip_prefix(br"\u")?;
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    match u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()? {
        0xD800..=0xDBFF => Some(Surrogate::High),
        0xDC00..=0xDFFF => Some(Surrogate::Low),
        _ => None,
    }
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
        assert_eq!(scan(body.as_bytes()).deepest, 2);
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

    #[test]
    fn a_lone_surrogate_escape_in_a_delivery_is_read_as_the_replacement_character() {
        let cases = [
            (r#"{"firstName": "Ana\ud83d"}"#, "Ana\u{fffd}", 1),
            (r#"{"firstName": "Ana\uD83D"}"#, "Ana\u{fffd}", 1),
            (r#"{"firstName": "\udc00x"}"#, "\u{fffd}x", 1),
            (r#"{"firstName": "\ud83d\ud83d\ude00"}"#, "\u{fffd}\u{1f600}", 1),
            (r#"{"firstName": "\ud83d\u0041\ude00"}"#, "\u{fffd}A\u{fffd}", 2),
            (r#"{"firstName": "\ud83d\ude00"}"#, "\u{1f600}", 0),
            (r#"{"firstName": "\\ud83d"}"#, r"\ud83d", 0),
            (r#"{"firstName": "\"\ud800"}"#, "\"\u{fffd}", 1),
        ];
        for (body, read, lone) in cases {
            let delivery = parse_delivery(body.as_bytes()).unwrap();
            assert_eq!(
                delivery.value.get("firstName"),
                Some(&Json::String(read.into())),
                "{body}"
            );
            assert_eq!(delivery.lone_surrogates, lone, "{body}");
            assert_eq!(delivery.warning().is_some(), lone > 0, "{body}");
        }
        let key = parse_delivery(br#"{"na\udbffme": 1}"#).unwrap();
        assert_eq!(key.value.get("na\u{fffd}me"), Some(&Json::Number(1.into())));
        assert!(
            matches!(parse_body(br#"{"firstName": "Ana\ud83d"}"#), Err(JsonError::Syntax(_))),
            "API requests stay strict"
        );
        let warning = parse_delivery(br#"["\ud83d"]"#).unwrap().warning().unwrap();
        assert_eq!(warning.field, "body");
        assert!(warning.problem.contains("U+FFFD"), "{}", warning.problem);
    }

    /// A JSON string literal of UTF-16 `units`, each written as itself
    /// where it can be and `literal` asks, else as a `\uXXXX` escape.
    fn string_of_units(units: &[(u16, bool)]) -> String {
        let mut text = String::from("\"");
        for &(unit, literal) in units {
            match char::from_u32(unit.into()) {
                Some(c) if literal && c >= ' ' && c != '"' && c != '\\' => text.push(c),
                _ if literal => text.push_str(&format!("\\u{unit:04X}")),
                _ => text.push_str(&format!("\\u{unit:04x}")),
            }
        }
        text.push('"');
        text
    }

    /// Nesting levels of a parsed value, counted as [`scan`] counts them.
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

    /// Objects whose keys repeat, spelled alike or escaped differently
    /// (`"a"` and `"\u0061"` are one key), around values of every kind.
    fn objects_with_repeated_keys() -> impl Strategy<Value = Vec<u8>> {
        let key = prop::sample::select(vec![
            r#""a""#,
            r#""\u0061""#,
            r#""b""#,
            r#""\n""#,
            r#""é""#,
            r#""\u00e9""#,
        ]);
        let value = prop::sample::select(vec![
            "1",
            "-0",
            "1e2",
            "null",
            "true",
            r#""x\"y""#,
            "[1,{}]",
            r#"{"a":2,"a":3}"#,
        ]);
        prop::collection::vec((key, value), 0..8).prop_map(|members| {
            let members: Vec<String> = members.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", members.join(",")).into_bytes()
        })
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
        fn keys_are_ordered_as_strings_are(a in r"\PC{0,6}", b in r"\PC{0,6}") {
            prop_assert_eq!(by_key(&a, &b), a.cmp(&b));
        }

        #[test]
        fn parsers_never_panic_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(value) = parse_body(&bytes) {
                prop_assert!(levels(&value) <= MAX_DEPTH);
            }
            let _ = parse_delivery(&bytes);
        }

        /// Without lone surrogates, a delivery reads as `serde_json::Value`
        /// does, to the last duplicate key and the error's message.
        #[test]
        fn a_delivery_reads_as_a_value_does(
            bytes in prop_oneof![json_soup(), damaged_nesting(), objects_with_repeated_keys()],
        ) {
            match (parse_body(&bytes), parse_delivery(&bytes)) {
                (Ok(value), Ok(delivery)) => {
                    prop_assert_eq!(delivery.lone_surrogates, 0);
                    prop_assert_eq!(delivery.value, Json::from(&value));
                }
                (Err(body), Err(delivery)) => prop_assert_eq!(body.to_string(), delivery.to_string()),
                (body, delivery) => {
                    prop_assert!(delivery.is_ok_and(|d| d.lone_surrogates > 0), "{:?}", body);
                }
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

        /// A delivery's strings read as a lossy UTF-16 decoder reads their
        /// code units: each lone surrogate is one U+FFFD, and counted.
        #[test]
        fn deliveries_read_strings_as_lossy_utf16(
            units in prop::collection::vec((prop_oneof![0xD800u16..=0xDFFF, any::<u16>(), 0x20u16..0x7F], any::<bool>()), 0..12),
        ) {
            let body = format!(r#"{{"k": {}, "n": [1]}}"#, string_of_units(&units));
            let codes: Vec<u16> = units.iter().map(|&(unit, _)| unit).collect();
            let lone = char::decode_utf16(codes.iter().copied()).filter(Result::is_err).count();
            let delivery = parse_delivery(body.as_bytes()).unwrap();
            let k = Json::String(String::from_utf16_lossy(&codes).into());
            prop_assert_eq!(delivery.value.get("k"), Some(&k), "{}", body);
            prop_assert_eq!(delivery.value.get("n"), Some(&Json::Array(vec![Json::Number(1.into())])));
            prop_assert_eq!(delivery.lone_surrogates, lone, "{}", body);
            if lone == 0 {
                let value = parse_body(body.as_bytes()).ok();
                prop_assert_eq!(value.as_ref().map(Json::from), Some(delivery.value));
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
