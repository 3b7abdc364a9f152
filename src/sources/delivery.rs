//! From a received body to a [`Delivery`] the store can keep: the JSON
//! read, the dedupe key chosen, the headers worth keeping picked, the body
//! mapped by its source's adapter and what it mentions recorded.
//!
//! A webhook (`crate::http::ingest`) and a backfill (`crate::import`) both
//! come through here, so that an imported record is deduplicated, ordered
//! and kept exactly as the same body delivered live would be.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Kind, SourceSettings, unlinked_mentions};
use crate::model::UtcMillis;
use crate::model::json::{self, Json, JsonError};
use crate::store::Delivery;

/// Request headers kept with each delivery.
pub const KEPT_HEADERS: [&str; 3] = ["traceparent", "user-agent", "content-type"];
/// Headers a sender may use to name its delivery, first match wins.
pub const DEDUPE_HEADERS: [&str; 2] = ["webhook-id", "idempotency-key"];

/// Reads `body`, received at `received_at` for the source of `kind` and
/// `settings`, into a delivery. `header` gives a request header's value by
/// its lower-case name. The dedupe key is the first of: a
/// [`DEDUPE_HEADERS`] header, the envelope's own id, the body's
/// [`content_hash`].
pub fn delivery<'h>(
    kind: Kind,
    settings: &SourceSettings,
    header: impl Fn(&str) -> Option<&'h str>,
    body: Vec<u8>,
    received_at: UtcMillis,
) -> Result<Delivery, JsonError> {
    let text = |name: &str| header(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let (dedupe_key, mapped, mentions) = {
        let read = json::parse_delivery(&body)?;
        let dedupe_key = DEDUPE_HEADERS
            .iter()
            .find_map(|name| text(name))
            .or_else(|| kind.adapter().envelope_id(&read.value))
            .unwrap_or_else(|| hash(&read.value, body.len()));
        let mapped = kind.map(&read, settings);
        let mentions = unlinked_mentions(&mapped, &read.value, settings);
        (dedupe_key, mapped, mentions)
    };
    let headers = KEPT_HEADERS
        .iter()
        .filter_map(|name| text(name).map(|v| (name.to_string(), v)))
        .collect::<BTreeMap<_, _>>();
    Ok(Delivery {
        source: settings.name.clone(),
        dedupe_key,
        received_at,
        headers,
        mentions,
        mapped,
        body,
    })
}

/// The dedupe key of a body without an event id: a SHA-256 of the JSON
/// value, the same whatever its key order, whitespace and the spelling of
/// its numbers.
pub fn content_hash(value: &Value) -> String {
    hash(&Json::from(value), 0)
}

/// [`content_hash`] of a body as read, whose canonical form is about
/// `size` bytes (the body's, but for its white space).
fn hash(value: &Json, size: usize) -> String {
    let mut canonical = Vec::with_capacity(size);
    write_canonical(&mut canonical, value);
    format!("sha256:{}", hex::encode(Sha256::digest(&canonical)))
}

/// Writes the canonical form that is hashed: object keys sorted (a
/// [`Json`] object's order), strings as JSON writes them. Written out
/// whole, then digested at once: fed piece by piece, the digest's own
/// buffering cost more than the copy.
fn write_canonical(out: &mut Vec<u8>, value: &Json) {
    match value {
        Json::Object(object) => {
            out.push(b'{');
            for (key, value) in object.iter() {
                write_str(out, key);
                out.push(b':');
                write_canonical(out, value);
                out.push(b',');
            }
            out.push(b'}');
        }
        Json::Array(items) => {
            out.push(b'[');
            for item in items {
                write_canonical(out, item);
                out.push(b',');
            }
            out.push(b']');
        }
        Json::Number(number) => write_number(out, number),
        Json::String(s) => write_str(out, s),
        Json::Bool(true) => out.extend_from_slice(b"true"),
        Json::Bool(false) => out.extend_from_slice(b"false"),
        Json::Null => out.extend_from_slice(b"null"),
    }
}

/// `s` as serde_json writes it: within quotes, escaping quotes,
/// backslashes and control characters, and nothing else.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        serde_json::to_writer(out, s).expect("a string serializes into memory");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// A number as its value, whatever its spelling: `100`, `100.0` and `1e2`
/// give `100`. A float with no fraction is written as the integer it is
/// when one fits in 64 bits; integers stay exact.
fn write_number(out: &mut Vec<u8>, number: &serde_json::Number) {
    use std::io::Write;
    // From i64::MIN to u64::MAX, both included.
    const INTEGERS: std::ops::Range<f64> = -9_223_372_036_854_775_808.0..18_446_744_073_709_551_616.0;
    let written = match number.as_f64() {
        Some(f) if number.is_f64() && f.fract() == 0.0 && INTEGERS.contains(&f) => write!(out, "{}", f as i128),
        _ => write!(out, "{number}"),
    };
    written.expect("a number writes into memory");
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;

    use super::*;
    use crate::sources::testing;

    #[test]
    fn the_content_hash_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[2,1]},"b":1}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&c));
        assert!(content_hash(&a).starts_with("sha256:"));
    }

    #[test]
    fn the_content_hash_of_a_body_is_the_one_kept_stores_hold() {
        // Computed by the version before the digest was fed without
        // allocating: a retry of a body kept then is still a duplicate.
        let body: Value = serde_json::from_str(
            r#"{"b": [1, 2.50, 1e2, -0.0, true, null, {"z": "q\"uote\\ \u0001 \n é 😀", "a": false}],
                "a": {"y": "", "x": 18446744073709551615}, "é": -7}"#,
        )
        .unwrap();
        assert_eq!(
            content_hash(&body),
            "sha256:88c61f122a7c956c153958858f9763d5576ad461e5fc7c5e08b7898c8c8d9438"
        );
    }

    proptest::proptest! {
        /// Written without serde_json where nothing needs escaping, a
        /// string is still written as serde_json writes it.
        #[test]
        fn strings_are_written_as_serde_json_writes_them(s in r#"(\PC|[\x00-\x1f\x7f"\\])*"#) {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_vec(&s).unwrap());
        }
    }

    #[test]
    fn the_content_hash_counts_equal_numbers_as_equal() {
        let hash = |number: &str| {
            let body: Value = serde_json::from_str(&format!(r#"{{"rewards_balance": {number}}}"#)).unwrap();
            content_hash(&body)
        };
        for same in ["100.0", "1e2", "1E2", "100.00", "1.0e2"] {
            assert_eq!(hash(same), hash("100"), "{same}");
        }
        assert_eq!(hash("-0.0"), hash("0"));
        assert_eq!(hash("-5.0"), hash("-5"));
        assert_eq!(hash("18446744073709551615.0"), hash("1.8446744073709552e19"));
        assert_ne!(hash("100.5"), hash("100"));
        assert_ne!(
            hash("9007199254740993"),
            hash("9007199254740992"),
            "integers stay exact"
        );
        assert_ne!(hash("18446744073709551615"), hash("18446744073709551614"));
    }

    #[test]
    fn the_dedupe_key_is_a_header_then_the_envelope_id_then_the_content_hash() {
        let settings = testing::settings("backfill", TimeZone::UTC);
        let body = br#"{"id": "evt_1", "type": "customer", "payload": {"customerId": "c-1"}}"#;
        let key = |headers: &[(&'static str, &'static str)]| {
            let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
            let at = UtcMillis::now();
            delivery(Kind::Clientele, &settings, header, body.to_vec(), at)
                .unwrap()
                .dedupe_key
        };
        assert_eq!(key(&[("idempotency-key", "k"), ("webhook-id", " w ")]), "w");
        assert_eq!(key(&[("webhook-id", " "), ("idempotency-key", "k")]), "k");
        assert_eq!(key(&[]), "evt_1");
        let no_id = delivery(Kind::Vagaro, &settings, |_| None, b"{}".to_vec(), UtcMillis::now()).unwrap();
        assert_eq!(no_id.dedupe_key, content_hash(&serde_json::json!({})));
    }

    #[test]
    fn only_the_kept_headers_are_kept() {
        let settings = testing::settings("backfill", TimeZone::UTC);
        let header = |name: &str| match name {
            "user-agent" => Some("Apache-HttpClient"),
            "authorization" => Some("Bearer secret"),
            _ => None,
        };
        let kept = delivery(Kind::Clientele, &settings, header, b"{}".to_vec(), UtcMillis::now()).unwrap();
        assert_eq!(
            kept.headers,
            BTreeMap::from([("user-agent".to_owned(), "Apache-HttpClient".to_owned())])
        );
    }
}
