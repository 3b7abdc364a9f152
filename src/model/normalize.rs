//! Normalization of platform field values into canonical ones (SPEC §4
//! "Normalization"): strings, emails, phones, regions, countries, booleans,
//! timestamps, dates and the free-form `attributes`.
//!
//! Adapters (`crate::sources`) call these on every field they read; each
//! returns the normalized value, `None` for an absent or null-like value, or
//! a [`Problem`]. A [`Reader`] collects an event's problems as [`Warning`]s
//! (the field becomes `null`, the event still applies), and [`required`]
//! turns a missing essential into the reason an event is quarantined.
//! Nothing here knows a platform.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::fmt::temporal::Pieces;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::json::{Json, Object};
use super::{Address, CustomerRef, Identifier, Phone, Warning};

/// An instant in UTC with millisecond precision, from
/// `0001-01-01T00:00:00.000Z` to `9999-12-31T23:59:59.999Z`, shown as
/// `2026-04-24T18:38:21.000Z` everywhere Clientele writes a time.
///
/// Held as milliseconds since 1970 rather than as a jiff `Timestamp`:
/// jiff's instants end at `9999-12-30T22:00Z` (so that any offset keeps
/// them within its civil calendar), and platforms send the last day of
/// year 9999 as "never".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcMillis(i64);

/// Midnight on 1970-01-01 in UTC, where the milliseconds count from.
const EPOCH: DateTime = jiff::civil::date(1970, 1, 1).at(0, 0, 0, 0);

impl UtcMillis {
    /// `0001-01-01T00:00:00.000Z`.
    const MIN: i64 = -62_135_596_800_000;
    /// `9999-12-31T23:59:59.999Z`.
    const MAX: i64 = 253_402_300_799_999;

    pub fn now() -> Self {
        Self::from_timestamp(Timestamp::now())
    }

    /// Floors to the millisecond, as every time is (see
    /// [`UtcMillis::parse_in`]); an instant outside the years 1 to 9999
    /// gives the nearer end of that range.
    pub fn from_timestamp(ts: Timestamp) -> Self {
        let ms = i64::try_from(ts.as_nanosecond().div_euclid(1_000_000)).expect("jiff's instants fit in 64 bits");
        Self(ms.clamp(Self::MIN, Self::MAX))
    }

    /// The instant as a jiff `Timestamp`, for arithmetic on the server's
    /// clock; an instant after jiff's last one gives that one.
    pub fn as_timestamp(self) -> Timestamp {
        Timestamp::from_millisecond(self.0).unwrap_or(Timestamp::MAX)
    }

    /// `wait` after this instant, or jiff's last instant if that is later.
    pub fn saturating_add(self, wait: std::time::Duration) -> Self {
        Self::from_timestamp(self.as_timestamp().checked_add(wait).unwrap_or(Timestamp::MAX))
    }

    pub fn as_millisecond(self) -> i64 {
        self.0
    }

    /// The instant `ms` milliseconds after the epoch, within the years 1
    /// to 9999 (the nearer end of them otherwise), as a store keeps it.
    pub fn from_millisecond(ms: i64) -> Self {
        Self(ms.clamp(Self::MIN, Self::MAX))
    }

    /// Reads a platform time: RFC 3339 with `Z` or an offset, or an
    /// offset-less `YYYY-MM-DD[T ]hh:mm:ss[.SSS]` read in `tz` (or in the
    /// zone of a `[Area/City]` annotation, should a platform send one).
    ///
    /// An offset-less time that a daylight-saving change makes ambiguous
    /// takes the earlier instant (SPEC §8); one that falls in the hour
    /// skipped in spring is moved forward by the gap, as clocks are (jiff's
    /// "compatible" disambiguation: the offset before the change, in both
    /// cases). Instants outside the years 1 to 9999 UTC are refused, so
    /// every accepted time prints as RFC 3339 and parses back.
    pub fn parse_in(s: &str, tz: &TimeZone) -> Result<Self, Problem> {
        Self::from_pieces(&pieces(s).ok_or(Problem::NotTimestamp)?, tz)
    }

    fn from_pieces(pieces: &Pieces<'_>, tz: &TimeZone) -> Result<Self, Problem> {
        let time = pieces.time().ok_or(Problem::NotTimestamp)?;
        let civil = pieces.date().to_datetime(time);
        let offset = match pieces.to_numeric_offset() {
            Some(offset) => offset,
            None => {
                let zone = pieces
                    .to_time_zone()
                    .map_err(|_| Problem::UnknownTimeZone)?
                    .unwrap_or_else(|| tz.clone());
                match zone.to_ambiguous_timestamp(civil).offset() {
                    AmbiguousOffset::Unambiguous { offset }
                    | AmbiguousOffset::Gap { before: offset, .. }
                    | AmbiguousOffset::Fold { before: offset, .. } => offset,
                }
            }
        };
        Self::from_civil(civil, offset)
    }

    /// The instant that `civil` names at `offset`, floored to the
    /// millisecond: toward the past, before 1970 as after, so that
    /// `…59.9995Z` is `…59.999Z` whatever the year.
    fn from_civil(civil: DateTime, offset: Offset) -> Result<Self, Problem> {
        let since_epoch = civil.duration_since(EPOCH) - SignedDuration::from_secs(offset.seconds().into());
        i64::try_from(since_epoch.as_nanos().div_euclid(1_000_000))
            .ok()
            .filter(|ms| (Self::MIN..=Self::MAX).contains(ms))
            .map(Self)
            .ok_or(Problem::YearOutOfRange)
    }
}

/// The parts of a time, RFC 3339 or offset-less; `None` for an offset
/// beyond RFC 3339's ±23:59, which jiff reads up to ±25:59:59.
fn pieces(s: &str) -> Option<Pieces<'_>> {
    const LARGEST_OFFSET: i32 = 23 * 3600 + 59 * 60;
    Pieces::parse(s).ok().filter(|pieces| {
        pieces
            .to_numeric_offset()
            .is_none_or(|o| o.seconds().abs() <= LARGEST_OFFSET)
    })
}

impl fmt::Display for UtcMillis {
    /// `YYYY-MM-DDThh:mm:ss.SSSZ`, its digits written into a buffer: every
    /// stored time and every JSON answer goes through here. (`strftime`
    /// reads its format string each time; `write!` with seven padded fields
    /// took a tenth of an import's writer, callgrind.)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = EPOCH
            .checked_add(SignedDuration::from_millis(self.0))
            .expect("the years 1 to 9999 are civil times");
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut digits = |end: usize, mut value: i32| {
            for at in text[..end].iter_mut().rev() {
                if !at.is_ascii_digit() {
                    break;
                }
                *at = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        digits(4, t.year().into());
        digits(7, t.month().into());
        digits(10, t.day().into());
        digits(13, t.hour().into());
        digits(16, t.minute().into());
        digits(19, t.second().into());
        digits(23, t.millisecond().into());
        f.write_str(std::str::from_utf8(&text).expect("ASCII"))
    }
}

impl FromStr for UtcMillis {
    type Err = Problem;

    /// Reads an RFC 3339 instant (`Z` or an offset), as [`UtcMillis::parse_in`]
    /// does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let pieces = pieces(s).ok_or(Problem::NotTimestamp)?;
        if pieces.to_numeric_offset().is_none() {
            return Err(Problem::NotTimestamp);
        }
        Self::from_pieces(&pieces, &TimeZone::UTC)
    }
}

impl Serialize for UtcMillis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcMillis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Documented as what it is on the wire: an RFC 3339 time in UTC.
impl schemars::JsonSchema for UtcMillis {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Time".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "An instant in UTC with millisecond precision.",
            "examples": ["2026-04-24T18:38:21.000Z"],
        })
    }
}

