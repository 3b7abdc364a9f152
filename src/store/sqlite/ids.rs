//! How the embedded store keeps the ids Clientele makes: an event's or an
//! envelope's (`events.id`, `history.event_id`, `outbox.id`), `evt_` and
//! a UUID's 32 lowercase hex digits, as those 16 bytes (migration 23);
//! a review's (`person_reviews.id`), `rev_` and 24 lowercase hex digits
//! of a digest, as those 12 bytes (migration 27). Each is a BLOB rather
//! than text in each row and index that holds one, and its length tells
//! which prefix it had; any other id stays text. A BLOB never equals a
//! TEXT, so every statement binds an id as it is kept ([`PackedId`]) and
//! reads it back through [`KeptId`]; in SQL, [`ID_TEXT`] spells it out.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Value, ValueRef};

/// The ids kept as bytes: each prefix, with how many bytes its hex digits
/// make.
const PACKED: [(&str, usize); 2] = [("evt_", 16), ("rev_", 12)];

/// The SQL expression of column `id`'s text form: migrations 23 and 27,
/// and [`PackedId`], keep the same ids as bytes ([`PACKED`]).
pub(super) const ID_TEXT: &str = "CASE WHEN typeof(id) = 'blob' THEN (CASE length(id) WHEN 12 THEN 'rev_' ELSE 'evt_' END) || lower(hex(id)) ELSE id END";

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

/// An id read back, in its text form.
pub(super) struct KeptId(pub String);

impl FromSql for KeptId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Blob(bytes) => PACKED
                .iter()
                .find(|(_, len)| *len == bytes.len())
                .map(|(prefix, _)| KeptId(format!("{prefix}{}", hex::encode(bytes))))
                .ok_or(FromSqlError::InvalidType),
            ValueRef::Text(_) => String::column_result(value).map(KeptId),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    fn kept(id: &str) -> (String, String, String) {
        let conn = Connection::open_in_memory().unwrap();
        conn.query_row(
            &format!("SELECT typeof(id), ?1 AS id, {ID_TEXT} FROM (SELECT ?1 AS id)"),
            [PackedId(id)],
            |r| Ok((r.get(0)?, r.get::<_, KeptId>(1)?.0, r.get(2)?)),
        )
        .unwrap()
    }

    #[test]
    fn an_id_clientele_made_is_kept_as_16_bytes_and_reads_back_as_it_came() {
        let id = "evt_019af3e2c1b87d40a3c5e8f0b2d4a6c8";
        assert_eq!(kept(id), ("blob".into(), id.into(), id.into()));
    }

    #[test]
    fn a_review_id_is_kept_as_12_bytes_and_reads_back_as_it_came() {
        let id = "rev_94185b8572603169f158678d";
        assert_eq!(kept(id), ("blob".into(), id.into(), id.into()));
    }

    #[test]
    fn any_other_id_is_kept_as_text() {
        for id in [
            "evt_019AF3E2C1B87D40A3C5E8F0B2D4A6C8",
            "evt_019af3e2",
            "evt_94185b8572603169f158678d",
            "rev_019af3e2c1b87d40a3c5e8f0b2d4a6c8",
            "msg_019af3e2c1b87d40a3c5e8f0b2d4a6c8",
            "",
        ] {
            assert_eq!(kept(id), ("text".into(), id.into(), id.into()), "{id}");
        }
    }
}
