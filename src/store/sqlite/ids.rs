//! How the embedded store keeps the ids Clientele makes for events and
//! envelopes (`events.id`, `history.event_id`, `outbox.id`): `evt_` and a
//! UUID's 32 lowercase hex digits are kept as those 16 bytes, a BLOB,
//! rather than 36 characters of text, in each row and index that holds
//! one (migration 23); any other id stays text. A BLOB never equals a
//! TEXT, so every statement binds an id as it is kept ([`PackedId`]) and
//! reads it back through [`KeptId`]; in SQL, [`ID_TEXT`] spells it out.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Value, ValueRef};

const PREFIX: &str = "evt_";

/// The SQL expression of column `id`'s text form: migration 23 and
/// [`PackedId`] keep the same ids as bytes.
pub(super) const ID_TEXT: &str = "CASE WHEN typeof(id) = 'blob' THEN 'evt_' || lower(hex(id)) ELSE id END";

/// An id to bind, as it is kept.
pub(super) struct PackedId<S>(pub S);

impl<S: AsRef<str>> PackedId<S> {
    fn bytes(&self) -> Option<[u8; 16]> {
        let digits = self.0.as_ref().strip_prefix(PREFIX)?;
        if digits.len() != 32 || digits.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut bytes = [0; 16];
        hex::decode_to_slice(digits, &mut bytes).ok()?;
        Some(bytes)
    }
}

impl<S: AsRef<str>> ToSql for PackedId<S> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.bytes() {
            Some(bytes) => ToSqlOutput::Owned(Value::Blob(bytes.to_vec())),
            None => ToSqlOutput::Borrowed(ValueRef::Text(self.0.as_ref().as_bytes())),
        })
    }
}

/// An id read back, in its text form.
pub(super) struct KeptId(pub String);

impl FromSql for KeptId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Blob(bytes) if bytes.len() == 16 => Ok(KeptId(format!("{PREFIX}{}", hex::encode(bytes)))),
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
    fn any_other_id_is_kept_as_text() {
        for id in [
            "evt_019AF3E2C1B87D40A3C5E8F0B2D4A6C8",
            "evt_019af3e2",
            "msg_019af3e2c1b87d40a3c5e8f0b2d4a6c8",
            "",
        ] {
            assert_eq!(kept(id), ("text".into(), id.into(), id.into()), "{id}");
        }
    }
}