/// An ISO 3166-1 alpha-2 country code, upper-case, or one of the three
/// codes outside ISO 3166-1's assigned ones that libphonenumber and CLDR
/// use as regions (see [`BEYOND_ISO`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country(&'static str);

/// Kosovo's `XK` (user-assigned, used by the EU, CLDR and libphonenumber),
/// Ascension's `AC` and Tristan da Cunha's `TA` (exceptionally reserved for
/// them; ISO 3166-1 files both under `SH`, but their phone numbers are not
/// Saint Helena's: `+247` and `+290 8`). A record or a source in these
/// places reads its national phone numbers by their rules.
const BEYOND_ISO: [&str; 3] = ["XK", "AC", "TA"];

impl Country {
    /// Accepts an alpha-2 code in any case, trimmed.
    pub fn parse(code: &str) -> Option<Self> {
        let code = code.trim().to_ascii_uppercase();
        rust_iso3166::from_alpha2(&code)
            .map(|c| Self(c.alpha2))
            .or_else(|| BEYOND_ISO.iter().find(|&&c| c == code).map(|&c| Self(c)))
    }

    /// Accepts what platforms send as a record's country: an alpha-2 or an
    /// alpha-3 code, in any case. Configuration keeps to [`Country::parse`].
    pub fn from_code(code: &str) -> Option<Self> {
        Self::parse(code)
            .or_else(|| rust_iso3166::from_alpha3(&code.trim().to_ascii_uppercase()).map(|c| Self(c.alpha2)))
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Country::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not an ISO 3166-1 alpha-2 country code (e.g. \"US\")"))
        })
    }
}

/// Why a field's value cannot be read. The message is a predicate on the
/// field ("optOut is not a boolean") and never holds the value: values may
/// be personal data, and the raw body keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("is missing")]
    Missing,
    #[error("is not a string")]
    NotString,
    #[error("is not a boolean")]
    NotBoolean,
    #[error("is not an object")]
    NotObject,
    #[error("is not a list")]
    NotList,
    #[error("is not an ISO 3166-1 country code")]
    UnknownCountry,
    #[error("is not an ISO 3166-2 subdivision code")]
    UnknownRegion,
    #[error("is a region code with no country to qualify it")]
    RegionWithoutCountry,
    #[error("is not a date and time")]
    NotTimestamp,
    #[error("names an unknown time zone")]
    UnknownTimeZone,
    #[error("is outside the years 1 to 9999")]
    YearOutOfRange,
    #[error("is not a calendar date (YYYY-MM-DD)")]
    NotDate,
    #[error("names the customer itself")]
    SelfReference,
    #[error("is not a known status")]
    UnknownStatus,
    #[error("is not a string or a whole number")]
    NotId,
}

/// The years a canonical time or date may have: four digits, after year 0.
const YEARS: std::ops::RangeInclusive<i16> = 1..=9999;

/// Trims a platform string of [`blank`] characters; `""` and `"N/A"` (any
/// case) are how platforms say "no value". NUL characters are removed
/// first: they are never data (the raw body keeps them), and no SQL text
/// column can hold them.
fn clean(s: &str) -> Option<Cow<'_, str>> {
    let says_something = |trimmed: &str| !trimmed.is_empty() && !trimmed.eq_ignore_ascii_case("n/a");
    if s.contains('\0') {
        let s = s.replace('\0', "");
        let trimmed = s.trim_matches(blank);
        says_something(trimmed).then(|| Cow::Owned(trimmed.to_owned()))
    } else {
        let trimmed = s.trim_matches(blank);
        says_something(trimmed).then_some(Cow::Borrowed(trimmed))
    }
}

/// Characters that show nothing: white space, and the zero-width ones
/// that text picks up from copy and paste and from files saved with a
/// byte order mark (U+200B to U+200D, U+2060, U+FEFF). Only trimmed around
/// text: inside it a zero-width joiner binds emoji and scripts.
fn blank(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

/// `"true"`/`"false"` in any case, as platforms serialize booleans.
fn bool_word(s: &str) -> Option<bool> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A string field. Numbers are read as their decimal form because
/// platforms send ids as integers as readily as strings (`"3904"`, `19`).
pub fn text(v: &Json) -> Result<Option<String>, Problem> {
    Ok(text_in(v)?.map(Cow::into_owned))
}

/// [`text`] borrowed from the body where it can be, for the parsers that
/// keep something else than the text itself.
fn text_in<'v>(v: &'v Json) -> Result<Option<Cow<'v, str>>, Problem> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) => Ok(clean(s)),
        Json::Number(n) => Ok(Some(Cow::Owned(n.to_string()))),
        Json::Bool(_) | Json::Array(_) | Json::Object(_) => Err(Problem::NotString),
    }
}

/// An identifier: a string (as [`text`]), or a whole number that JSON holds
/// exactly. A fraction, or a number past 64 bits, would be rounded, and two
/// customers could share the rounded id.
pub fn id(v: &Json) -> Result<Option<String>, Problem> {
    match v {
        Json::Number(n) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        Json::Number(_) => Err(Problem::NotId),
        other => text(other).map_err(|_| Problem::NotId),
    }
}

/// The most customers one event may merge: a larger merge is quarantined
/// for review rather than applied (it is no platform's normal traffic, and
/// would hold the store's writer for long).
pub const MAX_MERGED: usize = 1000;

/// An email address: trimmed and lower-cased, nothing more (SPEC §4). It
/// is not otherwise validated: the platform's value is the customer's
/// contact as the merchant holds it, and a stricter check would drop data
/// the spec keeps (the seed's own example is an obfuscated
/// `[email protected]`).
pub fn email(v: &Json) -> Result<Option<String>, Problem> {
    Ok(text_in(v)?.map(|s| s.to_lowercase()))
}

/// A phone of the given kind. `raw` keeps the platform's text; `e164` is
/// set only when the number is valid for its country (`country` for
/// numbers without `+`), and is otherwise `null`, never a problem: a
/// number the platform holds is worth keeping even when it cannot be
/// dialled. libphonenumber's validity check accepts the fictional 555
/// numbers of the platforms' examples (`9145551212` → `+19145551212`).
///
/// Read by `rlibphonenumber`, a port of Google's libphonenumber, with its
/// parsing rules and metadata unchanged: `tests/phones.rs` holds the answers
/// to libphonenumber's own on every region's numbers.
pub fn phone(kind: &str, v: &Json, country: Option<Country>) -> Result<Option<Phone>, Problem> {
    let Some(raw) = text(v)? else {
        return Ok(None);
    };
    let e164 = e164(&raw, country);
    Ok(Some(Phone {
        kind: kind.to_owned(),
        e164,
        raw,
    }))
}

/// The number's E.164 form when libphonenumber calls it valid, reading a
/// number without `+` (or an international call prefix) in `country`.
fn e164(raw: &str, country: Option<Country>) -> Option<String> {
    use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, enums::Region};
    let region = country.and_then(|c| c.as_str().parse::<Region>().ok());
    let number = PHONE_NUMBER_UTIL.parse(raw, region).ok()?;
    PHONE_NUMBER_UTIL
        .is_valid_number(&number)
        .then(|| PHONE_NUMBER_UTIL.format(&number, PhoneNumberFormat::E164).into_owned())
}

/// Loads libphonenumber's metadata (tens of milliseconds), so that start-up
/// pays for it rather than the first delivery with a phone. A region's
/// patterns are compiled the first time one of its numbers is read (about
/// 15 ms for Russia's).
pub fn warm_up() {
    let _ = e164("+1 914 555 1212", None);
}

