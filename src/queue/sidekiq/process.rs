//! What a Sidekiq process writes about itself on every heartbeat, read and remembered.
//!
//! Checked against Sidekiq 6.4.1's `launcher.rb` (`❤`, `to_data`) and `api.rb`
//! (`ProcessSet`, `WorkSet`), and Sidekiq 7/8's `launcher.rb`:
//!
//! - the set `processes` names the live processes by identity
//!   (`<hostname>:<pid>:<nonce>`; `hostname` is `$DYNO` or `Socket.gethostname`, which in a
//!   Pod is the Pod's name);
//! - the hash `<identity>` holds `info` (JSON written once per process: `hostname`, `pid`,
//!   `queues`, `concurrency`, ...), `busy` (jobs running at the beat), `beat` (epoch
//!   seconds, a float), `quiet` (`"true"` once quieted); it expires 60 s after the last beat;
//! - `<identity>:workers` (6.x) or `<identity>:work` (7+) maps each busy thread to JSON
//!   `{"queue": .., "payload": .., "run_at": ..}`, rewritten on every beat.
//!
//! Sidekiq 6.x beats every 5 s (`BEAT_PAUSE = 5`), 7+ every 10 s. Everything here is as old
//! as the last beat; [`Tracked`] keeps what the last few beats said, so that a job started
//! or finished between two beats does not make a busy process look idle.

use std::collections::VecDeque;

use serde::Deserialize;

/// A process whose last beat is older than this is gone: Sidekiq expires the process hash
/// 60 s after each beat, so only a clock far off (or a key whose expiry was removed) leaves
/// one behind.
pub(crate) const PROCESS_TTL_SECONDS: f64 = 60.0;
/// A process that reported a running job on one of its last this-many beats counts as
/// busy: between two beats a worker that just finished takes the next job at once.
pub(crate) const BUSY_BEATS: usize = 3;
/// How far a process's clock may run ahead of the controller's for [`Tracked::busy`] to
/// still hold it busy after a job left the queue (the beat time is the process's clock).
pub(crate) const CLOCK_MARGIN_SECONDS: f64 = 1.0;

/// What `info` says that matters here. Sidekiq writes it once per process (`@json ||=`),
/// so it is read once per identity.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProcessInfo {
    pub hostname: String,
    pub queues: Vec<String>,
}

#[derive(Deserialize)]
struct RawInfo {
    hostname: String,
    queues: Vec<String>,
}

/// Reads a process's `info` JSON.
pub(crate) fn parse_info(json: &[u8]) -> Result<ProcessInfo, String> {
    let raw: RawInfo = serde_json::from_slice(json)
        .map_err(|e| format!("`info` is not Sidekiq's process JSON ({e})"))?;
    Ok(ProcessInfo {
        hostname: raw.hostname,
        queues: raw.queues,
    })
}

/// One heartbeat: the `busy`, `beat` and `quiet` fields of the process hash.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Beat {
    /// Jobs the process ran at the beat, on all its queues.
    pub busy: u64,
    /// When, in the process's clock (epoch seconds).
    pub at: f64,
    /// Quieted (`TSTP`): it takes no new job and finishes what it runs.
    pub quiet: bool,
}

/// Reads the heartbeat fields (`busy`, `beat`, `quiet` as Redis returned them).
pub(crate) fn parse_beat(busy: &[u8], beat: &[u8], quiet: Option<&[u8]>) -> Result<Beat, String> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_string();
    let busy_text = text(busy);
    let busy = busy_text
        .parse::<u64>()
        .map_err(|_| format!("`busy` is `{}`, not a count", busy_text.escape_default()))?;
    let beat_text = text(beat);
    let at = beat_text
        .parse::<f64>()
        .ok()
        .filter(|at| at.is_finite())
        .ok_or_else(|| format!("`beat` is `{}`, not a time", beat_text.escape_default()))?;
    // Sidekiq writes `true` or `false`; absent (an older or foreign writer) is not quiet.
    let quiet = quiet.is_some_and(|q| text(q) == "true");
    Ok(Beat { busy, at, quiet })
}

#[derive(Deserialize)]
struct RawWork {
    queue: String,
}

/// The queue of one entry of a work hash, `None` when it is not Sidekiq's JSON.
pub(crate) fn work_queue(json: &[u8]) -> Option<String> {
    serde_json::from_slice::<RawWork>(json).ok().map(|w| w.queue)
}

/// What is known of one identity across polls.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    /// `None`: its `info` could not be read (warned once; the process is left out).
    pub info: Option<ProcessInfo>,
    /// Its last beats, newest last, at most [`BUSY_BEATS`], one per beat time.
    beats: VecDeque<Beat>,
}

impl Tracked {
    pub fn new(info: Option<ProcessInfo>) -> Self {
        Tracked {
            info,
            beats: VecDeque::with_capacity(BUSY_BEATS),
        }
    }

