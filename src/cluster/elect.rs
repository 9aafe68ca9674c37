//! Master election and the passive-ejection cap: pure functions.

use super::health::State;
use crate::config::Failback;

/// A master candidate, as election sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The node's id.
    pub node: u64,
    pub priority: u32,
    pub state: State,
}

/// Chooses the master among `candidates` (in priority order, best first).
///
/// - `Sticky`: a current master that is up keeps the role.
/// - Otherwise, the first candidate that is up. A better candidate not checked yet (`Unknown`, only at
///   startup) holds the election back, so that start order never decides who is master.
pub fn elect(candidates: &[Candidate], current: Option<u64>, failback: Failback) -> Option<u64> {
    if failback == Failback::Sticky {
        if let Some(c) = candidates.iter().find(|c| Some(c.node) == current) {
            if c.state == State::Up {
                return current;
            }
        }
    }
    for c in candidates {
        match c.state {
            State::Up => return Some(c.node),
            State::Unknown => return None,
            State::Down => {}
        }
    }
    None
}

/// May one more node be ejected passively? At most `percent` % of `total` nodes, and never the last.
pub fn passive_ejection_allowed(already: usize, total: usize, percent: u32) -> bool {
    let cap = total * percent as usize / 100;
    already < cap && already + 1 < total
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::{Down, Unknown, Up};

    fn cands(states: &[State]) -> Vec<Candidate> {
        states
            .iter()
            .enumerate()
            .map(|(i, &state)| Candidate {
                node: i as u64,
                priority: i as u32 + 1,
                state,
            })
            .collect()
    }

    #[test]
    fn first_up_candidate_wins() {
        assert_eq!(elect(&cands(&[Up, Up]), None, Failback::Sticky), Some(0));
        assert_eq!(
            elect(&cands(&[Down, Up]), None, Failback::Priority),
            Some(1)
        );
        assert_eq!(
            elect(&cands(&[Down, Down]), Some(0), Failback::Sticky),
            None
        );
        assert_eq!(elect(&[], None, Failback::Sticky), None);
    }

    #[test]
    fn an_unchecked_better_candidate_holds_the_election() {
        assert_eq!(elect(&cands(&[Unknown, Up]), None, Failback::Sticky), None);
        assert_eq!(
            elect(&cands(&[Down, Unknown, Up]), None, Failback::Priority),
            None
        );
        assert_eq!(
            elect(&cands(&[Up, Unknown]), None, Failback::Priority),
            Some(0)
        );
    }

    #[test]
    fn sticky_keeps_a_promoted_master_priority_moves_back() {
        // Node 0 died, node 1 was promoted; node 0 is back.
        assert_eq!(elect(&cands(&[Up, Up]), Some(1), Failback::Sticky), Some(1));
        assert_eq!(
            elect(&cands(&[Up, Up]), Some(1), Failback::Priority),
            Some(0)
        );
        // The promoted one dies: the best up candidate takes over.
        assert_eq!(
            elect(&cands(&[Up, Down, Up]), Some(1), Failback::Sticky),
            Some(0)
        );
    }

    #[test]
    fn passive_ejection_keeps_most_of_the_pool() {
        assert!(passive_ejection_allowed(0, 3, 50), "one of three");
        assert!(!passive_ejection_allowed(1, 3, 50), "not two of three");
        assert!(passive_ejection_allowed(1, 4, 50));
        assert!(!passive_ejection_allowed(0, 1, 100), "never the last node");
        assert!(!passive_ejection_allowed(0, 2, 0), "0 % disables");
    }

    #[test]
    fn election_follows_priority_not_config_order() {
        let c = vec![
            Candidate {
                node: 2,
                priority: 1,
                state: Up,
            },
            Candidate {
                node: 0,
                priority: 2,
                state: Up,
            },
        ];
        assert_eq!(elect(&c, None, Failback::Priority), Some(2));
    }
}
