//! A customer as the matcher sees it: the fields that say who someone is,
//! folded once so that comparisons are cheap and blind to case, accents,
//! punctuation and spacing. Placeholders (`noemail@…`, `555-01xx`, `0000`)
//! are dropped here, so nothing downstream can count them.

use crate::model::{Customer, Status};

/// One customer's identity fields, folded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    pub id: String,
    pub given: Option<String>,
    pub family: Option<String>,
    /// `YYYYMMDD`.
    pub birth: Option<String>,
    pub emails: Vec<String>,
    /// E.164.
    pub phones: Vec<String>,
    /// `(kind, folded value)`, sorted.
    pub identifiers: Vec<(String, String)>,
    pub addresses: Vec<Place>,
}

/// An address, folded: what a comparison of two addresses looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Place {
    /// House number and street name (`8 stanley st`), abbreviations folded.
    pub street: Option<String>,
    pub postcode: Option<String>,
    pub city: Option<String>,
}

impl Subject {
    /// The matcher's view of `customer`; `None` for a record absorbed by a
    /// platform merge (its survivor stands for it) or a merge stub.
    pub fn of(customer: &Customer) -> Option<Subject> {
        if customer.profile.status == Status::Merged || customer.merged_into.is_some() {
            return None;
        }
        let p = &customer.profile;
        let mut emails: Vec<String> = p.email.iter().filter_map(|e| email(e)).collect();
        emails.dedup();
        let mut phones: Vec<String> = p
            .phones
            .iter()
            .filter_map(|ph| ph.e164.as_deref())
            .filter(|e| !placeholder_phone(e))
            .map(str::to_owned)
            .collect();
        phones.sort_unstable();
        phones.dedup();
        let mut identifiers: Vec<(String, String)> = p
            .identifiers
            .iter()
            .filter_map(|i| Some((i.kind.clone(), identifier(&i.value)?)))
            .collect();
        identifiers.sort_unstable();
        identifiers.dedup();
        let addresses = p
            .addresses
            .iter()
            .map(|a| Place {
                street: street(a.street1.as_deref()),
                postcode: a.postal_code.as_deref().and_then(|s| fold(s).filter(|f| !f.is_empty())),
                city: a.city.as_deref().and_then(name),
            })
            .filter(|a| a.street.is_some() || a.postcode.is_some())
            .collect();
        Some(Subject {
            id: customer.id.clone(),
            given: p.first_name.as_deref().and_then(name),
            family: p.last_name.as_deref().and_then(name),
            birth: p.birth_date.as_deref().map(|d| d.replace('-', "")),
            emails,
            phones,
            identifiers,
            addresses,
        })
    }
}

/// Lower-case letters and digits, runs of anything else one space, accents
/// dropped (é → e). `None` when nothing is left.
pub fn fold(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut gap = false;
    for c in s.chars().flat_map(char::to_lowercase) {
        let c = deaccent(c);
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn deaccent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
        'ñ' | 'ń' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' => 'u',
        'ý' | 'ÿ' => 'y',
        'ś' | 'š' => 's',
        'ź' | 'ż' | 'ž' => 'z',
        'ł' => 'l',
        other => other,
    }
}

/// A person's name, folded; words like `unknown` that stand for no name
/// are none.
pub fn name(s: &str) -> Option<String> {
    let folded = fold(s)?;
    const NO_NAME: &[&str] = &[
        "unknown", "none", "na", "n a", "test", "customer", "guest", "x", "xx", "xxx",
    ];
    (!NO_NAME.contains(&folded.as_str())).then_some(folded)
}

/// An email address worth comparing: lower-cased, and not a placeholder
/// (`noemail@…`, `none@…`, `test@…`, `na@…`, no `@`).
pub fn email(s: &str) -> Option<String> {
    let e = s.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    if local.is_empty() || domain.is_empty() || !domain.contains('.') {
        return None;
    }
    let bare: String = local.chars().filter(char::is_ascii_alphanumeric).collect();
    const PLACEHOLDERS: &[&str] = &[
        "noemail",
        "none",
        "test",
        "na",
        "no",
        "nomail",
        "noreply",
        "donotreply",
        "email",
        "customer",
        "unknown",
        "null",
        "fake",
        "asdf",
        "x",
        "xx",
        "xxx",
    ];
    if PLACEHOLDERS.contains(&bare.as_str()) || bare.is_empty() || all_same(&bare) {
        return None;
    }
    if matches!(
        domain,
        "example.com" | "test.com" | "none.com" | "noemail.com" | "email.com"
    ) {
        return None;
    }
    Some(e)
}

