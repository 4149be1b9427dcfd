//! What one queue's poller remembers between polls and how it turns the processes' answers
//! into per-worker reports. No I/O: the poller in `mod.rs` asks Redis what [`Processes::plan`]
//! says and hands the answers to [`Processes::tally`].

use std::collections::{HashMap, HashSet};

use super::process::{PROCESS_TTL_SECONDS, Tracked, parse_beat, parse_info, work_queue};
use crate::queue::ConsumerReport;

/// What is asked of one process in the second round trip.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ask {
    pub identity: String,
    /// Its `info` is not known yet.
    pub info: bool,
    /// Its work hashes are needed (it serves other queues too, or is new).
    pub work: bool,
}

/// One process's answer to its [`Ask`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Answer {
    pub identity: String,
    /// `Some` when `info` was asked: the field (`None` when the hash is gone).
    pub info: Option<Option<Vec<u8>>>,
    pub busy: Option<Vec<u8>>,
    pub beat: Option<Vec<u8>>,
    pub quiet: Option<Vec<u8>>,
    /// The values of its work hashes, when asked.
    pub work: Option<Vec<Vec<u8>>>,
}

/// What the processes of one poll add up to.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Tally {
    /// Jobs of this queue running, as of each process's last beat.
    pub in_flight: u64,
    /// Live processes serving this queue that are not quiet.
    pub consumers: u64,
    pub workers: Vec<ConsumerReport>,
    /// Why processes were left out (for `partial`).
    pub unreadable: Vec<String>,
}

/// One queue's memory of the Sidekiq processes.
#[derive(Debug)]
pub(crate) struct Processes {
    queue: String,
    label: String,
    /// Identity -> what its `info` and last beats said.
    tracked: HashMap<String, Tracked>,
    /// Identities whose unreadable record was already logged.
    warned: HashSet<String>,
    /// `visible` at the last poll.
    last_visible: Option<u64>,
    /// When (the controller's epoch seconds) a poll last saw the queue shrink.
    taken_at: Option<f64>,
}

/// Whether a process with these queues serves `queue`.
fn serves(queues: &[String], queue: &str) -> bool {
    queues.iter().any(|q| q == queue)
}

/// Whether it serves `queue` and nothing else (its `busy` is then this queue's).
fn only(queues: &[String], queue: &str) -> bool {
    !queues.is_empty() && queues.iter().all(|q| q == queue)
}

impl Processes {
    /// `label` names the queue in logs (redacted).
    pub fn new(queue: &str, label: &str) -> Self {
        Processes {
            queue: queue.to_string(),
            label: label.to_string(),
            tracked: HashMap::new(),
            warned: HashSet::new(),
            last_visible: None,
            taken_at: None,
        }
    }

    /// Records the queue length and the members of `processes` seen at `now` (epoch
    /// seconds), forgets identities no longer listed, and says what to ask of the rest:
    /// nothing of processes known to serve other queues only (or known unreadable).
    pub fn plan(&mut self, visible: u64, identities: &[String], now: f64) -> Vec<Ask> {
        // Jobs left the queue since the last poll: some process took them, and its last
        // beat may predate that.
        if self.last_visible.is_some_and(|last| visible < last) {
            self.taken_at = Some(now);
        }
        self.last_visible = Some(visible);
        let listed: HashSet<&String> = identities.iter().collect();
        self.tracked.retain(|identity, _| listed.contains(identity));
        self.warned.retain(|identity| listed.contains(identity));
        identities
            .iter()
            .filter_map(|identity| match self.tracked.get(identity) {
                None => Some(Ask {
                    identity: identity.clone(),
                    info: true,
                    work: true,
                }),
                Some(Tracked {
                    info: Some(info), ..
                }) if serves(&info.queues, &self.queue) => Some(Ask {
                    identity: identity.clone(),
                    info: false,
                    work: !only(&info.queues, &self.queue),
                }),
                Some(_) => None,
            })
            .collect()
    }