    /// Remembers a beat (a poll between two beats sees the same one again).
    pub fn observe(&mut self, beat: Beat) {
        if self.beats.back().is_some_and(|last| last.at == beat.at) {
            return;
        }
        if self.beats.len() == BUSY_BEATS {
            self.beats.pop_front();
        }
        self.beats.push_back(beat);
    }

    /// Whether the process may be running a job now: it reported one on one of its last
    /// [`BUSY_BEATS`] beats, or jobs left the queue (`taken_at`, the controller's time of
    /// the poll that saw the queue shrink) later than its last beat, which therefore cannot
    /// say whether this process took one. A quiet process takes no job.
    pub fn busy(&self, taken_at: Option<f64>) -> bool {
        let Some(last) = self.beats.back() else {
            return false;
        };
        let reported = self.beats.iter().any(|b| b.busy > 0);
        let unseen_fetch =
            !last.quiet && taken_at.is_some_and(|t| last.at <= t + CLOCK_MARGIN_SECONDS);
        reported || unseen_fetch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(at: f64, busy: u64) -> Beat {
        Beat {
            busy,
            at,
            quiet: false,
        }
    }

    #[test]
    fn sidekiq_6_info_is_read() {
        // As Sidekiq 6.4.1 wrote it in a test run (`-q tq -c 1`, DYNO=pod-a).
        let info = br#"{"hostname":"pod-a","started_at":1796663862.8054173,"pid":10390,"tag":"","concurrency":1,"queues":["tq"],"labels":[],"identity":"pod-a:10390:772c4b717b01"}"#;
        assert_eq!(
            parse_info(info),
            Ok(ProcessInfo {
                hostname: "pod-a".into(),
                queues: vec!["tq".into()],
            })
        );
    }

    #[test]
    fn unreadable_info_says_why() {
        for bad in [
            &b"not json"[..],
            br#"{"queues":["q"]}"#,
            br#"{"hostname":"h","queues":"q"}"#,
            br#"{"hostname":7,"queues":[]}"#,
            br#"[1,2]"#,
        ] {
            let error = parse_info(bad).expect_err("refused");
            assert!(error.contains("not Sidekiq's process JSON"), "{error}");
        }
    }

    #[test]
    fn heartbeat_fields_are_read() {
        assert_eq!(
            parse_beat(b"2", b"1796663862.806535", Some(b"false")),
            Ok(Beat {
                busy: 2,
                at: 1796663862.806535,
                quiet: false
            })
        );
        assert!(parse_beat(b"0", b"1.5", Some(b"true")).is_ok_and(|b| b.quiet));
        assert!(parse_beat(b"0", b"1.5", None).is_ok_and(|b| !b.quiet));
        assert!(parse_beat(b"-1", b"1.5", None).is_err_and(|e| e.contains("`busy`")));
        assert!(parse_beat(b"1", b"soon", None).is_err_and(|e| e.contains("`beat`")));
        assert!(parse_beat(b"1", b"NaN", None).is_err_and(|e| e.contains("`beat`")));
    }

    #[test]
    fn work_entries_name_their_queue() {
        let entry = br#"{"queue":"mail","payload":"{\"class\":\"X\"}","run_at":1796663862}"#;
        assert_eq!(work_queue(entry).as_deref(), Some("mail"));
        assert_eq!(work_queue(b"{}"), None);
        assert_eq!(work_queue(b"garbage"), None);
    }

    #[test]
    fn busy_is_remembered_for_a_few_beats() {
        let mut p = Tracked::new(None);
        assert!(!p.busy(None), "nothing heard: not busy");
        p.observe(beat(10.0, 0));
        assert!(!p.busy(None));
        p.observe(beat(15.0, 1));
        assert!(p.busy(None));
        // The job ended: two more idle beats still remember it, the third forgets.
        p.observe(beat(20.0, 0));
        assert!(p.busy(None));
        p.observe(beat(20.0, 0));
        p.observe(beat(25.0, 0));
        assert!(p.busy(None), "the same beat seen twice counts once");
        p.observe(beat(30.0, 0));
        assert!(!p.busy(None));
    }

    #[test]
    fn a_job_taken_after_the_last_beat_counts_as_busy_until_the_next_beat() {
        let mut p = Tracked::new(None);
        p.observe(beat(100.0, 0));
        // The queue shrank at a poll at 103: this process's beat at 100 cannot tell.
        assert!(p.busy(Some(103.0)));
        // Its next beat (at 105) tells, and says idle.
        p.observe(beat(105.0, 0));
        assert!(!p.busy(Some(103.0)));
        // A beat at most the clock margin after the shrink is not trusted to have seen it.
        assert!(p.busy(Some(104.5)));
        // A quiet process takes no job.
        let mut quiet = Tracked::new(None);
        quiet.observe(Beat {
            busy: 0,
            at: 100.0,
            quiet: true,
        });
        assert!(!quiet.busy(Some(103.0)));
    }
}