/// A country: an ISO 3166-1 alpha-2 or alpha-3 code in any case (or `XK`,
/// `AC` or `TA`, see [`Country`]), as alpha-2.
pub fn country(v: &Json) -> Result<Option<Country>, Problem> {
    text_in(v)?
        .map(|s| Country::from_code(&s).ok_or(Problem::UnknownCountry))
        .transpose()
}

/// An ISO 3166-2 subdivision, `CC-SUB` upper-case. A qualified code
/// (`"CA-ON"`) stands on its own; a bare one (`"NY"`) is qualified with
/// `country`, the record's country or else the source's default. Either
/// must name a real subdivision.
pub fn region(v: &Json, country: Option<Country>) -> Result<Option<String>, Problem> {
    let Some(code) = text_in(v)? else {
        return Ok(None);
    };
    let code = code.to_ascii_uppercase();
    // Subdivision suffixes are alphanumeric, so a hyphen means "qualified".
    let qualified = if code.contains('-') {
        code
    } else {
        let country = country.ok_or(Problem::RegionWithoutCountry)?;
        format!("{country}-{code}")
    };
    rust_iso3166::iso3166_2::from_code(&qualified)
        .map(|sub| Some(sub.code.to_owned()))
        .ok_or(Problem::UnknownRegion)
}

/// A boolean: a JSON boolean, or `"true"`/`"false"` in any case. Anything
/// else (`"yes"`, `1`) is a problem rather than a guess.
pub fn boolean(v: &Json) -> Result<Option<bool>, Problem> {
    match v {
        Json::Null => Ok(None),
        Json::Bool(b) => Ok(Some(*b)),
        Json::String(s) => match clean(s) {
            None => Ok(None),
            Some(s) => bool_word(&s).map(Some).ok_or(Problem::NotBoolean),
        },
        Json::Number(_) | Json::Array(_) | Json::Object(_) => Err(Problem::NotBoolean),
    }
}

/// A platform time, see [`UtcMillis::parse_in`].
pub fn timestamp(v: &Json, tz: &TimeZone) -> Result<Option<UtcMillis>, Problem> {
    text_in(v)?.map(|s| UtcMillis::parse_in(&s, tz)).transpose()
}

/// A calendar date as `YYYY-MM-DD`, checked to exist (`2023-02-30` is a
/// problem). A date with a time (`1948-02-12T00:00:00Z`) gives its date
/// as written, with no time-zone conversion: a birth date is a day in the
/// calendar, not an instant, and converting would shift it.
pub fn date(v: &Json) -> Result<Option<String>, Problem> {
    let Some(s) = text_in(v)? else {
        return Ok(None);
    };
    let date = pieces(&s).ok_or(Problem::NotDate)?.date();
    if !YEARS.contains(&date.year()) {
        return Err(Problem::YearOutOfRange);
    }
    Ok(Some(date.to_string()))
}

/// A JSON object; `null` is absent.
pub fn object<'v>(v: &'v Json<'v>) -> Result<Option<&'v Object<'v>>, Problem> {
    match v {
        Json::Null => Ok(None),
        Json::Object(object) => Ok(Some(object)),
        _ => Err(Problem::NotObject),
    }
}

/// A JSON array; `null` is absent.
fn list<'v>(v: &'v Json<'v>) -> Result<Option<&'v [Json<'v>]>, Problem> {
    match v {
        Json::Null => Ok(None),
        Json::Array(items) => Ok(Some(items)),
        _ => Err(Problem::NotList),
    }
}

/// An unmapped field's value, by the rules of the mapped ones: strings
/// trimmed, `""`/`"N/A"` null, `"true"`/`"false"` booleans, numbers and
/// booleans as they are, arrays and objects element by element. Nulls are
/// left out of arrays and objects, and an array or object left empty is
/// null itself, so that "nothing" has one spelling and attributes converge.
pub fn attribute(v: &Json) -> Option<Value> {
    match v {
        Json::Null => None,
        Json::String(s) => {
            let s = clean(s)?;
            Some(bool_word(&s).map_or_else(|| Value::String(s.into_owned()), Value::Bool))
        }
        Json::Number(n) => Some(Value::Number(n.clone())),
        Json::Bool(b) => Some(Value::Bool(*b)),
        Json::Array(items) => {
            let items: Vec<Value> = items.iter().filter_map(attribute).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Json::Object(object) => {
            let map = attributes(object.iter());
            (!map.is_empty()).then_some(Value::Object(map))
        }
    }
}

/// Unmapped fields as `attributes`: each normalized by [`attribute`], those
/// that come out null left out.
pub fn attributes<'v, 'a: 'v>(fields: impl Iterator<Item = (&'v str, &'v Json<'a>)>) -> Map<String, Value> {
    fields
        .filter_map(|(name, v)| Some((name.to_owned(), attribute(v)?)))
        .collect()
}

fn parse_present<'v, T>(
    v: Option<&'v Json<'v>>,
    parse: impl FnOnce(&'v Json<'v>) -> Result<Option<T>, Problem>,
) -> Result<Option<T>, Problem> {
    v.map_or(Ok(None), parse)
}

/// Reads a value an event cannot do without (its customer id, its
/// envelope). The error is the reason to quarantine the event, naming the
/// field and never its value: `"data.customer_id is missing"`.
pub fn required<'v, T>(
    field: &str,
    v: Option<&'v Json<'v>>,
    parse: impl FnOnce(&'v Json<'v>) -> Result<Option<T>, Problem>,
) -> Result<T, String> {
    match parse_present(v, parse) {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(format!("{field} {}", Problem::Missing)),
        Err(problem) => Err(format!("{field} {problem}")),
    }
}

/// An address's fields as a platform sends them, for [`Reader::address`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AddressFields<'v> {
    pub street1: Option<&'v Json<'v>>,
    pub street2: Option<&'v Json<'v>>,
    pub city: Option<&'v Json<'v>>,
    pub region_code: Option<&'v Json<'v>>,
    pub region_name: Option<&'v Json<'v>>,
    pub postal_code: Option<&'v Json<'v>>,
    pub country_code: Option<&'v Json<'v>>,
    pub country_name: Option<&'v Json<'v>>,
    pub primary: Option<&'v Json<'v>>,
}

/// Reads one event's fields, turning each [`Problem`] into a [`Warning`]
/// on the canonical field name and a `null`, so that one bad field never
/// costs the rest of the event (SPEC §8).
#[derive(Debug, Default)]
pub struct Reader {
    warnings: Vec<Warning>,
}

