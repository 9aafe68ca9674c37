//! What recent latency says, lock-free: per request class a smoothed time to first byte and its
//! variation (as TCP's retransmission timer, RFC 6298), from which the hedge delay of a read of
//! that class follows; per node its *pace*, a moving average of how many times its class's usual
//! time each of its answers took (the cost power of two choices weighs, in the spirit of Finagle's
//! and linkerd's peak-EWMA, but relative to the class: a GeoServer mixes 5 ms tiles with 30 s WFS
//! exports, and a node that just served an export is not slow), and a peak-sensitive moving
//! average of its time to first byte (what explains a quiet, for stall detection).
//!
//! Updates are a load and a store, not a compare-and-swap loop: two answers landing at once may
//! lose one sample, which an estimate can afford; the request path never waits.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::classify::Class;

/// Nanoseconds since the first call: a timestamp that fits an atomic (tokio's clock, so paused
/// time in tests moves it too).
pub fn now_ns(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| at);
    at.saturating_duration_since(epoch).as_nanos() as u64
}

/// An estimate `est` (ns) aged by `elapsed_ns` without samples: it decays towards zero with time
/// constant `tau_ns`, so a node avoided for being slow is tried again now and then.
pub fn decayed(est: f64, elapsed_ns: u64, tau_ns: f64) -> f64 {
    est * (-(elapsed_ns as f64) / tau_ns).exp()
}

/// The estimate after `sample` (ns), `elapsed_ns` after the last one: a sample above the estimate
/// replaces it (a node turning slow is seen at once), one below pulls it down with a weight that
/// grows with the time since the last sample.
pub fn updated(est: f64, elapsed_ns: u64, sample: f64, tau_ns: f64) -> f64 {
    if sample > est {
        sample
    } else {
        let w = (-(elapsed_ns as f64) / tau_ns).exp();
        est * w + sample * (1.0 - w)
    }
}

/// A node's peak-EWMA time to first byte.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// The estimate in nanoseconds, as `f64` bits (0: no sample yet).
    est: AtomicU64,
    /// When it was last updated ([`now_ns`]).
    stamp: AtomicU64,
}

impl PeakEwma {
    /// Notes an answer's time to first byte at `now` (see [`now_ns`]).
    pub fn observe(&self, now: u64, sample: Duration, tau: Duration) {
        let est = f64::from_bits(self.est.load(Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Relaxed));
        let next = updated(est, elapsed, sample.as_nanos() as f64, tau_ns(tau));
        self.est.store(next.to_bits(), Relaxed);
        self.stamp.store(now, Relaxed);
    }

    /// The estimate at `now`, in nanoseconds (0 before any sample).
    pub fn estimate(&self, now: u64, tau: Duration) -> f64 {
        let est = f64::from_bits(self.est.load(Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Relaxed));
        decayed(est, elapsed, tau_ns(tau))
    }
}

/// The pace sample of an attempt beaten by a hedge (its answer, cancelled, never came): as a
/// node ten times slower than its peers.
pub const OUTPACED: f64 = 10.0;

/// How much one answer moves a node's pace: about the last ten answers count.
const PACE_GAIN: f64 = 0.1;

/// A pace `est` aged by `elapsed_ns` without answers: it returns towards 1 (the class's usual
/// time) with time constant `tau_ns`, so a node avoided for being slow is tried again.
pub fn pace_at(est: f64, elapsed_ns: u64, tau_ns: f64) -> f64 {
    1.0 + (est - 1.0) * (-(elapsed_ns as f64) / tau_ns).exp()
}

/// The pace after an answer that took `ratio` times its class's usual time.
pub fn paced(est: f64, elapsed_ns: u64, ratio: f64, tau_ns: f64) -> f64 {
    let aged = pace_at(est, elapsed_ns, tau_ns);
    aged + PACE_GAIN * (ratio.clamp(0.05, 100.0) - aged)
}