/// A phone that names no one: fictional 555-01xx numbers, and national
/// numbers whose digits are all the same or a run (`1234567890`).
pub fn placeholder_phone(e164: &str) -> bool {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    if let Some(national) = digits.strip_prefix('1').filter(|_| e164.starts_with("+1")) {
        // NANP: NXX-555-01XX is reserved for fiction.
        if national.len() == 10 && &national[3..6] == "555" && &national[6..8] == "01" {
            return true;
        }
        return placeholder_digits(national);
    }
    placeholder_digits(digits.get(digits.len().saturating_sub(9)..).unwrap_or(&digits))
}

/// A government or platform id folded to its letters and digits,
/// upper-cased (`d123-456` and `D123 456` are one id); placeholders
/// (`0000`, `123456`, `none`) are none.
pub fn identifier(s: &str) -> Option<String> {
    let folded: String = s
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if folded.len() < 3 || placeholder_digits(&folded) {
        return None;
    }
    const WORDS: &[&str] = &["NONE", "NULL", "UNKNOWN", "NA", "TEST", "PENDING"];
    (!WORDS.contains(&folded.as_str())).then_some(folded)
}

/// All one character, or a run up or down (`123456`, `987654`).
fn placeholder_digits(s: &str) -> bool {
    if s.len() < 2 {
        return false;
    }
    if all_same(s) {
        return true;
    }
    let bytes = s.as_bytes();
    if !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let step = |d: i8| {
        bytes.windows(2).all(|w| {
            (w[1] as i8 - w[0] as i8 == d)
                || (w[0] == b'9' && w[1] == b'0' && d == 1)
                || (w[0] == b'0' && w[1] == b'9' && d == -1)
        })
    };
    step(1) || step(-1)
}

fn all_same(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|first| chars.all(|c| c == first))
}

/// A street line, folded, with the common abbreviations spelled one way.
pub fn street(s: Option<&str>) -> Option<String> {
    let folded = fold(s?)?;
    let words: Vec<&str> = folded
        .split(' ')
        .map(|w| match w {
            "street" | "str" => "st",
            "road" => "rd",
            "avenue" | "av" | "ave" => "ave",
            "drive" | "drv" => "dr",
            "place" | "pl" => "pl",
            "court" | "crt" | "ct" => "ct",
            "crescent" | "cres" => "cres",
            "lane" | "ln" => "ln",
            "boulevard" | "blvd" => "blvd",
            "circuit" | "cct" => "cct",
            "apartment" | "apt" | "unit" | "suite" | "ste" => "unit",
            "north" => "n",
            "south" => "s",
            "east" => "e",
            "west" => "w",
            other => other,
        })
        .collect();
    Some(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_ignores_case_accents_and_punctuation() {
        assert_eq!(fold("  Zoë  O'Brien-Smith ").as_deref(), Some("zoe o brien smith"));
        assert_eq!(fold("--"), None);
        assert_eq!(name("Unknown"), None);
        assert_eq!(street(Some("8 Stanley Street")).as_deref(), Some("8 stanley st"));
    }

    #[test]
    fn placeholder_emails_and_phones_never_count() {
        for junk in [
            "noemail@shop.com",
            "NONE@x.org",
            "test@gmail.com",
            "aaaa@b.com",
            "a@example.com",
            "nope",
        ] {
            assert_eq!(email(junk), None, "{junk}");
        }
        assert_eq!(email("Mia.W@Gmail.com").as_deref(), Some("mia.w@gmail.com"));
        for junk in ["+12125550123", "+11111111111", "+11234567890", "+447777777777"] {
            assert!(placeholder_phone(junk), "{junk}");
        }
        assert!(!placeholder_phone("+19145551212"));
        assert!(!placeholder_phone("+442079460958"));
    }

    #[test]
    fn identifiers_fold_to_letters_and_digits() {
        assert_eq!(identifier("d123-456 7").as_deref(), Some("D1234567"));
        for junk in ["0000", "123456", "N/A", "none", "98765", "x"] {
            assert_eq!(identifier(junk), None, "{junk}");
        }
    }
}