impl Reader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `v` (absent is `None`) with one of this module's parsers.
    /// The field's name is written out only for a warning.
    pub fn read<'v, T>(
        &mut self,
        field: impl fmt::Display,
        v: Option<&'v Json<'v>>,
        parse: impl FnOnce(&'v Json<'v>) -> Result<Option<T>, Problem>,
    ) -> Option<T> {
        parse_present(v, parse).unwrap_or_else(|problem| {
            self.warn(field, problem);
            None
        })
    }

    pub fn warn(&mut self, field: impl fmt::Display, problem: Problem) {
        self.warnings.push(Warning {
            field: field.to_string(),
            problem: problem.to_string(),
        });
    }

    /// The items of a list field; absent, null or not a list is empty.
    pub fn list<'v>(&mut self, field: &str, v: Option<&'v Json<'v>>) -> &'v [Json<'v>] {
        self.read(field, v, list).unwrap_or_default()
    }

    /// The items of a list of objects (phones, addresses), each with its
    /// field name (`addresses[0]`). Items that are not objects are left out,
    /// each with a warning.
    pub fn objects<'v>(&mut self, field: &str, v: Option<&'v Json<'v>>) -> Vec<(String, &'v Object<'v>)> {
        self.list(field, v)
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let field = format!("{field}[{i}]");
                let item = self.read(&field, Some(item), object)?;
                Some((field, item))
            })
            .collect()
    }

    /// A phone's or an address's kind (`mobile`, `address_of_record`), read
    /// as text; one that the platform leaves out is `other`.
    pub fn kind(&mut self, field: &str, v: Option<&Json>) -> String {
        self.read(format_args!("{field}.kind"), v, text)
            .unwrap_or_else(|| "other".to_owned())
    }

    /// A set of ids or names (`businessIds`, `groups`): sorted and without
    /// duplicates, because the platforms send sets and the directory must
    /// not see a reordering as a change. Unreadable items are left out,
    /// each with a warning.
    pub fn set(&mut self, field: &str, v: Option<&Json>) -> Vec<String> {
        self.set_of(field, v, text)
    }

    fn set_of(
        &mut self,
        field: &str,
        v: Option<&Json>,
        parse: fn(&Json) -> Result<Option<String>, Problem>,
    ) -> Vec<String> {
        let mut items: Vec<String> = self
            .list(field, v)
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.read(format_args!("{field}[{i}]"), Some(item), parse))
            .collect();
        items.sort_unstable();
        items.dedup();
        items
    }

    /// One identifier of a known kind (Treez `drivers_license`), or `None`
    /// when the field is empty or a placeholder (`N/A`).
    pub fn identifier(&mut self, field: impl fmt::Display, kind: &str, v: Option<&Json>) -> Option<Identifier> {
        self.read(field, v, id).map(|value| Identifier {
            kind: kind.to_owned(),
            value,
        })
    }

    /// A list of `{kind, value}` objects (the Clientele envelope's
    /// `identifiers`): kinds lower-cased, items without a kind or a value
    /// left out with a warning, sorted and without duplicates like the
    /// other sets.
    pub fn identifiers(&mut self, field: &str, v: Option<&Json>) -> Vec<Identifier> {
        let mut items: Vec<Identifier> = self
            .objects(field, v)
            .into_iter()
            .filter_map(|(at, item)| {
                let kind = self.read(format_args!("{at}.kind"), item.get("kind"), text);
                let value = self.read(format_args!("{at}.value"), item.get("value"), id);
                match (kind, value) {
                    (Some(kind), Some(value)) => Some(Identifier {
                        kind: kind.to_lowercase(),
                        value,
                    }),
                    (None, Some(_)) => {
                        self.warn(format_args!("{at}.kind"), Problem::Missing);
                        None
                    }
                    _ => None,
                }
            })
            .collect();
        items.sort_unstable();
        items.dedup();
        items
    }

    /// An address, or `None` when it holds nothing (the flag aside). Its
    /// country is its own, else `default_country`; that country also
    /// qualifies a bare region code. Warnings are named `{field}.{name}`.
    pub fn address(
        &mut self,
        field: &str,
        kind: String,
        fields: AddressFields<'_>,
        default_country: Option<Country>,
    ) -> Option<Address> {
        let mut read = |name: &str, v| self.read(format_args!("{field}.{name}"), v, text);
        let street1 = read("street1", fields.street1);
        let street2 = read("street2", fields.street2);
        let city = read("city", fields.city);
        let region_name = read("regionName", fields.region_name);
        let postal_code = read("postalCode", fields.postal_code);
        let country_name = read("countryName", fields.country_name);
        let own_country = self.read(format_args!("{field}.countryCode"), fields.country_code, country);
        let country = own_country.or(default_country);
        let region_code = self.read(format_args!("{field}.regionCode"), fields.region_code, |v| {
            region(v, country)
        });
        let primary = self.read(format_args!("{field}.primary"), fields.primary, boolean);
        let says_something = [
            &street1,
            &street2,
            &city,
            &region_code,
            &region_name,
            &postal_code,
            &country_name,
        ]
        .iter()
        .any(|f| f.is_some())
            || own_country.is_some();
        says_something.then(|| Address {
            kind,
            street1,
            street2,
            city,
            region_code,
            region_name,
            postal_code,
            country_code: country.map(|c| c.as_str().to_owned()),
            country_name,
            primary: primary.unwrap_or(false),
        })
    }

    /// Merge links as `(mergedInto, mergedFrom)`: customer ids of the same
    /// account, made into references by `to_ref`. A link from a customer to
    /// itself would make it its own survivor; it is dropped with a warning.
    pub fn merge_links(
        &mut self,
        own: &CustomerRef,
        into: Option<&Json>,
        from: Option<&Json>,
        to_ref: impl Fn(String) -> CustomerRef,
    ) -> Result<(Option<CustomerRef>, Vec<CustomerRef>), String> {
        if let Some(Json::Array(ids)) = from
            && ids.len() > MAX_MERGED
        {
            return Err(format!(
                "mergedFrom lists more than {MAX_MERGED} customers: kept for review, not applied"
            ));
        }
        let into = self.read("mergedInto", into, id);
        let into = into.and_then(|id| self.unless_self("mergedInto", own, to_ref(id)));
        let from = self.set_of("mergedFrom", from, id);
        let from = from
            .into_iter()
            .filter_map(|id| self.unless_self("mergedFrom", own, to_ref(id)))
            .collect();
        Ok((into, from))
    }

    fn unless_self(&mut self, field: &str, own: &CustomerRef, link: CustomerRef) -> Option<CustomerRef> {
        if link.id == own.id {
            self.warn(field, Problem::SelfReference);
            None
        } else {
            Some(link)
        }
    }

    pub fn into_warnings(self) -> Vec<Warning> {
        self.warnings
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::sources::testing::{is_e164, is_region_code};

    /// `value` as a delivery's JSON is read.
    fn read(value: Value) -> Json<'static> {
        Json::from(&value).into_owned()
    }

    fn la() -> TimeZone {
        TimeZone::get("America/Los_Angeles").unwrap()
    }

    fn us() -> Option<Country> {
        Country::parse("US")
    }

    fn at(s: &str, tz: &TimeZone) -> Result<Option<String>, Problem> {
        timestamp(&read(json!(s)), tz).map(|t| t.map(|t| t.to_string()))
    }

    #[test]
    fn utc_millis_prints_three_fraction_digits() {
        let t: UtcMillis = "2026-04-24T11:38:21-07:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-04-24T18:38:21.000Z");
        let t: UtcMillis = "2026-04-24T18:38:21.123456Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-04-24T18:38:21.123Z");
    }

    #[test]
    fn every_instant_of_the_years_1_to_9999_is_accepted() {
        let utc = TimeZone::UTC;
        let last = "9999-12-31T23:59:59.999Z";
        for (sent, tz) in [
            (last, &utc),
            ("9999-12-31T23:59:59.999999999Z", &utc),
            ("9999-12-31T22:59:59.999-01:00", &utc),
            ("9999-12-31 23:59:59.999", &utc),
            ("9999-12-31 15:59:59.999", &la()),
        ] {
            assert_eq!(at(sent, tz), Ok(Some(last.to_owned())), "{sent}");
        }
        assert_eq!(
            at("9999-12-31T00:00:00Z", &la()),
            Ok(Some("9999-12-31T00:00:00.000Z".to_owned()))
        );
        let first = "0001-01-01T00:00:00.000Z";
        assert_eq!(at(first, &utc), Ok(Some(first.to_owned())));
        assert_eq!(at("0000-12-31T23:00:00-01:00", &utc), Ok(Some(first.to_owned())));
        for beyond in [
            "9999-12-31T23:30:00-01:00",
            "9999-12-31 23:30:00",
            "0001-01-01T00:30:00+01:00",
            "0000-12-31T23:59:59.999Z",
        ] {
            let tz = if beyond.contains(' ') { la() } else { utc.clone() };
            assert_eq!(at(beyond, &tz), Err(Problem::YearOutOfRange), "{beyond}");
        }
        let parsed: UtcMillis = last.parse().unwrap();
        assert_eq!(parsed.to_string(), last);
        assert_eq!(parsed.as_millisecond(), UtcMillis::MAX);
        assert_eq!(first.parse::<UtcMillis>().unwrap().as_millisecond(), UtcMillis::MIN);
    }

    #[test]
    fn times_are_floored_to_the_millisecond_before_1970_as_after() {
        for (sent, shown) in [
            ("1969-12-31T23:59:59.9995Z", "1969-12-31T23:59:59.999Z"),
            ("1969-12-31T23:59:59.0009Z", "1969-12-31T23:59:59.000Z"),
            ("1900-06-01T12:00:00.1239-05:00", "1900-06-01T17:00:00.123Z"),
            ("1970-01-01T00:00:00.0005Z", "1970-01-01T00:00:00.000Z"),
            ("2026-04-24T18:38:21.9999Z", "2026-04-24T18:38:21.999Z"),
        ] {
            assert_eq!(at(sent, &TimeZone::UTC), Ok(Some(shown.to_owned())), "{sent}");
            assert_eq!(sent.parse::<UtcMillis>().unwrap().to_string(), shown, "{sent}");
        }
        let before: jiff::Timestamp = "1969-12-31T23:59:59.9995Z".parse().unwrap();
        assert_eq!(
            UtcMillis::from_timestamp(before).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn country_is_alpha2_upper_case() {
        assert_eq!(Country::parse(" us ").map(Country::as_str), Some("US"));
        assert_eq!(Country::parse("XX"), None);
        assert_eq!(Country::parse("USA"), None);
    }

    #[test]
    fn kosovo_ascension_and_tristan_da_cunha_are_countries_for_their_phones() {
        for code in ["XK", "ac", " Ta "] {
            let country = Country::parse(code).expect("a region libphonenumber knows");
            assert_eq!(country.as_str(), code.trim().to_ascii_uppercase());
        }
        let p = phone("mobile", &read(json!("043 201 234")), Country::parse("XK"))
            .unwrap()
            .unwrap();
        assert_eq!(p.e164.as_deref(), Some("+38343201234"));
        let p = phone("day", &read(json!("62889")), Country::parse("AC"))
            .unwrap()
            .unwrap();
        assert_eq!(p.e164.as_deref(), Some("+24762889"));
    }

    #[test]
    fn toll_free_numbers_keep_a_leading_digit_that_is_also_the_trunk_prefix() {
        let ru = Country::parse("RU");
        for raw in ["8 (800) 123-45-67", "88001234567", "+7 800 123-45-67", "8001234567"] {
            let p = phone("day", &read(json!(raw)), ru).unwrap().unwrap();
            assert_eq!(p.e164.as_deref(), Some("+78001234567"), "{raw}");
        }
        let p = phone("day", &read(json!("8 800 457")), Country::parse("BY"))
            .unwrap()
            .unwrap();
        assert_eq!(p.e164.as_deref(), Some("+375800457"));
    }

    #[test]
    fn country_accepts_alpha3_from_platforms() {
        assert_eq!(country(&read(json!("usa"))), Ok(us()));
        assert_eq!(country(&read(json!("gb"))), Ok(Country::parse("GB")));
        assert_eq!(country(&read(json!(""))), Ok(None));
        assert_eq!(country(&read(json!("XX"))), Err(Problem::UnknownCountry));
        assert_eq!(country(&read(json!("United States"))), Err(Problem::UnknownCountry));
    }

    #[test]
    fn text_is_trimmed_and_null_like_values_are_none() {
        assert_eq!(text(&read(json!("  Jules "))), Ok(Some("Jules".into())));
        assert_eq!(text(&read(json!(""))), Ok(None));
        assert_eq!(text(&read(json!("   "))), Ok(None));
        assert_eq!(text(&read(json!("n/A"))), Ok(None));
        assert_eq!(text(&Json::Null), Ok(None));
    }

    #[test]
    fn zero_width_characters_alone_are_null_and_are_trimmed_around_text() {
        for invisible in [
            "\u{200B}",
            "\u{200C}",
            "\u{200D}",
            "\u{2060}",
            "\u{FEFF}",
            " \u{FEFF}\u{200B} \u{2060}\t",
        ] {
            assert_eq!(text(&read(json!(invisible))), Ok(None), "{invisible:?}");
            assert_eq!(attribute(&read(json!(invisible))), None, "{invisible:?}");
            assert_eq!(
                text(&read(json!(format!("{invisible}N/A{invisible}")))),
                Ok(None),
                "{invisible:?}"
            );
        }
        assert_eq!(text(&read(json!("\u{FEFF}Jules\u{200B} "))), Ok(Some("Jules".into())));
        assert_eq!(boolean(&read(json!("\u{FEFF}true"))), Ok(Some(true)));
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(
            text(&read(json!(family))),
            Ok(Some(family.into())),
            "a joiner inside text stays"
        );
    }

    #[test]
    fn nul_characters_are_removed_before_trimming() {
        assert_eq!(text(&read(json!("Ju\u{0}les"))), Ok(Some("Jules".into())));
        assert_eq!(text(&read(json!("\u{0} Jules \u{0}"))), Ok(Some("Jules".into())));
        assert_eq!(text(&read(json!("\u{0}"))), Ok(None));
        assert_eq!(text(&read(json!("N/\u{0}A"))), Ok(None));
        assert_eq!(boolean(&read(json!("tr\u{0}ue"))), Ok(Some(true)));
    }

    #[test]
    fn text_reads_integer_ids() {
        assert_eq!(text(&read(json!(19))), Ok(Some("19".into())));
    }

    #[test]
    fn text_refuses_booleans_lists_and_objects() {
        for v in [json!(true), json!(["a"]), json!({"a": 1})].map(read) {
            assert_eq!(text(&v), Err(Problem::NotString));
        }
    }

    #[test]
    fn email_is_lower_cased_but_not_validated() {
        assert_eq!(
            email(&read(json!(" Jules@Example.COM "))),
            Ok(Some("jules@example.com".into()))
        );
        assert_eq!(
            email(&read(json!("[Email protected]"))),
            Ok(Some("[email protected]".into()))
        );
        assert_eq!(email(&read(json!("N/A"))), Ok(None));
    }

    #[test]
    fn phone_gets_e164_from_the_country() {
        let p = phone("mobile", &read(json!("9145551212")), us()).unwrap().unwrap();
        assert_eq!(p.kind, "mobile");
        assert_eq!(p.e164.as_deref(), Some("+19145551212"));
        assert_eq!(p.raw, "9145551212");
        let p = phone("day", &read(json!(" (914) 555-1212 ")), us()).unwrap().unwrap();
        assert_eq!(
            (p.e164.as_deref(), p.raw.as_str()),
            (Some("+19145551212"), "(914) 555-1212")
        );
    }

    #[test]
    fn phone_with_international_prefix_ignores_the_country() {
        let p = phone("day", &read(json!("+44 20 7946 0958")), us()).unwrap().unwrap();
        assert_eq!(p.e164.as_deref(), Some("+442079460958"));
    }

    #[test]
    fn unusable_phone_keeps_raw_without_e164() {
        for raw in ["12345", "call me", "1111111111"] {
            let p = phone("primary", &read(json!(raw)), us()).unwrap().unwrap();
            assert_eq!((p.e164, p.raw.as_str()), (None, raw));
        }
        let p = phone("primary", &read(json!("9145551212")), None).unwrap().unwrap();
        assert_eq!(p.e164, None, "no country to read a national number with");
    }

    #[test]
    fn empty_phone_is_dropped_and_wrong_type_is_a_problem() {
        assert_eq!(phone("day", &read(json!("")), us()), Ok(None));
        assert_eq!(phone("day", &Json::Null, us()), Ok(None));
        assert_eq!(phone("day", &read(json!(false)), us()), Err(Problem::NotString));
    }

    #[test]
    fn region_is_qualified_with_the_country() {
        assert_eq!(region(&read(json!("NY")), us()), Ok(Some("US-NY".into())));
        assert_eq!(region(&read(json!(" ca ")), us()), Ok(Some("US-CA".into())));
    }

    #[test]
    fn qualified_region_stays_whatever_the_country() {
        assert_eq!(region(&read(json!("CA-ON")), us()), Ok(Some("CA-ON".into())));
        assert_eq!(region(&read(json!("ca-on")), None), Ok(Some("CA-ON".into())));
        assert_eq!(region(&read(json!("AU-NSW")), us()), Ok(Some("AU-NSW".into())));
    }

    #[test]
    fn region_problems() {
        assert_eq!(region(&read(json!("ZZ")), us()), Err(Problem::UnknownRegion));
        assert_eq!(region(&read(json!("XX-YY")), us()), Err(Problem::UnknownRegion));
        assert_eq!(region(&read(json!("New York")), us()), Err(Problem::UnknownRegion));
        assert_eq!(region(&read(json!("NY")), None), Err(Problem::RegionWithoutCountry));
        assert_eq!(region(&read(json!("N/A")), None), Ok(None));
    }

    #[test]
    fn boolean_reads_json_booleans_and_their_strings() {
        assert_eq!(boolean(&read(json!(true))), Ok(Some(true)));
        assert_eq!(boolean(&read(json!(" TRUE "))), Ok(Some(true)));
        assert_eq!(boolean(&read(json!("false"))), Ok(Some(false)));
        for v in [Value::Null, json!(""), json!("N/A")].map(read) {
            assert_eq!(boolean(&v), Ok(None));
        }
        for v in [json!("yes"), json!(1), json!([true])].map(read) {
            assert_eq!(boolean(&v), Err(Problem::NotBoolean));
        }
    }

    #[test]
    fn timestamps_with_z_or_offset() {
        let utc = TimeZone::UTC;
        assert_eq!(
            at("2024-03-15T00:00:00Z", &la()),
            Ok(Some("2024-03-15T00:00:00.000Z".into()))
        );
        assert_eq!(
            at("2024-03-15T00:00:00.5Z", &utc),
            Ok(Some("2024-03-15T00:00:00.500Z".into()))
        );
        assert_eq!(
            at("2026-04-24T11:38:21.000-07:00", &utc),
            Ok(Some("2026-04-24T18:38:21.000Z".into()))
        );
    }

    #[test]
    fn offset_less_timestamps_are_read_in_the_source_zone() {
        assert_eq!(
            at("2026-04-24 11:38:21.000", &la()),
            Ok(Some("2026-04-24T18:38:21.000Z".into()))
        );
        assert_eq!(
            at("2026-01-24T11:38:21", &la()),
            Ok(Some("2026-01-24T19:38:21.000Z".into()))
        );
        assert_eq!(
            at("2026-01-24 11:38:21", &TimeZone::UTC),
            Ok(Some("2026-01-24T11:38:21.000Z".into()))
        );
    }

    #[test]
    fn zone_annotation_overrides_the_source_zone() {
        assert_eq!(
            at("2026-01-24T11:38:21[America/New_York]", &la()),
            Ok(Some("2026-01-24T16:38:21.000Z".into()))
        );
        assert_eq!(
            at("2026-01-24T11:38:21[Mars/Olympus]", &la()),
            Err(Problem::UnknownTimeZone)
        );
    }

    #[test]
    fn dst_overlap_takes_the_earlier_instant() {
        // 01:30 happens twice on 2026-11-01 in Los Angeles: PDT, then PST.
        assert_eq!(
            at("2026-11-01 01:30:00", &la()),
            Ok(Some("2026-11-01T08:30:00.000Z".into()))
        );
    }

    #[test]
    fn dst_gap_moves_forward_by_the_gap() {
        // 02:30 does not exist on 2026-03-08 in Los Angeles; it reads as 03:30 PDT.
        assert_eq!(
            at("2026-03-08 02:30:00", &la()),
            Ok(Some("2026-03-08T10:30:00.000Z".into()))
        );
    }

    #[test]
    fn timestamp_problems() {
        let utc = TimeZone::UTC;
        assert_eq!(at("yesterday", &utc), Err(Problem::NotTimestamp));
        assert_eq!(at("2026-04-24", &utc), Err(Problem::NotTimestamp));
        assert_eq!(at("2026-02-30T00:00:00Z", &utc), Err(Problem::NotTimestamp));
        assert_eq!(at("0000-06-01T00:00:00Z", &utc), Err(Problem::YearOutOfRange));
        assert_eq!(at("0001-01-01T00:30:00+01:00", &utc), Err(Problem::YearOutOfRange));
        assert_eq!(timestamp(&read(json!(true)), &utc), Err(Problem::NotString));
        assert_eq!(at("N/A", &utc), Ok(None));
    }

    #[test]
    fn offsets_beyond_23_59_are_unparseable() {
        let utc = TimeZone::UTC;
        assert_eq!(
            at("2026-06-30T23:59:59+23:59", &utc),
            Ok(Some("2026-06-30T00:00:59.000Z".into()))
        );
        for time in [
            "2026-06-30T23:59:59+25:00",
            "2026-06-30T23:59:59-24:00",
            "2026-06-30T23:59:59+24:00",
        ] {
            assert_eq!(at(time, &utc), Err(Problem::NotTimestamp), "{time}");
            assert_eq!(time.parse::<UtcMillis>(), Err(Problem::NotTimestamp), "{time}");
        }
        assert_eq!(date(&read(json!("1948-02-12T23:00:00+25:00"))), Err(Problem::NotDate));
    }

    #[test]
    fn dates_are_real_calendar_days() {
        assert_eq!(date(&read(json!("1948-02-12"))), Ok(Some("1948-02-12".into())));
        assert_eq!(date(&read(json!("2024-02-29"))), Ok(Some("2024-02-29".into())));
        assert_eq!(date(&read(json!("2023-02-30"))), Err(Problem::NotDate));
        assert_eq!(date(&read(json!("12/02/1948"))), Err(Problem::NotDate));
        assert_eq!(date(&read(json!("0000-01-01"))), Err(Problem::YearOutOfRange));
        assert_eq!(date(&read(json!(""))), Ok(None));
    }

    #[test]
    fn date_with_a_time_keeps_the_day_as_written() {
        assert_eq!(
            date(&read(json!("1948-02-12T23:00:00-08:00"))),
            Ok(Some("1948-02-12".into()))
        );
        assert_eq!(
            date(&read(json!("1948-02-12 00:00:00.000"))),
            Ok(Some("1948-02-12".into()))
        );
    }

    #[test]
    fn attributes_are_normalized_and_nulls_omitted() {
        let Json::Object(fields) = read(json!({
            "verification_status": " VERIFICATION_PENDING ",
            "notes": "N/A",
            "caregiver_license_number": "",
            "drivers_license": null,
            "is_caregiver": false,
            "banned": "TRUE",
            "rewards_balance": 0,
            "imageList": [],
            "external_ids": {"aiq_contact_id": null, "sticky": ""},
            "tags": ["a", "", null, "b"],
            "reasons": [{"reason": "NEW", "note": "n/a"}, {"note": null}],
        })) else {
            unreachable!("an object is read as one")
        };
        let attrs = attributes(fields.iter());
        assert_eq!(
            Value::Object(attrs),
            json!({
                "verification_status": "VERIFICATION_PENDING",
                "is_caregiver": false,
                "banned": true,
                "rewards_balance": 0,
                "tags": ["a", "b"],
                "reasons": [{"reason": "NEW"}],
            })
        );
    }

    #[test]
    fn required_names_the_field_and_not_the_value() {
        let body = read(json!({"id": "secret@example.com", "flag": true}));
        assert_eq!(
            required("id", body.get("id"), text),
            Ok("secret@example.com".to_owned())
        );
        assert_eq!(
            required("data.customer_id", body.get("nope"), text),
            Err("data.customer_id is missing".to_owned())
        );
        assert_eq!(
            required("flag", body.get("flag"), text),
            Err("flag is not a string".to_owned())
        );
        assert_eq!(
            required("body", Some(&read(json!([1]))), object),
            Err("body is not an object".to_owned())
        );
    }

    #[test]
    fn reader_turns_problems_into_warnings_and_nulls() {
        let body = read(json!({"optOut": "yes", "firstName": " Jules "}));
        let mut r = Reader::new();
        assert_eq!(r.read("optOut", body.get("optOut"), boolean), None);
        assert_eq!(r.read("firstName", body.get("firstName"), text), Some("Jules".into()));
        assert_eq!(r.read("lastName", body.get("lastName"), text), None);
        assert_eq!(
            r.into_warnings(),
            vec![Warning {
                field: "optOut".into(),
                problem: "is not a boolean".into()
            }]
        );
    }

    #[test]
    fn sets_are_sorted_deduplicated_and_skip_bad_items() {
        let mut r = Reader::new();
        let v = read(json!(["456", 123, " 456 ", "", "N/A", {"id": 1}]));
        assert_eq!(r.set("businessIds", Some(&v)), vec!["123", "456"]);
        assert_eq!(r.set("groups", Some(&read(json!("SENIOR")))), Vec::<String>::new());
        assert_eq!(r.set("groups", None), Vec::<String>::new());
        let fields: Vec<String> = r.into_warnings().into_iter().map(|w| w.field).collect();
        assert_eq!(fields, ["businessIds[5]", "groups"]);
    }

    #[test]
    fn address_takes_the_default_country_only_when_it_says_something() {
        let mut r = Reader::new();
        let street = read(json!("2515 SHEPHERD WAY"));
        let state = read(json!("CA"));
        let fields = AddressFields {
            street1: Some(&street),
            region_code: Some(&state),
            ..AddressFields::default()
        };
        let a = r.address("addresses[0]", "home".into(), fields, us()).unwrap();
        assert_eq!(a.region_code.as_deref(), Some("US-CA"));
        assert_eq!(a.country_code.as_deref(), Some("US"));
        assert!(!a.primary);
        let blank = read(json!(""));
        let yes = read(json!(true));
        let empty = AddressFields {
            street1: Some(&blank),
            primary: Some(&yes),
            ..AddressFields::default()
        };
        assert_eq!(r.address("addresses[1]", "home".into(), empty, us()), None);
        assert!(r.into_warnings().is_empty());
    }

    #[test]
    fn address_region_uses_its_own_country_first() {
        let mut r = Reader::new();
        let (on, ca, bad) = (read(json!("ON")), read(json!("can")), read(json!("ZZ")));
        let fields = AddressFields {
            region_code: Some(&on),
            country_code: Some(&ca),
            ..AddressFields::default()
        };
        let a = r.address("addresses[0]", "home".into(), fields, us()).unwrap();
        assert_eq!(
            (a.region_code.as_deref(), a.country_code.as_deref()),
            (Some("CA-ON"), Some("CA"))
        );
        let fields = AddressFields {
            region_code: Some(&bad),
            ..fields
        };
        let a = r.address("addresses[0]", "home".into(), fields, us()).unwrap();
        assert_eq!(a.region_code, None);
        assert_eq!(r.into_warnings()[0].field, "addresses[0].regionCode");
    }

    #[test]
    fn merge_links_drop_self_references() {
        let to_ref = |id: String| CustomerRef {
            id: format!("t:a:{id}"),
            source: "t".into(),
            external_id: id,
            account: Some("a".into()),
        };
        let own = to_ref("1".into());
        let mut r = Reader::new();
        let (into, from) = r
            .merge_links(
                &own,
                Some(&read(json!(1))),
                Some(&read(json!([3, "2", "1", 2]))),
                to_ref,
            )
            .unwrap();
        assert_eq!(into, None);
        let from: Vec<&str> = from.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(from, ["t:a:2", "t:a:3"]);
        let fields: Vec<String> = r.into_warnings().into_iter().map(|w| w.field).collect();
        assert_eq!(fields, ["mergedInto", "mergedFrom"]);
    }

    const TIMESTAMP_LIKE: &str = "[0-9]{4}-[0-1][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+-][0-2][0-9]:[0-5][0-9])?";

    /// Values a hostile or broken platform sends: null-likes, NULs, SQL,
    /// impossible dates, absurd phones, near-miss regions and countries.
    const HOSTILE: &[&str] = &[
        "",
        " ",
        "N/A",
        " n/a ",
        "null",
        "true",
        " FALSE ",
        "yes",
        "\u{0}",
        "Ju\u{0}les",
        "\u{feff}",
        "\u{202e}",
        "'; DROP TABLE customers; --",
        "Robert'); DROP TABLE events;--",
        "2023-02-30",
        "9999-99-99",
        "0000-01-01",
        "10000-01-01",
        "+010000-01-01T00:00:00Z",
        "-000001-01-01",
        "2024-02-29T24:00:00Z",
        "2026-04-24T11:38:21.000-07:00",
        "2026-04-24 11:38:21.000",
        "2026-03-08 02:30:00",
        "2026-01-01T00:00:00+25:00",
        "2026-01-01T00:00:00[Mars/Olympus]",
        "2026-01-01T00:00:00[!America/New_York]",
        "1e400",
        "+0",
        "+",
        "00",
        "+1",
        "9145551212",
        "+44 20 7946 0958",
        "١٢٣٤٥٦٧٨٩٠",
        "😀📞",
        "1-800-FLOWERS",
        "+1 (914) 555-1212 ext. 99999999999",
        "NY",
        "ny",
        "CA-ON",
        "-",
        "US-",
        "-NY",
        "ZZ",
        "XX-YY",
        "FR-75C",
        "GB-LND",
        "us",
        "USA",
        "usa ",
        "X",
    ];

    fn hostile_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => any::<String>(),
            2 => prop::sample::select(HOSTILE).prop_map(str::to_owned),
            1 => (r"\s{0,2}", prop::sample::select(HOSTILE), r"\s{0,2}").prop_map(|(a, s, b)| format!("{a}{s}{b}")),
            1 => "[+]?[0-9]{0,600}",
            1 => "[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,12})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?(\\[!?[A-Za-z_/+-]{1,20}\\])?",
            1 => "[A-Za-z0-9-]{0,7}",
        ]
    }

    /// JSON of every shape, a few levels deep: numbers huge, negative and
    /// fractional, and the hostile strings above.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("JSON numbers are finite", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            hostile_text().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(r"\PC{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_country() -> impl Strategy<Value = Option<Country>> {
        prop::sample::select(&["", "US", "GB", "CA", "FR", "AU", "DE", "JP", "BR", "IN"][..]).prop_map(Country::parse)
    }

    /// Every problem's message: warnings and quarantine reasons are made
    /// of these and of field names, never of values.
    const PROBLEMS: [Problem; 15] = [
        Problem::Missing,
        Problem::NotString,
        Problem::NotBoolean,
        Problem::NotObject,
        Problem::NotList,
        Problem::UnknownCountry,
        Problem::UnknownRegion,
        Problem::RegionWithoutCountry,
        Problem::NotTimestamp,
        Problem::UnknownTimeZone,
        Problem::YearOutOfRange,
        Problem::NotDate,
        Problem::SelfReference,
        Problem::UnknownStatus,
        Problem::NotId,
    ];

    fn is_clean_text(s: &str) -> bool {
        !s.is_empty() && s == s.trim_matches(blank) && !s.eq_ignore_ascii_case("n/a") && !s.contains('\0')
    }

    /// A normalized attribute: no nulls, nothing empty, strings clean and
    /// never spelling a boolean.
    fn is_normal_attribute(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::String(s) => is_clean_text(s) && bool_word(s).is_none(),
            Value::Number(_) | Value::Bool(_) => true,
            Value::Array(items) => !items.is_empty() && items.iter().all(is_normal_attribute),
            Value::Object(map) => !map.is_empty() && map.values().all(is_normal_attribute),
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in hostile_text(), home in arb_country()) {
            let v = Json::String(s.into());
            let _ = text(&v);
            let _ = email(&v);
            let _ = timestamp(&v, &la());
            let _ = timestamp(&v, &TimeZone::UTC);
            let _ = date(&v);
            let _ = region(&v, home);
            let _ = region(&v, None);
            let _ = phone("mobile", &v, home);
            let _ = phone("mobile", &v, None);
            let _ = boolean(&v);
            let _ = country(&v);
            let _ = attribute(&v);
        }

        #[test]
        fn phone_parser_never_panics_on_phone_like_text(s in "[+]?[0-9 ()./x-]{0,24}") {
            let _ = phone("mobile", &Json::String(s.into()), Country::parse("GB"));
        }

        /// The field-by-field Display prints what jiff's `strftime` does,
        /// up to jiff's last instant.
        #[test]
        fn display_matches_strftime(ms in UtcMillis::MIN..=jiff::Timestamp::MAX.as_millisecond()) {
            let ts = jiff::Timestamp::from_millisecond(ms).unwrap();
            prop_assert_eq!(
                UtcMillis::from_timestamp(ts).to_string(),
                ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            );
        }

        /// Every instant of the range, its last day included, prints in
        /// one width and parses back.
        #[test]
        fn every_instant_round_trips_through_display(
            ms in prop_oneof![UtcMillis::MIN..=UtcMillis::MAX, UtcMillis::MAX - 200_000_000..=UtcMillis::MAX],
        ) {
            let shown = UtcMillis(ms).to_string();
            prop_assert_eq!(shown.len(), "2026-04-24T18:38:21.000Z".len());
            prop_assert_eq!(shown.parse::<UtcMillis>(), Ok(UtcMillis(ms)));
        }

        #[test]
        fn timestamps_round_trip_through_display(s in TIMESTAMP_LIKE) {
            if let Ok(Some(t)) = timestamp(&Json::String(s.into()), &la()) {
                let shown = t.to_string();
                prop_assert_eq!(shown.len(), "2026-04-24T18:38:21.000Z".len());
                prop_assert_eq!(shown.parse::<UtcMillis>().ok(), Some(t));
            }
        }

        /// Whatever comes in, what comes out has the canonical form of
        /// SPEC §4, or is `None`, or is a problem.
        #[test]
        fn normalized_values_have_canonical_forms(value in arb_json(), home in arb_country()) {
            let v = Json::from(&value);
            if let Ok(Some(s)) = text(&v) {
                prop_assert!(is_clean_text(&s), "text {:?}", s);
            }
            if let Ok(Some(s)) = email(&v) {
                prop_assert!(is_clean_text(&s) && s == s.to_lowercase(), "email {:?}", s);
            }
            if let Ok(Some(p)) = phone("mobile", &v, home) {
                prop_assert!(is_clean_text(&p.raw), "raw {:?}", p.raw);
                prop_assert!(p.e164.as_deref().is_none_or(is_e164), "e164 {:?}", p.e164);
            }
            if let Ok(Some(code)) = region(&v, home) {
                prop_assert!(is_region_code(&code), "region {:?}", code);
            }
            if let Ok(Some(c)) = country(&v) {
                prop_assert!(c.as_str().len() == 2 && c.as_str().bytes().all(|b| b.is_ascii_uppercase()));
            }
            if let Ok(Some(b)) = boolean(&v) {
                let spelled = value.as_str().and_then(bool_word);
                prop_assert!(value == Value::Bool(b) || spelled == Some(b), "{} read as {}", value, b);
            }
            if let Ok(Some(t)) = timestamp(&v, &la()) {
                let shown = t.to_string();
                prop_assert_eq!(shown.len(), "2026-04-24T18:38:21.000Z".len());
                prop_assert_eq!(shown.parse::<UtcMillis>().ok(), Some(t));
            }
            if let Ok(Some(d)) = date(&v) {
                let parsed = d.parse::<jiff::civil::Date>();
                prop_assert!(d.len() == 10 && parsed.is_ok_and(|p| YEARS.contains(&p.year())), "date {:?}", d);
            }
            if matches!(value, Value::Bool(_) | Value::Array(_) | Value::Object(_)) {
                prop_assert_eq!(text(&v), Err(Problem::NotString));
            }
            if let Some(a) = attribute(&v) {
                prop_assert!(is_normal_attribute(&a), "attribute {}", a);
                prop_assert_eq!(attribute(&Json::from(&a)), Some(a.clone()), "normalizing twice changes nothing");
            }
        }

        /// A reader fed anything keeps sets sorted and unique, drops
        /// self-links, and warns with field names and problems only.
        #[test]
        fn reader_never_panics_and_warns_without_values(
            fields in prop::collection::vec(arb_json(), 12),
            home in arb_country(),
        ) {
            let fields: Vec<Json> = fields.iter().map(Json::from).collect();
            let own = CustomerRef {
                id: "t:a:1".into(),
                source: "t".into(),
                external_id: "1".into(),
                account: Some("a".into()),
            };
            let to_ref = |id: String| CustomerRef {
                id: format!("t:a:{id}"),
                source: "t".into(),
                external_id: id,
                account: Some("a".into()),
            };
            let mut r = Reader::new();
            let set = r.set("groups", Some(&fields[0]));
            prop_assert!(set.windows(2).all(|w| w[0] < w[1]), "{:?}", set);
            prop_assert!(set.iter().all(|s| is_clean_text(s)));
            let _ = r.objects("addresses", Some(&fields[1]));
            let address = AddressFields {
                street1: Some(&fields[2]),
                street2: Some(&fields[3]),
                city: Some(&fields[4]),
                region_code: Some(&fields[5]),
                region_name: Some(&fields[6]),
                postal_code: Some(&fields[7]),
                country_code: Some(&fields[8]),
                country_name: Some(&fields[9]),
                primary: Some(&fields[10]),
            };
            if let Some(a) = r.address("addresses[0]", "home".into(), address, home) {
                prop_assert!(a.region_code.as_deref().is_none_or(is_region_code), "{:?}", a.region_code);
            }
            let (into, from) = r.merge_links(&own, Some(&fields[11]), Some(&fields[0]), to_ref).unwrap();
            prop_assert!(into.is_none_or(|l| l.id != own.id));
            prop_assert!(from.iter().all(|l| l.id != own.id));
            prop_assert!(from.windows(2).all(|w| w[0].id < w[1].id));
            let problems: Vec<String> = PROBLEMS.iter().map(Problem::to_string).collect();
            for w in r.into_warnings() {
                prop_assert!(problems.contains(&w.problem), "{:?}", w);
                prop_assert!(
                    w.field.bytes().all(|b| b.is_ascii_alphanumeric() || b"[].".contains(&b)),
                    "{:?}",
                    w
                );
            }
        }
    }
}
