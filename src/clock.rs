//! Where retention's time comes from (SPEC §12): the times it compares
//! (when a delivery was received) and the time it compares them with (the
//! compactor's now) are read through one [`Clock`].
//!
//! The `clientele` binary only ever has the system's clock: no
//! configuration key or variable makes another. A simulated clock exists
//! for code that builds Clientele itself: the tests, and
//! `bench/retention.rs`, which drive days of retention in minutes by
//! moving it forward with its [`Hand`]. Everything else (sessions, leases,
//! retry schedules, tokens, the records' `changedAt`, the envelopes'
//! times) reads the system's clock (`docs/decisions.md`, "A clock
//! retention reads").

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::model::UtcMillis;

/// The system's clock (the default), or one running that far ahead of it,
/// moved only by its [`Hand`].
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds ahead of the system's clock; `None`: the system's.
    ahead: Option<Arc<AtomicI64>>,
}

/// What moves a simulated [`Clock`] forward: it never goes back.
#[derive(Debug)]
pub struct Hand {
    ahead: Arc<AtomicI64>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that starts at the system's time and runs with it, and the
    /// hand that moves it forward.
    pub fn simulated() -> (Self, Hand) {
        let ahead = Arc::new(AtomicI64::new(0));
        (
            Clock {
                ahead: Some(ahead.clone()),
            },
            Hand { ahead },
        )
    }

    pub fn now(&self) -> UtcMillis {
        let now = UtcMillis::now();
        match &self.ahead {
            None => now,
            Some(ahead) => UtcMillis::from_millisecond(now.as_millisecond() + ahead.load(Ordering::Relaxed)),
        }
    }
}

impl Hand {
    /// Moves the clock `by` forward: from now on, it reads that much later.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).expect("an advance of less than 292 million years");
        self.ahead.fetch_add(by, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_reads_what_its_hand_moved() {
        let (clock, hand) = Clock::simulated();
        let before = Clock::system().now();
        hand.advance(Duration::from_secs(3 * 24 * 3600));
        let later = clock.now().as_millisecond() - before.as_millisecond();
        // Three days, plus the moment this test took (less than a day).
        assert!((3 * 86_400_000..4 * 86_400_000).contains(&later), "{later}");
        let copy = clock.clone();
        hand.advance(Duration::from_secs(24 * 3600));
        assert!(copy.now().as_millisecond() - before.as_millisecond() >= 4 * 86_400_000);
        assert!(Clock::system().now().as_millisecond() - before.as_millisecond() < 86_400_000);
    }
}
