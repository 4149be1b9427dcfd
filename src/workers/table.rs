//! The workers one broker's events describe, by Celery node name: what each runs now, when
//! it last ran a task, and whether it still reports at all.

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{BeatKind, WorkerBeat};

/// A worker silent for this many of its heartbeat intervals is gone (killed, partitioned).
const MISSED_BEATS: f64 = 3.0;
/// Heartbeat intervals outside this range are taken as their bound (a garbage `freq` must
/// neither expire a live worker at once nor keep a dead one for hours).
const MIN_FREQ: f64 = 0.5;
const MAX_FREQ: f64 = 60.0;

/// One worker process as its last report described it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSeen {
    /// Celery's node name, `name@host` (Tutor: `celery@edx.lms.core.default.<pod>`).
    pub hostname: String,
    /// Tasks it executes now.
    pub active: u32,
    /// The last time it reported a running task.
    pub last_busy: Option<Timestamp>,
    /// Its heartbeat interval.
    pub freq: Duration,
    /// Tasks it has started since its process started (Celery's `processed`).
    pub processed: u64,
    /// Seconds of task running summed over its heartbeats (`active` x the time to the next
    /// heartbeat): with `processed`, the mean task time (Little's law).
    pub busy_seconds: f64,
    /// When its first event arrived here.
    pub first_seen: Timestamp,
}

#[derive(Debug, Clone)]
struct Entry {
    active: u32,
    /// The worker's heartbeat interval.
    freq: f64,
    last_beat: Timestamp,
    last_busy: Option<Timestamp>,
    processed: u64,
    busy_seconds: f64,
    first_seen: Timestamp,
}

/// The live workers of one broker.
#[derive(Debug, Default)]
pub struct WorkerTable {
    workers: HashMap<String, Entry>,
}

impl WorkerTable {
    /// Takes one event in, received at `now` (the receiver's clock: workers' clocks may be
    /// off).
    pub fn record(&mut self, beat: &WorkerBeat, now: Timestamp) {
        if beat.kind == BeatKind::Offline {
            self.workers.remove(&beat.hostname);
            return;
        }
        let freq = if beat.freq.is_finite() {
            beat.freq.clamp(MIN_FREQ, MAX_FREQ)
        } else {
            MAX_FREQ
        };
        let previous = self.workers.get(&beat.hostname);
        let previous_busy = previous.and_then(|e| e.last_busy);
        // The tasks that ran since the previous event ran for the time between them (a gap
        // longer than the silence that ends a worker counts only that long).
        let busy_seconds = match previous {
            // A restarted process counts from zero again.
            Some(e) if beat.processed >= e.processed => {
                let gap = now
                    .duration_since(e.last_beat)
                    .as_secs_f64()
                    .clamp(0.0, e.freq * MISSED_BEATS);
                e.busy_seconds + f64::from(e.active) * gap
            }
            _ => 0.0,
        };
        let first_seen = previous.map_or(now, |e| e.first_seen);
        self.workers.insert(
            beat.hostname.clone(),
            Entry {
                active: beat.active,
                freq,
                last_beat: now,
                last_busy: if beat.active > 0 {
                    Some(now)
                } else {
                    previous_busy
                },
                processed: beat.processed,
                busy_seconds,
                first_seen,
            },
        );
    }

    /// Forgets the workers that stopped reporting, and lists the others.
    pub fn seen(&mut self, now: Timestamp) -> Vec<WorkerSeen> {
        self.workers.retain(|_, e| {
            let silence = SignedDuration::from_secs_f64(e.freq * MISSED_BEATS);
            now.duration_since(e.last_beat) <= silence
        });
        self.workers
            .iter()
            .map(|(hostname, e)| WorkerSeen {
                hostname: hostname.clone(),
                active: e.active,
                last_busy: e.last_busy,
                freq: Duration::from_secs_f64(e.freq),
                processed: e.processed,
                busy_seconds: e.busy_seconds,
                first_seen: e.first_seen,
            })
            .collect()
    }

