//! The cluster simulation's events and their order: earliest first, and at one instant task
//! and pod changes, then observations, then decisions, each class in the order scheduled.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Arrival(usize),
    PodReady(usize),
    TaskEnd { pod: usize, task: usize },
    Poll,
    Beat(usize),
    Decide,
}

impl Event {
    /// Order of events at the same instant: state changes, then observations, then the
    /// decision (which so sees everything that happened at its instant).
    pub fn class(self) -> u8 {
        match self {
            Event::Arrival(_) | Event::PodReady(_) | Event::TaskEnd { .. } => 0,
            Event::Poll | Event::Beat(_) => 1,
            Event::Decide => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timed {
    pub at: f64,
    pub class: u8,
    pub seq: u64,
    pub event: Event,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    /// Reversed: BinaryHeap pops the greatest, and the earliest event must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then(other.class.cmp(&self.class))
            .then(other.seq.cmp(&self.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BinaryHeap;

    #[test]
    fn same_instant_events_run_changes_before_decisions() {
        let timed = |at, seq, event: Event| Timed {
            at,
            class: event.class(),
            seq,
            event,
        };
        let mut heap = BinaryHeap::from(vec![
            timed(1.0, 1, Event::Decide),
            timed(1.0, 2, Event::Poll),
            timed(0.5, 3, Event::Decide),
            timed(1.0, 4, Event::Arrival(0)),
        ]);
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|t| t.seq)).collect();
        assert_eq!(order, vec![3, 4, 2, 1]);
    }
}