    /// Folds the answers into the tally, remembering each process's info and beats. `now`
    /// is the controller's epoch seconds.
    pub fn tally(&mut self, answers: Vec<Answer>, now: f64) -> Tally {
        let mut tally = Tally::default();
        for answer in answers {
            let identity = answer.identity;
            if let Some(info) = answer.info {
                // The hash is gone (expired, or removed by a stopping process).
                let Some(info) = info else { continue };
                let parsed = match parse_info(&info) {
                    Ok(parsed) => Some(parsed),
                    Err(why) => {
                        tally.unreadable.push(self.unreadable(&identity, &why));
                        None
                    }
                };
                self.tracked.insert(identity.clone(), Tracked::new(parsed));
            }
            let (Some(busy), Some(beat)) = (answer.busy, answer.beat) else {
                continue;
            };
            // Only processes that serve this queue matter: an unreadable beat of another
            // queue's process is that queue's business.
            let serving = self
                .tracked
                .get(&identity)
                .and_then(|t| t.info.as_ref())
                .is_some_and(|info| serves(&info.queues, &self.queue));
            if !serving {
                continue;
            }
            let beat = match parse_beat(&busy, &beat, answer.quiet.as_deref()) {
                Ok(beat) => beat,
                Err(why) => {
                    tally.unreadable.push(self.unreadable(&identity, &why));
                    continue;
                }
            };
            if now - beat.at > PROCESS_TTL_SECONDS {
                continue;
            }
            let (queue, taken_at) = (&self.queue, self.taken_at);
            let Some(tracked) = self.tracked.get_mut(&identity) else {
                continue;
            };
            let Some(info) = tracked.info.as_ref() else {
                continue;
            };
            let running_here = if only(&info.queues, queue) {
                beat.busy
            } else {
                let ours = |w: &&Vec<u8>| work_queue(w).as_deref() == Some(queue.as_str());
                answer.work.unwrap_or_default().iter().filter(ours).count() as u64
            };
            let pod = Some(info.hostname.clone()).filter(|h| !h.is_empty());
            tracked.observe(beat);
            tally.in_flight = tally.in_flight.saturating_add(running_here);
            tally.consumers += u64::from(!beat.quiet);
            tally.workers.push(ConsumerReport {
                pod,
                ip: None,
                busy: tracked.busy(taken_at),
                channel: None,
            });
        }
        tally
    }

