//! `[retention]` (SPEC §12): how long the store keeps what the directory
//! is not a function of. Read here into [`Retention`]; the compactor
//! ([`crate::retention`]) drops what is past its age.

use std::time::Duration;

use jiff::{Span, SpanRelativeTo};
use serde::Deserialize;

use super::ConfigError;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The longest a platform goes on retrying one delivery, with a margin:
/// Standard Webhooks senders retry for about 28 hours (the schedule of
/// SPEC §6 sums to 27.5), Vagaro and Treez for less. A retry after its
/// delivery's dedupe record is gone would be kept again, so `dedupe` is
/// never shorter.
const PLATFORM_RETRY_WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);

/// How long each kind of kept data lives once it no longer decides
/// anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Raw bodies of events the directory is not a function of:
    /// superseded snapshots, stale, unchanged and ignored events.
    pub raw_events: Duration,
    /// Quarantined events (kept for a fix and a reprocess).
    pub quarantine: Duration,
    /// How long a delivery is still recognised as a retry.
    pub dedupe: Duration,
    /// Delivered and dead messages, with their attempts, and the outbox
    /// envelopes no message waits for.
    pub messages: Duration,
    /// Customers' history entries of events whose bodies are gone;
    /// `None`: kept.
    pub history: Option<Duration>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            raw_events: 90 * DAY,
            quarantine: 30 * DAY,
            dedupe: 30 * DAY,
            messages: 30 * DAY,
            history: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    raw_events: Option<String>,
    quarantine: Option<String>,
    dedupe: Option<String>,
    messages: Option<String>,
    history: Option<String>,
}

impl RawRetention {
    pub(super) fn validate(
        self,
        invalid: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<RetentionSettings, ConfigError> {
        let defaults = RetentionSettings::default();
        let age = |key: &str, text: Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => age(&format!("retention.{key}"), &text, invalid),
        };
        let dedupe = age("dedupe", self.dedupe, defaults.dedupe)?;
        if dedupe < PLATFORM_RETRY_WINDOW {
            return Err(invalid(
                "retention.dedupe",
                "must be at least \"3d\": platforms retry a delivery for up to three days, and a retry \
                 must still be recognised"
                    .to_owned(),
            ));
        }
        Ok(RetentionSettings {
            raw_events: age("raw_events", self.raw_events, defaults.raw_events)?,
            quarantine: age("quarantine", self.quarantine, defaults.quarantine)?,
            dedupe,
            messages: age("messages", self.messages, defaults.messages)?,
            history: match self.history.as_deref() {
                None | Some("kept") => None,
                Some(text) => Some(self::age("retention.history", text, invalid)?),
            },
        })
    }
}

/// An age such as `"90d"`, `"36h"` or `"2w"` (a day is 24 hours), more
/// than zero, at `key`.
fn age(key: &str, text: &str, invalid: &impl Fn(&str, String) -> ConfigError) -> Result<Duration, ConfigError> {
    let value = text
        .parse::<Span>()
        .ok()
        .and_then(|span| span.to_duration(SpanRelativeTo::days_are_24_hours()).ok())
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(|| {
            invalid(
                key,
                format!("{text:?} is not an age such as \"90d\", \"36h\" or \"2w\""),
            )
        })?;
    if value.is_zero() {
        return Err(invalid(key, "must be more than zero".to_owned()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<RetentionSettings, String> {
        let mut raw = RawRetention::default();
        for (key, value) in pairs {
            let slot = match *key {
                "raw_events" => &mut raw.raw_events,
                "quarantine" => &mut raw.quarantine,
                "dedupe" => &mut raw.dedupe,
                "messages" => &mut raw.messages,
                "history" => &mut raw.history,
                _ => unreachable!(),
            };
            *slot = Some((*value).to_owned());
        }
        raw.validate(&|key: &str, problem: String| ConfigError::Invalid {
            origin: "test".into(),
            key: key.to_owned(),
            problem,
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_spec_s() {
        let r = read(&[]).unwrap();
        assert_eq!(r, RetentionSettings::default());
        assert_eq!((r.raw_events, r.dedupe), (90 * DAY, 30 * DAY));
    }

    #[test]
    fn ages_read_days_weeks_and_hours() {
        let r = read(&[("raw_events", "2w"), ("quarantine", "36h"), ("messages", "1d 12h")]).unwrap();
        assert_eq!(r.raw_events, 14 * DAY);
        assert_eq!(r.quarantine, Duration::from_secs(36 * 3600));
        assert_eq!(r.messages, Duration::from_secs(36 * 3600));
        assert_eq!(read(&[("history", "kept")]).unwrap(), RetentionSettings::default());
        assert_eq!(read(&[("history", "400d")]).unwrap().history, Some(400 * DAY));
    }

    #[test]
    fn bad_ages_name_their_key() {
        for (key, value, says) in [
            ("raw_events", "ninety days", "not an age"),
            ("quarantine", "0d", "more than zero"),
            ("messages", "-3d", "not an age"),
            ("history", "forever", "not an age"),
            ("dedupe", "2d", "at least \"3d\""),
            ("dedupe", "1month", "not an age"),
        ] {
            let error = read(&[(key, value)]).unwrap_err();
            assert!(error.contains(&format!("retention.{key}")), "{error}");
            assert!(error.contains(says), "{error}");
        }
    }
}