    /// The longest heartbeat interval among the workers (for how long a start-up waits
    /// before an unreported pod counts as unknown rather than not reported yet).
    pub fn longest_interval(&self) -> Option<Duration> {
        self.workers
            .values()
            .map(|e| e.freq)
            .fold(None, |longest: Option<f64>, f| {
                Some(longest.map_or(f, |l| l.max(f)))
            })
            .map(Duration::from_secs_f64)
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(hostname: &str, kind: BeatKind, active: u32, freq: f64) -> WorkerBeat {
        WorkerBeat {
            hostname: hostname.to_string(),
            kind,
            active,
            processed: 0,
            freq,
            sent_at: None,
        }
    }

    fn at(seconds: f64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs_f64(seconds)
    }

    #[test]
    fn a_worker_is_gone_after_three_silent_intervals() {
        let mut table = WorkerTable::default();
        table.record(&beat("celery@a", BeatKind::Heartbeat, 1, 2.0), at(10.0));
        assert_eq!(table.seen(at(16.0)).len(), 1);
        assert!(table.seen(at(16.1)).is_empty());
        assert!(table.is_empty(), "forgotten, not only hidden");
    }

    #[test]
    fn offline_removes_at_once_and_online_adds() {
        let mut table = WorkerTable::default();
        table.record(&beat("celery@a", BeatKind::Online, 0, 2.0), at(0.0));
        assert_eq!(table.seen(at(1.0)).len(), 1);
        table.record(&beat("celery@a", BeatKind::Offline, 0, 2.0), at(1.0));
        assert!(table.seen(at(1.0)).is_empty());
    }

    #[test]
    fn last_busy_is_kept_after_the_tasks_end() {
        let mut table = WorkerTable::default();
        table.record(&beat("celery@a", BeatKind::Heartbeat, 2, 2.0), at(0.0));
        table.record(&beat("celery@a", BeatKind::Heartbeat, 0, 2.0), at(2.0));
        let seen = table.seen(at(2.0));
        assert_eq!(seen[0].active, 0);
        assert_eq!(seen[0].last_busy, Some(at(0.0)));
    }

    #[test]
    fn garbage_intervals_are_bounded() {
        let mut table = WorkerTable::default();
        table.record(&beat("celery@zero", BeatKind::Heartbeat, 0, 0.0), at(0.0));
        table.record(
            &beat("celery@nan", BeatKind::Heartbeat, 0, f64::NAN),
            at(0.0),
        );
        table.record(&beat("celery@huge", BeatKind::Heartbeat, 0, 1e300), at(0.0));
        // 0 s would expire at once; it is taken as 0.5 s (gone after 1.5 s).
        assert_eq!(table.seen(at(1.0)).len(), 3);
        assert_eq!(table.seen(at(1.6)).len(), 2);
        // NaN and huge intervals end after 3 x 60 s, not never.
        assert!(table.seen(at(181.0)).is_empty());
        assert_eq!(table.longest_interval(), None);
    }

    #[test]
    fn busy_seconds_and_processed_accumulate_per_process() {
        let mut table = WorkerTable::default();
        let beat_at = |active: u32, processed: u64, t: f64, table: &mut WorkerTable| {
            let mut b = beat("celery@w", BeatKind::Heartbeat, active, 2.0);
            b.processed = processed;
            table.record(&b, at(t));
        };
        beat_at(1, 5, 100.0, &mut table);
        beat_at(2, 6, 102.0, &mut table);
        // A 30 s gap counts as the 6 s a silent worker lives: 2 tasks x 6 s.
        beat_at(0, 8, 132.0, &mut table);
        let seen = table.seen(at(132.0));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].processed, 8);
        assert!(
            (seen[0].busy_seconds - (2.0 + 12.0)).abs() < 1e-9,
            "{}",
            seen[0].busy_seconds
        );
        assert_eq!(seen[0].first_seen, at(100.0));
        // A new process (processed went down) starts over.
        beat_at(1, 0, 134.0, &mut table);
        assert_eq!(table.seen(at(134.0))[0].busy_seconds, 0.0);
    }
}
