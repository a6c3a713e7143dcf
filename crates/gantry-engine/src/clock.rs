//! [`Clock`]: the time that cron schedules and polling go by. The system's clock in a
//! server; a [`Clock::manual`] one in tests, which they set and move by hand (a schedule due
//! at 12:00 is tried at 11:59:30 and at 12:00:05; a restart three days later). Only the
//! triggers use it: leases, logs and the rest keep the system clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Cheap to clone; clones of a manual clock share its time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// [`gantry_store::db::now_ms`].
    #[default]
    System,
    /// A time (ms since the epoch) that moves only when told.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock showing `ms` (ms since the epoch).
    pub fn manual(ms: i64) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(ms)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => gantry_store::db::now_ms(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set_ms(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.store(ms, Ordering::SeqCst);
        }
    }

    /// Moves a manual clock forward by `ms` (no effect on the system clock).
    pub fn advance_ms(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(ms, Ordering::SeqCst);
        }
    }
}
