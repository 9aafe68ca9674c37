//! The retry budget: retries may add at most `retries.budget_percent` of the requests of the last
//! `budget_window`, plus `budget_min_per_second` for every second of it, so a sick cluster is not
//! hammered by a retry storm. Counted lock-free in one-second slots; the settings are read at
//! each withdrawal, so a reload changes them without forgetting the window.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::config::Retries;

/// Seconds kept: the longest window (`retries.budget_window` is at most 60 s).
const SLOTS: usize = 64;

pub struct RetryBudget {
    epoch: Instant,
    slots: [Slot; SLOTS],
}

#[derive(Default)]
struct Slot {
    /// The second (since `epoch`) the counts are for.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(Instant::now())
    }
}

impl RetryBudget {
    pub fn new(epoch: Instant) -> RetryBudget {
        RetryBudget {
            epoch,
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }

    /// The slot of the second `now` falls in, cleared if it held an older second. (Counts that race
    /// with the clearing may be lost: the budget is an estimate.)
    fn slot(&self, now: Instant) -> (u64, &Slot) {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let slot = &self.slots[second as usize % SLOTS];
        let held = slot.second.load(Relaxed);
        if held != second
            && slot
                .second
                .compare_exchange(held, second, Relaxed, Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Relaxed);
            slot.retries.store(0, Relaxed);
        }
        (second, slot)
    }

    /// A request came in at `now`.
    pub fn deposit(&self, now: Instant) {
        self.slot(now).1.requests.fetch_add(1, Relaxed);
    }

    /// Takes one retry at `now` if the budget allows it.
    pub fn withdraw(&self, now: Instant, settings: &Retries) -> bool {
        let (second, slot) = self.slot(now);
        let window = (settings.budget_window.0.as_secs_f64().ceil() as u64).clamp(1, SLOTS as u64);
        let (mut requests, mut retries) = (0, 0);
        for s in second.saturating_sub(window - 1)..=second {
            let past = &self.slots[s as usize % SLOTS];
            if past.second.load(Relaxed) == s {
                requests += past.requests.load(Relaxed);
                retries += past.retries.load(Relaxed);
            }
        }
        let allowed = u64::from(settings.budget_min_per_second) * window
            + requests * u64::from(settings.budget_percent) / 100;
        if retries >= allowed {
            return false;
        }
        slot.retries.fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;
    use std::time::Duration;

    fn settings(percent: u32, min_per_second: u32, window_secs: u64) -> Retries {
        Retries {
            budget_percent: percent,
            budget_min_per_second: min_per_second,
            budget_window: Dur::secs(window_secs),
            ..Retries::default()
        }
    }

    fn take_all(budget: &RetryBudget, now: Instant, settings: &Retries) -> u32 {
        let mut n = 0;
        while budget.withdraw(now, settings) {
            n += 1;
            assert!(n < 100_000, "unbounded");
        }
        n
    }

    #[test]
    fn the_reserve_and_the_share_of_requests() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        let s = settings(20, 1, 10);
        assert_eq!(take_all(&budget, t0, &s), 10, "1 a second over 10 s");
        for _ in 0..100 {
            budget.deposit(t0);
        }
        assert_eq!(take_all(&budget, t0, &s), 20, "20 % of 100 requests");
    }

    #[test]
    fn what_leaves_the_window_no_longer_counts() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        let s = settings(50, 0, 2);
        for _ in 0..10 {
            budget.deposit(t0);
        }
        assert_eq!(take_all(&budget, t0, &s), 5);
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(take_all(&budget, later, &s), 0, "still in the 2 s window");
        let gone = t0 + Duration::from_secs(2);
        assert_eq!(take_all(&budget, gone, &s), 0, "no request in the window");
        for _ in 0..4 {
            budget.deposit(gone);
        }
        assert_eq!(
            take_all(&budget, gone, &s),
            2,
            "only the new requests count"
        );
        // A slot is reused 64 s later: its old counts are cleared, not added.
        let lap = t0 + Duration::from_secs(SLOTS as u64);
        assert_eq!(take_all(&budget, lap, &s), 0);
    }

    #[test]
    fn new_settings_apply_to_the_same_counts() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        for _ in 0..100 {
            budget.deposit(t0);
        }
        assert_eq!(take_all(&budget, t0, &settings(10, 0, 10)), 10);
        assert_eq!(
            take_all(&budget, t0, &settings(30, 0, 10)),
            20,
            "a reload raising the share allows the difference"
        );
    }
}
