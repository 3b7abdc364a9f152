//! What follows an attempt (SPEC §6, §8): a 2xx is delivered; `410 Gone`
//! is dead and disables the subscription; anything else is retried after
//! the schedule's next wait, plus up to 10% jitter, or after `Retry-After`
//! on 429/503 if that is longer (at most [`MAX_RETRY_AFTER`]); after the
//! last entry, dead.

use std::time::Duration;

use jiff::Timestamp;

use super::Next;
use crate::model::UtcMillis;

/// The longest wait a `Retry-After` is honoured for. A subscriber's later
/// changes wait behind the message, so a longer ask (a year, or more than
/// a timestamp holds) would hold them back past any use; a day is more
/// than any wait of the default schedule (10 h).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// An attempt's result, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Success,
    Gone,
    /// Any other status, a timeout or no connection; with the wait the
    /// subscriber asked for (429/503 `Retry-After`).
    Failed {
        retry_after: Option<Duration>,
    },
}

/// `failures` counts the failed attempts before this one; `jitter` is in
/// `[0, 1)`, scaled to at most +10% of the wait.
pub fn next(answer: Answer, failures: u32, schedule: &[Duration], now: UtcMillis, jitter: f64) -> Next {
    match answer {
        Answer::Success => Next::Delivered,
        Answer::Gone => Next::Dead {
            disable_subscription: true,
        },
        Answer::Failed { retry_after } => match schedule.get(failures as usize) {
            None => Next::Dead {
                disable_subscription: false,
            },
            Some(wait) => {
                let wait = wait.mul_f64(1.0 + 0.1 * jitter.clamp(0.0, 1.0));
                let wait = retry_after.map_or(wait, |asked| wait.max(asked.min(MAX_RETRY_AFTER)));
                Next::Retry {
                    at: now.saturating_add(wait),
                }
            }
        },
    }
}

/// Reads `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP date
/// in any of its three forms (§5.6.7); a date past is no wait. At most
/// [`MAX_RETRY_AFTER`], however large the number.
pub fn retry_after(value: &str, now: UtcMillis) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse().map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let at = http_date(value)?;
        at.duration_since(now.as_timestamp())
            .try_into()
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An HTTP date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the
/// obsolete RFC 850 form (`Sunday, 06-Nov-94 08:49:37 GMT`) or asctime's
/// (`Sun Nov  6 08:49:37 1994`), all in UTC. A date after jiff's last
/// instant (9999-12-30T22:00Z) gives that instant.
fn http_date(value: &str) -> Option<Timestamp> {
    // asctime pads the day with a space: one space is as good as two.
    let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
    [
        "%a, %d %b %Y %H:%M:%S GMT",
        "%A, %d-%b-%y %H:%M:%S GMT",
        "%a %b %d %H:%M:%S %Y",
    ]
    .into_iter()
    .find_map(|format| jiff::civil::DateTime::strptime(format, &value).ok())
    .map(|at| jiff::tz::Offset::UTC.to_timestamp(at).unwrap_or(Timestamp::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> UtcMillis {
        "2026-04-24T00:00:00Z".parse().unwrap()
    }

    fn retry_in(next: Next) -> Duration {
        match next {
            Next::Retry { at } => Duration::from_millis((at.as_millisecond() - now().as_millisecond()) as u64),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    const SCHEDULE: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(300)];

    #[test]
    fn success_and_gone_end_the_message() {
        assert_eq!(next(Answer::Success, 3, &SCHEDULE, now(), 0.5), Next::Delivered);
        assert_eq!(
            next(Answer::Gone, 0, &SCHEDULE, now(), 0.5),
            Next::Dead {
                disable_subscription: true
            }
        );
    }

    #[test]
    fn failures_follow_the_schedule_with_at_most_ten_percent_jitter_then_die() {
        let failed = Answer::Failed { retry_after: None };
        assert_eq!(retry_in(next(failed, 0, &SCHEDULE, now(), 0.0)), Duration::from_secs(5));
        assert_eq!(
            retry_in(next(failed, 0, &SCHEDULE, now(), 0.999)),
            Duration::from_millis(5499)
        );
        assert_eq!(
            retry_in(next(failed, 1, &SCHEDULE, now(), 0.0)),
            Duration::from_secs(300)
        );
        assert_eq!(
            next(failed, 2, &SCHEDULE, now(), 0.0),
            Next::Dead {
                disable_subscription: false
            }
        );
    }

    #[test]
    fn retry_after_is_honoured_when_longer_than_the_schedule() {
        let asked = |s| Answer::Failed {
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(
            retry_in(next(asked(60), 0, &SCHEDULE, now(), 0.0)),
            Duration::from_secs(60)
        );
        assert_eq!(
            retry_in(next(asked(1), 0, &SCHEDULE, now(), 0.0)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(retry_after(" 120 ", now()), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Fri, 24 Apr 2026 00:01:00 GMT", now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Thu, 23 Apr 2026 00:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now()), None);
    }

    #[test]
    fn retry_after_reads_the_three_http_date_forms() {
        let minute = Some(Duration::from_secs(60));
        assert_eq!(retry_after("Fri, 24 Apr 2026 00:01:00 GMT", now()), minute);
        assert_eq!(retry_after("Friday, 24-Apr-26 00:01:00 GMT", now()), minute);
        assert_eq!(retry_after("Fri Apr 24 00:01:00 2026", now()), minute);
        assert_eq!(retry_after("Fri Apr  3 00:00:00 2026", now()), Some(Duration::ZERO));
    }

    #[test]
    fn a_huge_retry_after_is_capped_and_never_overflows() {
        for asked in ["250000000000", "18446744073709551615", "99999999999999999999999"] {
            assert_eq!(retry_after(asked, now()), Some(MAX_RETRY_AFTER), "{asked}");
        }
        assert_eq!(
            retry_after("Sun, 01 Jan 5026 00:00:00 GMT", now()),
            Some(MAX_RETRY_AFTER)
        );
        let failed = Answer::Failed {
            retry_after: Some(Duration::MAX),
        };
        assert_eq!(retry_in(next(failed, 0, &SCHEDULE, now(), 0.999)), MAX_RETRY_AFTER);
    }

    #[test]
    fn a_retry_after_date_past_the_last_instant_is_capped_not_ignored() {
        for asked in ["Fri, 31 Dec 9999 23:59:59 GMT", "Fri Dec 31 23:59:59 9999"] {
            assert_eq!(retry_after(asked, now()), Some(MAX_RETRY_AFTER), "{asked}");
        }
    }
}
