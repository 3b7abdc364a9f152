//! The envelope Vagaro and Clientele's own kind share:
//! `{id, createdDate, type, action, payload}`, one customer snapshot in
//! `payload`. Opening it decides whether the event is a customer event at
//! all, before an adapter reads the payload's fields.

use super::{Mapped, Unmappable};
use crate::model::json::{Json, Object};
use crate::model::normalize::{self, required};

/// A customer event's envelope, opened.
pub struct Envelope<'v> {
    pub envelope: &'v Object<'v>,
    pub payload: &'v Object<'v>,
    /// `payload.customerId`.
    pub external_id: String,
}

/// The envelope's own event id.
pub fn id(body: &Json) -> Option<String> {
    normalize::id(body.get("id")?).ok().flatten()
}

/// Opens a customer envelope: `Ok(Err(…))` is an event of another type, to
/// acknowledge as ignored; `Err` a body to quarantine.
pub fn open<'v>(platform: &str, body: &'v Json<'v>) -> Result<Result<Envelope<'v>, Mapped>, Unmappable> {
    let envelope = required("body", Some(body), normalize::object).map_err(Unmappable::new)?;
    let kind = required("type", envelope.get("type"), normalize::text).map_err(Unmappable::new)?;
    if !kind.eq_ignore_ascii_case("customer") {
        return Ok(Err(Mapped::Ignored {
            what: format!("{platform} {kind} event"),
        }));
    }
    let payload = required("payload", envelope.get("payload"), normalize::object).map_err(Unmappable::new)?;
    let external_id =
        required("payload.customerId", payload.get("customerId"), normalize::id).map_err(Unmappable::new)?;
    Ok(Ok(Envelope {
        envelope,
        payload,
        external_id,
    }))
}