    /// Logs a process's unreadable record once, and returns the note for `partial`.
    fn unreadable(&mut self, identity: &str, why: &str) -> String {
        if self.warned.insert(identity.to_string()) {
            tracing::warn!(
                queue = %self.label,
                process = identity,
                "a Sidekiq process record is unreadable ({why}); the process is left out"
            );
        }
        format!("Sidekiq process {identity:?} left out: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_000_000.0;

    fn info(host: &str, queues: &[&str]) -> Vec<u8> {
        serde_json::json!({"hostname": host, "pid": 1, "queues": queues, "concurrency": 5})
            .to_string()
            .into_bytes()
    }

    /// A first answer (info asked) with these heartbeat fields.
    fn first(identity: &str, info: Vec<u8>, busy: u64, at: f64) -> Answer {
        Answer {
            identity: identity.into(),
            info: Some(Some(info)),
            busy: Some(busy.to_string().into_bytes()),
            beat: Some(at.to_string().into_bytes()),
            quiet: Some(b"false".to_vec()),
            work: Some(Vec::new()),
        }
    }

    fn again(identity: &str, busy: u64, at: f64) -> Answer {
        Answer {
            info: None,
            work: None,
            ..first(identity, Vec::new(), busy, at)
        }
    }

    fn report(pod: &str, busy: bool) -> ConsumerReport {
        ConsumerReport {
            pod: Some(pod.into()),
            ip: None,
            busy,
            channel: None,
        }
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn processes_of_this_queue_are_reported_by_hostname() {
        let mut p = Processes::new("q", "label");
        let asks = p.plan(3, &ids(&["a:1:x", "b:2:y", "c:3:z"]), NOW);
        assert!(asks.iter().all(|a| a.info && a.work), "all new: {asks:?}");
        let tally = p.tally(
            vec![
                first("a:1:x", info("pod-a", &["q"]), 1, NOW - 1.0),
                first("b:2:y", info("pod-b", &["q"]), 0, NOW - 2.0),
                first("c:3:z", info("pod-c", &["other"]), 4, NOW - 1.0),
            ],
            NOW,
        );
        assert_eq!(tally.in_flight, 1);
        assert_eq!(tally.consumers, 2);
        assert_eq!(tally.workers, vec![report("pod-a", true), report("pod-b", false)]);
        assert!(tally.unreadable.is_empty());
        // Next poll: the other queue's process costs nothing, ours need no info and, since
        // they serve this queue only, no work hash.
        let asks = p.plan(3, &ids(&["a:1:x", "b:2:y", "c:3:z"]), NOW + 1.0);
        assert_eq!(
            asks,
            vec![
                Ask { identity: "a:1:x".into(), info: false, work: false },
                Ask { identity: "b:2:y".into(), info: false, work: false },
            ]
        );
    }

    #[test]
    fn a_process_of_several_queues_counts_only_this_queues_jobs() {
        let mut p = Processes::new("q", "label");
        p.plan(0, &ids(&["m:1:x"]), NOW);
        let mut answer = first("m:1:x", info("pod-m", &["q", "mail"]), 3, NOW - 1.0);
        answer.work = Some(vec![
            br#"{"queue":"q","payload":"{}","run_at":1}"#.to_vec(),
            br#"{"queue":"mail","payload":"{}","run_at":1}"#.to_vec(),
            br#"{"queue":"mail","payload":"{}","run_at":1}"#.to_vec(),
            b"unreadable".to_vec(),
        ]);
        let tally = p.tally(vec![answer], NOW);
        assert_eq!(tally.in_flight, 1);
        // Busy with other queues' jobs is busy all the same: removing it would cut them.
        assert_eq!(tally.workers, vec![report("pod-m", true)]);
        let asks = p.plan(0, &ids(&["m:1:x"]), NOW + 1.0);
        assert!(asks[0].work && !asks[0].info);
    }

    #[test]
    fn stale_gone_and_quiet_processes() {
        let mut p = Processes::new("q", "label");
        p.plan(0, &ids(&["old:1:x", "gone:2:y", "quiet:3:z"]), NOW);
        let mut quiet = first("quiet:3:z", info("pod-q", &["q"]), 1, NOW - 1.0);
        quiet.quiet = Some(b"true".to_vec());
        let gone = Answer {
            identity: "gone:2:y".into(),
            info: Some(None),
            ..Answer::default()
        };
        let tally = p.tally(
            vec![
                first("old:1:x", info("pod-old", &["q"]), 1, NOW - 61.0),
                gone,
                quiet,
            ],
            NOW,
        );
        // The quiet process still runs its job: reported busy, not a consumer.
        assert_eq!(tally.workers, vec![report("pod-q", true)]);
        assert_eq!((tally.in_flight, tally.consumers), (1, 0));
        // An identity no longer listed is forgotten.
        p.plan(0, &ids(&["quiet:3:z"]), NOW + 1.0);
        assert_eq!(p.tracked.len(), 1);
    }

    #[test]
    fn an_unreadable_process_is_left_out_and_named_once_in_the_logs() {
        let mut p = Processes::new("q", "label");
        p.plan(0, &ids(&["bad:1:x", "ok:2:y"]), NOW);
        let tally = p.tally(
            vec![
                first("bad:1:x", b"{not json".to_vec(), 1, NOW),
                first("ok:2:y", info("pod-ok", &["q"]), 0, NOW),
            ],
            NOW,
        );
        assert_eq!(tally.workers, vec![report("pod-ok", false)]);
        assert_eq!(tally.unreadable.len(), 1);
        assert!(tally.unreadable[0].contains("bad:1:x"), "{:?}", tally.unreadable);
        // Known unreadable: not asked again while it is listed.
        let asks = p.plan(0, &ids(&["bad:1:x", "ok:2:y"]), NOW + 1.0);
        assert_eq!(asks.len(), 1);
        assert!(p.warned.contains("bad:1:x"));

        // A heartbeat that is not numbers leaves that process out of this poll.
        let tally = p.tally(
            vec![Answer {
                busy: Some(b"many".to_vec()),
                ..again("ok:2:y", 0, NOW + 1.0)
            }],
            NOW + 1.0,
        );
        assert!(tally.workers.is_empty());
        assert!(tally.unreadable[0].contains("`busy`"), "{:?}", tally.unreadable);
    }

    #[test]
    fn a_shrinking_queue_holds_processes_busy_until_their_next_beat() {
        let mut p = Processes::new("q", "label");
        p.plan(2, &ids(&["a:1:x"]), NOW);
        let tally = p.tally(vec![first("a:1:x", info("pod-a", &["q"]), 0, NOW - 3.0)], NOW);
        assert_eq!(tally.workers, vec![report("pod-a", false)]);
        // A job left the queue; the last beat (3 s before the poll that saw it) cannot say
        // who took it.
        p.plan(1, &ids(&["a:1:x"]), NOW + 1.0);
        let tally = p.tally(vec![again("a:1:x", 0, NOW - 3.0)], NOW + 1.0);
        assert_eq!(tally.workers, vec![report("pod-a", true)]);
        // Its next beat, after that poll, says idle: idle it is.
        p.plan(1, &ids(&["a:1:x"]), NOW + 3.0);
        let tally = p.tally(vec![again("a:1:x", 0, NOW + 2.5)], NOW + 3.0);
        assert_eq!(tally.workers, vec![report("pod-a", false)]);
    }
}
