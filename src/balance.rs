//! Picking a node among the healthy readers: pure functions over the candidates' loads.
//!
//! `least-outstanding` is classic power of two choices (Mitzenmacher): draw two distinct readers at
//! random and keep the one with fewer requests in flight (the first on a tie). Not sozu's variant,
//! which keeps the two least-loaded nodes and flips a coin.

/// Power of two choices over `n` candidates whose in-flight counts `load(i)` reports.
/// Returns `None` only when `n == 0`.
pub fn pick_p2c(n: usize, load: impl Fn(usize) -> usize, rng: &mut fastrand::Rng) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        _ => {
            let a = rng.usize(..n);
            // A second draw among the n-1 others, so the two always differ.
            let b = (a + 1 + rng.usize(..n - 1)) % n;
            debug_assert_ne!(a, b);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

/// Round robin: the `ticket`-th candidate, wrapping.
pub fn pick_round_robin(n: usize, ticket: usize) -> Option<usize> {
    (n > 0).then(|| ticket % n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_single() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(pick_p2c(0, |_| 0, &mut rng), None);
        assert_eq!(pick_p2c(1, |_| 99, &mut rng), Some(0));
        assert_eq!(pick_round_robin(0, 5), None);
        assert_eq!(pick_round_robin(3, 5), Some(2));
    }

    #[test]
    fn p2c_avoids_the_busiest_and_spreads_evenly() {
        let mut rng = fastrand::Rng::with_seed(7);
        let loads = [0usize, 0, 1000];
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[pick_p2c(3, |i| loads[i], &mut rng).unwrap()] += 1;
        }
        assert_eq!(
            counts[2], 0,
            "the node with 1000 in flight is never the better of two"
        );
        assert!(counts[0] > 1200 && counts[1] > 1200, "{counts:?}");
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[pick_p2c(4, |_| 0, &mut rng).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| c > 800),
            "equal loads spread evenly: {counts:?}"
        );
    }

    proptest! {
        #[test]
        fn p2c_picks_in_range_and_never_the_strictly_worst(seed: u64, loads in prop::collection::vec(0usize..10, 1..16)) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let i = pick_p2c(loads.len(), |i| loads[i], &mut rng).unwrap();
            prop_assert!(i < loads.len());
            let max = *loads.iter().max().unwrap();
            let maxes = loads.iter().filter(|&&l| l == max).count();
            if loads.len() > 1 && maxes == 1 {
                prop_assert!(loads[i] < max);
            }
        }
    }
}