/// A node's pace: how many times its class's usual time its recent answers took (1 before any).
#[derive(Debug)]
pub struct Pace {
    /// As `f64` bits.
    est: AtomicU64,
    stamp: AtomicU64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            est: AtomicU64::new(1.0f64.to_bits()),
            stamp: AtomicU64::new(0),
        }
    }
}

impl Pace {
    /// Notes an answer that took `ratio` times its class's usual time, at `now` ([`now_ns`]).
    pub fn observe(&self, now: u64, ratio: f64, tau: Duration) {
        let est = f64::from_bits(self.est.load(Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Relaxed));
        let next = paced(est, elapsed, ratio, tau_ns(tau));
        self.est.store(next.to_bits(), Relaxed);
        self.stamp.store(now, Relaxed);
    }

    /// Back to the usual, at `now`.
    pub fn reset(&self, now: u64) {
        self.est.store(1.0f64.to_bits(), Relaxed);
        self.stamp.store(now, Relaxed);
    }

    /// The pace at `now`.
    pub fn at(&self, now: u64, tau: Duration) -> f64 {
        let est = f64::from_bits(self.est.load(Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Relaxed));
        pace_at(est, elapsed, tau_ns(tau))
    }
}

fn tau_ns(tau: Duration) -> f64 {
    (tau.as_nanos() as f64).max(1.0)
}

/// The hedge delay of a class whose smoothed time to first byte is `srtt` and variation `var`:
/// twice `srtt`, or `srtt` plus four times `var` (TCP's retransmission timer) when that is longer,
/// within `[min, max]`. Twice the usual time, so a uniformly slow cluster is not hedged.
pub fn hedge_delay(srtt: Duration, var: Duration, min: Duration, max: Duration) -> Duration {
    (srtt * 2).max(srtt + var * 4).clamp(min, max.max(min))
}

/// Per request class, the smoothed time to first byte and its variation, in microseconds.
#[derive(Debug)]
pub struct ClassLatency {
    slots: Box<[Smoothed]>,
}

#[derive(Debug, Default)]
struct Smoothed {
    /// Smoothed time to first byte, µs (0: no sample yet).
    srtt: AtomicU64,
    /// Its mean deviation, µs.
    var: AtomicU64,
}

impl Default for ClassLatency {
    fn default() -> Self {
        ClassLatency {
            slots: (0..Class::SLOTS).map(|_| Smoothed::default()).collect(),
        }
    }
}

impl ClassLatency {
    /// Notes an answer's time to first byte for `class` (RFC 6298's update: gains 1/8 and 1/4).
    pub fn observe(&self, class: &Class, sample: Duration) {
        let slot = &self.slots[class.slot()];
        let s = (sample.as_micros() as u64).max(1);
        let srtt = slot.srtt.load(Relaxed);
        if srtt == 0 {
            slot.srtt.store(s, Relaxed);
            slot.var.store(s / 2, Relaxed);
            return;
        }
        let var = slot.var.load(Relaxed);
        slot.var.store((3 * var + srtt.abs_diff(s)) / 4, Relaxed);
        slot.srtt.store((7 * srtt + s) / 8, Relaxed);
    }

