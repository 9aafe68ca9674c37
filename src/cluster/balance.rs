//! Picking a node among the candidates of a pool: pure functions over what each candidate reports
//! (eligible or not, its cost, slow-start weight).
//!
//! Power of two choices (Mitzenmacher): draw two distinct candidates at random and keep the one
//! of lower cost (the first on a tie). Not sozu's variant, which keeps the two least-loaded nodes
//! and flips a coin. The cost is the requests in flight (`least-outstanding`), or, by default
//! (`latency`, after Finagle's and linkerd's peak-EWMA), the node's pace (how many times its request classes'
//! usual time its recent answers took, `cluster::latency`) times its requests in flight plus one:
//! a node ten times slower than its peers is picked only when they are ten times busier, and, as
//! its pace returns to the usual unused, tried again now and then. Paces up to [`USUAL_PACE`]
//! count as 1, so that healthy nodes keep sharing the reads evenly. A candidate warming up after
//! re-admission has a weight below 1: it is drawn less often (rejection sampling), so its share
//! ramps up with the weight.

/// What the picker needs to know of candidate `i`: `None` when it cannot take the request (already
/// tried, at its concurrency cap), else its cost and weight in `(0, 1]`.
pub type Candidate = Option<(f64, f64)>;

/// Paces up to this are the usual: nodes within it are equals, told apart by load alone (reads
/// keep spreading over every healthy node; only a node clearly slower than its peers is avoided).
pub const USUAL_PACE: f64 = 1.5;

/// The latency-aware cost of a node: its pace (how many times its classes' usual time its recent
/// answers took; 1 up to [`USUAL_PACE`]) times its requests in flight plus one.
pub fn paced_cost(pace: f64, in_flight: usize) -> f64 {
    let pace = if pace <= USUAL_PACE { 1.0 } else { pace };
    pace * (in_flight + 1) as f64
}

/// Draws made for one choice before falling back to a scan.
const DRAWS: usize = 4;

/// Power of two choices over `n` candidates. Returns `None` only when no candidate is eligible.
pub fn pick_p2c(
    n: usize,
    rng: &mut fastrand::Rng,
    cand: impl Fn(usize) -> Candidate,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let a = draw(n, rng, &cand, None);
    let b = if n > 1 { draw(n, rng, &cand, a) } else { None };
    debug_assert!(a.is_none() || a != b);
    match (a, b) {
        (Some(a), Some(b)) => Some(if load(&cand, b) < load(&cand, a) {
            b
        } else {
            a
        }),
        (Some(a), None) if n == 1 => Some(a),
        // Draws kept failing (many candidates ineligible or warming): the least loaded eligible one.
        _ => {
            let start = rng.usize(..n);
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|&i| cand(i).is_some())
                .min_by(|&i, &j| load(&cand, i).total_cmp(&load(&cand, j)))
        }
    }
}

/// Round robin from `ticket`, skipping ineligible candidates; a warming candidate is skipped with
/// probability `1 - weight`.
pub fn pick_round_robin(
    n: usize,
    ticket: usize,
    rng: &mut fastrand::Rng,
    cand: impl Fn(usize) -> Candidate,
) -> Option<usize> {
    let order = (0..n).map(|k| (ticket + k) % n.max(1));
    order
        .clone()
        .find(|&i| cand(i).is_some_and(|(_, w)| w >= 1.0 || rng.f64() < w))
        .or_else(|| order.into_iter().find(|&i| cand(i).is_some()))
}

/// A draw accepted with probability equal to the candidate's weight, distinct from `other`.
fn draw(
    n: usize,
    rng: &mut fastrand::Rng,
    cand: &impl Fn(usize) -> Candidate,
    other: Option<usize>,
) -> Option<usize> {
    for _ in 0..DRAWS {
        let i = match other {
            // Among the n-1 others, so the two draws always differ.
            Some(o) => (o + 1 + rng.usize(..n - 1)) % n,
            None => rng.usize(..n),
        };
        if let Some((_, w)) = cand(i) {
            if w >= 1.0 || rng.f64() < w {
                return Some(i);
            }
        }
    }
    None
}

fn load(cand: &impl Fn(usize) -> Candidate, i: usize) -> f64 {
    cand(i).map_or(f64::INFINITY, |(load, _)| load)
}

