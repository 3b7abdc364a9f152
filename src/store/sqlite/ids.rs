//! How the embedded store keeps the ids Clientele makes: an event's or an
//! envelope's (`events.id`, `history.event_id`, `outbox.id`), `evt_` and
//! a UUID's 32 lowercase hex digits, as those 16 bytes (migration 23); a
//! review's (`person_reviews.id`), `rev_` and 24 lowercase hex digits of
//! a digest, as those 12 bytes (migration 27); a person's (`persons.id`,
//! `person_members.person_id`, `person_aliases`), `per_` and a UUID's 32
//! digits, as those 16 bytes (migration 28). Each is a BLOB rather than
//! text in each row and index that holds one; any other id stays text. A
//! BLOB never equals a TEXT, so every statement binds an id as it is kept
//! ([`PackedId`]) and reads it back through [`KeptId`] (events', envelopes'
//! and reviews') or spells it out in SQL ([`id_text`]: any column).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Value, ValueRef};

/// The ids kept as bytes: each prefix, with how many bytes its hex digits
/// make. The bytes do not say which prefix they had: the column does
/// ([`id_text`] is told; [`KeptId`] reads the columns of events',
/// envelopes' and reviews' ids, whose lengths differ).
const PACKED: [(&str, usize); 3] = [(EVENT, 16), (REVIEW, 12), (PERSON, 16)];

/// An event's or an envelope's id, as [`id_text`] spells it.
pub(super) const EVENT: &str = "evt_";
/// A review's id.
pub(super) const REVIEW: &str = "rev_";
/// A person's id.
pub(super) const PERSON: &str = "per_";

/// The SQL expression of the text form of `column`, which holds ids that
/// start with `prefix` ([`EVENT`], [`REVIEW`], [`PERSON`]) where kept as
/// bytes.
pub(super) fn id_text(column: &str, prefix: &str) -> String {
    format!("CASE WHEN typeof({column}) = 'blob' THEN '{prefix}' || lower(hex({column})) ELSE {column} END")
}

/// An id to bind, as it is kept.
pub(super) struct PackedId<S>(pub S);

impl<S: AsRef<str>> PackedId<S> {
    fn bytes(&self) -> Option<Vec<u8>> {
        let id = self.0.as_ref();
        let (digits, len) = PACKED
            .iter()
            .find_map(|(prefix, len)| Some((id.strip_prefix(prefix)?, *len)))?;
        if digits.len() != 2 * len || digits.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        hex::decode(digits).ok()
    }
}

impl<S: AsRef<str>> ToSql for PackedId<S> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.bytes() {
            Some(bytes) => ToSqlOutput::Owned(Value::Blob(bytes)),
            None => ToSqlOutput::Borrowed(ValueRef::Text(self.0.as_ref().as_bytes())),
        })
    }
}

/// An event's, an envelope's or a review's id read back, in its text form.
pub(super) struct KeptId(pub String);

impl FromSql for KeptId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Blob(bytes) => {
                let prefix = match bytes.len() {
                    16 => EVENT,
                    12 => REVIEW,
                    _ => return Err(FromSqlError::InvalidType),
                };
                Ok(KeptId(format!("{prefix}{}", hex::encode(bytes))))
            }
            ValueRef::Text(_) => String::column_result(value).map(KeptId),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// How `id` is kept, read back by [`KeptId`], and by [`id_text`] as a
    /// column of ids with `prefix`.
    fn kept(id: &str, prefix: &str) -> (String, String, String) {
        let conn = Connection::open_in_memory().unwrap();
        conn.query_row(
            &format!(
                "SELECT typeof(id), ?1 AS id, {} FROM (SELECT ?1 AS id)",
                id_text("id", prefix)
            ),
            [PackedId(id)],
            |r| Ok((r.get(0)?, r.get::<_, KeptId>(1)?.0, r.get(2)?)),
        )
        .unwrap()
    }

    #[test]
    fn an_id_clientele_made_is_kept_as_16_bytes_and_reads_back_as_it_came() {
        let id = "evt_019af3e2c1b87d40a3c5e8f0b2d4a6c8";
        assert_eq!(kept(id, EVENT), ("blob".into(), id.into(), id.into()));
    }

    #[test]
    fn a_review_id_is_kept_as_12_bytes_and_reads_back_as_it_came() {
        let id = "rev_94185b8572603169f158678d";
        assert_eq!(kept(id, REVIEW), ("blob".into(), id.into(), id.into()));
    }

    #[test]
    fn a_person_id_is_kept_as_16_bytes_and_spelled_out_as_it_came() {
        let id = "per_01a24ff9d0d17703ae6a4473f60000d3";
        let (stored, _, text) = kept(id, PERSON);
        assert_eq!((stored.as_str(), text.as_str()), ("blob", id));
    }

    #[test]
    fn any_other_id_is_kept_as_text() {
        for id in [
            "evt_019AF3E2C1B87D40A3C5E8F0B2D4A6C8",
            "evt_019af3e2",
            "evt_94185b8572603169f158678d",
            "rev_019af3e2c1b87d40a3c5e8f0b2d4a6c8",
            "per_01a24ff9",
            "msg_019af3e2c1b87d40a3c5e8f0b2d4a6c8",
            "",
        ] {
            assert_eq!(kept(id, EVENT), ("text".into(), id.into(), id.into()), "{id}");
        }
    }
}