    /// The smoothed time to first byte of `class` and its variation; `None` before any sample.
    pub fn of(&self, class: &Class) -> Option<(Duration, Duration)> {
        let slot = &self.slots[class.slot()];
        let srtt = slot.srtt.load(Relaxed);
        (srtt != 0).then(|| {
            (
                Duration::from_micros(srtt),
                Duration::from_micros(slot.var.load(Relaxed)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;
    const TAU: f64 = 10_000.0 * MS;

    #[test]
    fn a_slower_sample_is_taken_at_once_a_faster_one_gradually() {
        assert_eq!(updated(10.0 * MS, 1_000, 200.0 * MS, TAU), 200.0 * MS);
        let after = updated(200.0 * MS, 1_000_000, 10.0 * MS, TAU);
        assert!(after > 199.0 * MS, "one fast answer right after: {after}");
        let later = updated(200.0 * MS, (10_000.0 * MS) as u64, 10.0 * MS, TAU);
        assert!(
            (later - (200.0 / std::f64::consts::E + 10.0 * (1.0 - 1.0 / std::f64::consts::E)) * MS)
                .abs()
                < 1.0
        );
    }

    #[test]
    fn an_unused_estimate_decays_so_a_slow_node_is_tried_again() {
        assert_eq!(decayed(200.0 * MS, 0, TAU), 200.0 * MS);
        let e = decayed(200.0 * MS, (TAU * 3.0_f64.ln()) as u64, TAU);
        assert!((e - 200.0 / 3.0 * MS).abs() < 1e3, "{e}");
    }

    #[test]
    fn peak_ewma_in_time() {
        let p = PeakEwma::default();
        let tau = Duration::from_secs(10);
        assert_eq!(p.estimate(0, tau), 0.0);
        p.observe(1_000, Duration::from_millis(5), tau);
        assert_eq!(p.estimate(1_000, tau), 5.0 * MS);
        p.observe(2_000, Duration::from_millis(50), tau);
        assert_eq!(p.estimate(2_000, tau), 50.0 * MS, "peak");
        assert!(
            p.estimate(2_000 + 10_000_000_000, tau) < 19.0 * MS,
            "decays"
        );
    }

    #[test]
    fn a_node_ten_times_slower_than_its_classes_gets_a_pace_near_ten() {
        let p = Pace::default();
        let tau = Duration::from_secs(10);
        assert_eq!(p.at(0, tau), 1.0);
        for i in 1..=60 {
            p.observe(i * 1_000_000, 10.0, tau);
        }
        let pace = p.at(60_000_000, tau);
        assert!(pace > 9.0 && pace <= 10.0, "{pace}");
        // One slow answer on a healthy node moves it a little, not to ten.
        let q = Pace::default();
        q.observe(1_000_000, 10.0, tau);
        assert!((q.at(1_000_000, tau) - 1.9).abs() < 1e-9);
        // Unused, it returns towards the usual pace.
        let later = p.at(60_000_000 + 30_000_000_000, tau);
        assert!(later < 1.5, "{later}");
    }

    #[test]
    fn the_hedge_delay_is_twice_the_usual_time_or_its_spread_within_bounds() {
        let ms = Duration::from_millis;
        let (min, max) = (ms(50), ms(2000));
        assert_eq!(hedge_delay(ms(1), ms(1), min, max), ms(50), "floor");
        assert_eq!(hedge_delay(ms(100), ms(10), min, max), ms(200), "twice");
        assert_eq!(hedge_delay(ms(100), ms(50), min, max), ms(300), "spread");
        assert_eq!(hedge_delay(ms(1500), ms(10), min, max), ms(2000), "ceiling");
    }

    #[test]
    fn class_latency_follows_rfc_6298_per_class() {
        let t = ClassLatency::default();
        let getmap = Class::Ows {
            service: Some("wms"),
            op: Some("GetMap"),
        };
        let getfeature = Class::Ows {
            service: Some("wfs"),
            op: Some("GetFeature"),
        };
        assert_eq!(t.of(&getmap), None);
        t.observe(&getmap, Duration::from_millis(8));
        assert_eq!(
            t.of(&getmap),
            Some((Duration::from_millis(8), Duration::from_millis(4)))
        );
        for _ in 0..100 {
            t.observe(&getfeature, Duration::from_millis(2000));
        }
        t.observe(&getmap, Duration::from_millis(16));
        let (srtt, var) = t.of(&getmap).unwrap();
        assert_eq!(
            (srtt, var),
            (Duration::from_millis(9), Duration::from_millis(5))
        );
        let (srtt, _) = t.of(&getfeature).unwrap();
        assert_eq!(srtt, Duration::from_millis(2000), "heavy operations apart");
    }
}