/// The slow-start weight of a node admitted `elapsed` ago: a linear ramp over `ramp`, never below 5 %.
pub fn slow_start_weight(elapsed: std::time::Duration, ramp: std::time::Duration) -> f64 {
    if ramp.is_zero() || elapsed >= ramp {
        1.0
    } else {
        (elapsed.as_secs_f64() / ramp.as_secs_f64()).max(0.05)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn loads(l: &[f64]) -> impl Fn(usize) -> Candidate + '_ {
        |i| Some((l[i], 1.0))
    }

    #[test]
    fn empty_single_and_ineligible() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(pick_p2c(0, &mut rng, |_| Some((0.0, 1.0))), None);
        assert_eq!(pick_p2c(1, &mut rng, |_| Some((99.0, 1.0))), Some(0));
        assert_eq!(pick_p2c(3, &mut rng, |_| None), None);
        for _ in 0..100 {
            assert_eq!(
                pick_p2c(5, &mut rng, |i| (i == 3).then_some((7.0, 1.0))),
                Some(3),
                "the only eligible one"
            );
        }
        assert_eq!(pick_round_robin(0, 5, &mut rng, |_| Some((0.0, 1.0))), None);
        assert_eq!(
            pick_round_robin(3, 5, &mut rng, |_| Some((0.0, 1.0))),
            Some(2)
        );
        assert_eq!(
            pick_round_robin(3, 5, &mut rng, |i| (i != 2).then_some((0.0, 1.0))),
            Some(0)
        );
    }

    #[test]
    fn p2c_avoids_the_busiest_and_spreads_evenly() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[pick_p2c(3, &mut rng, loads(&[0.0, 0.0, 1000.0])).unwrap()] += 1;
        }
        assert_eq!(
            counts[2], 0,
            "the node with 1000 in flight is never the better of two"
        );
        assert!(counts[0] > 1200 && counts[1] > 1200, "{counts:?}");
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[pick_p2c(4, &mut rng, loads(&[0.0; 4])).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| c > 800),
            "equal loads spread evenly: {counts:?}"
        );
    }

    #[test]
    fn a_warming_node_gets_a_smaller_share() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut counts = [0usize; 3];
        for _ in 0..6000 {
            let i = pick_p2c(3, &mut rng, |i| Some((0.0, if i == 0 { 0.1 } else { 1.0 }))).unwrap();
            counts[i] += 1;
        }
        assert!(
            counts[0] * 4 < counts[1],
            "weight 0.1 gets much less: {counts:?}"
        );
        assert!(counts[0] > 0, "but not nothing: {counts:?}");
    }

    #[test]
    fn a_node_ten_times_slower_is_avoided_until_its_peers_are_ten_times_busier() {
        let mut rng = fastrand::Rng::with_seed(11);
        let estimate = [1.0, 1.0, 10.0];
        let mut share = |in_flight: [usize; 3]| {
            let mut counts = [0usize; 3];
            for _ in 0..3000 {
                let cost = |i: usize| Some((paced_cost(estimate[i], in_flight[i]), 1.0));
                counts[pick_p2c(3, &mut rng, cost).unwrap()] += 1;
            }
            counts
        };
        assert_eq!(share([1, 1, 0])[2], 0, "idle, but ten times slower");
        assert!(share([12, 12, 0])[2] > 1000, "its peers ten times busier");
        assert_eq!(paced_cost(1.0, 3), 4.0, "the usual pace: load alone");
        assert_eq!(
            paced_cost(0.7, 3),
            paced_cost(1.4, 3),
            "usual paces are equals"
        );
        assert_eq!(paced_cost(3.0, 1), 6.0);
    }

    #[test]
    fn slow_start_ramps_linearly() {
        let ramp = Duration::from_secs(30);
        assert_eq!(slow_start_weight(Duration::ZERO, ramp), 0.05);
        assert_eq!(slow_start_weight(Duration::from_secs(15), ramp), 0.5);
        assert_eq!(slow_start_weight(Duration::from_secs(31), ramp), 1.0);
        assert_eq!(slow_start_weight(Duration::ZERO, Duration::ZERO), 1.0);
    }

    proptest! {
        #[test]
        fn p2c_picks_an_eligible_candidate_and_never_the_strictly_worst(
            seed: u64,
            cands in prop::collection::vec(prop::option::weighted(0.8, 0usize..10), 1..16),
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let picked = pick_p2c(cands.len(), &mut rng, |i| cands[i].map(|l| (l as f64, 1.0)));
            let eligible: Vec<usize> = cands.iter().flatten().copied().collect();
            prop_assert_eq!(picked.is_some(), !eligible.is_empty());
            if let Some(i) = picked {
                prop_assert!(cands[i].is_some());
                let max = *eligible.iter().max().unwrap();
                if eligible.len() > 1 && eligible.iter().filter(|&&l| l == max).count() == 1 {
                    prop_assert!(cands[i].unwrap() < max);
                }
            }
        }
    }
}
