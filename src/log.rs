//! Log lines about requests: capped so that a client cannot flood the log ([`LogBudget`]), and
//! errors written with their causes on one line ([`chain`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// An error and its sources on one line: hyper-util's own message says little ("client error
/// (Connect)"); the cause says what happened.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Log lines a second that one kind of per-request message may take.
pub const PER_REQUEST_LINES: u32 = 20;

/// Lets a message through at most `per_second` times a second, and counts what it held back.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    /// The second (since the process started) the count is for.
    second: AtomicU64,
    used: AtomicU32,
    held_back: AtomicU64,
}

impl LogBudget {
    pub const fn new(per_second: u32) -> LogBudget {
        LogBudget {
            per_second,
            second: AtomicU64::new(0),
            used: AtomicU32::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one let through)` when this one may be written.
    pub fn allow(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        self.allow_at(START.get_or_init(Instant::now).elapsed().as_secs())
    }

    /// [`allow`](Self::allow) at a given second.
    pub fn allow_at(&self, second: u64) -> Option<u64> {
        let current = self.second.load(Ordering::Relaxed);
        if second > current
            && self
                .second
                .compare_exchange(current, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.held_back.swap(0, Ordering::Relaxed))
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_lines_is_cut_and_counted() {
        let budget = LogBudget::new(3);
        let second_0: Vec<Option<u64>> = (0..5).map(|_| budget.allow_at(0)).collect();
        assert_eq!(second_0, [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(
            budget.allow_at(1),
            Some(2),
            "the next second says how many were held back"
        );
        assert_eq!(budget.allow_at(1), Some(0));
        assert_eq!(
            budget.allow_at(0),
            Some(0),
            "a late caller does not reopen a past second"
        );
        assert_eq!(budget.allow_at(1), None);
    }
}
