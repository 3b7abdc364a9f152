//! Helpers shared by the adapters' unit tests.

use jiff::tz::TimeZone;
use serde_json::Value;

use super::{Adapter, Mapped, SourceSettings};
use crate::model::{Country, CustomerEvent};

/// A US source named `name` reading offset-less times in `timezone`.
pub fn settings(name: &str, timezone: TimeZone) -> SourceSettings {
    SourceSettings {
        name: name.into(),
        default_country: Country::parse("US"),
        timezone,
        account: None,
    }
}

/// `body` with the fields of `fields` set in its object `at`.
pub fn overlay(mut body: Value, at: &str, fields: Value) -> Value {
    for (name, value) in fields.as_object().expect("fields is an object") {
        body[at][name] = value.clone();
    }
    body
}

/// The customer event `adapter` maps `body` to; panics on anything else.
pub fn event(adapter: &dyn Adapter, body: &Value, settings: &SourceSettings) -> CustomerEvent {
    match adapter.map(body, settings) {
        Ok(Mapped::Customer(event)) => *event,
        other => panic!("expected a customer, got {other:?}"),
    }
}

/// Why `adapter` quarantines `body`; panics if it does not.
pub fn reason(adapter: &dyn Adapter, body: &Value, settings: &SourceSettings) -> String {
    adapter.map(body, settings).unwrap_err().0
}

/// The fields an event warned about.
pub fn warned(event: &CustomerEvent) -> Vec<&str> {
    event.warnings.iter().map(|w| w.field.as_str()).collect()
}
