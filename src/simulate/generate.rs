//! Seeded arrival traces: Poisson phases (constant or linearly ramped rates), uniform task
//! durations and bursts, for `workerpodautoscaler simulate generate`.
//!
//! The same seed gives the same trace on every machine: the generator is a SplitMix64 stream
//! written here (the `rand` crate is a dev-dependency only, and a trace's exact bytes must
//! not depend on a crate's version), and every value is rounded to milliseconds so that a
//! written trace reads back exactly.

use super::arrivals::Task;

/// One phase: arrivals at a rate that goes linearly from `start_rate` to `end_rate` (tasks
/// per second) over `seconds`. A constant phase has both rates equal; rate 0 is a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub start_rate: f64,
    pub end_rate: f64,
    pub seconds: f64,
}

/// `count` tasks queued at once at `at` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    pub at: f64,
    pub count: u32,
}

/// Everything a generated trace depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateSpec {
    pub phases: Vec<Phase>,
    /// Task durations, uniform in `[min, max]` seconds.
    pub durations: (f64, f64),
    pub bursts: Vec<Burst>,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GenerateError {
    #[error(
        "--phases: `{item}`: {problem} (expected RATE:SECONDS or FROM..TO:SECONDS, e.g. 0.2:60,1..3:120)"
    )]
    Phase { item: String, problem: String },
    #[error("--phases: no phase given")]
    NoPhase,
    #[error(
        "--durations: `{value}`: {problem} (expected MIN..MAX seconds, e.g. 2..8, or one number)"
    )]
    Durations { value: String, problem: String },
    #[error("--bursts: `{item}`: {problem} (expected AT:COUNT, e.g. 150:60)")]
    Burst { item: String, problem: String },
    #[error("the trace would hold no task: every phase is quiet and no burst is given")]
    NoTask,
}

/// A small, fast, well-mixed 64-bit generator (Steele, Lea and Flood's SplitMix64): enough
/// for arrival times, and exactly reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits, so every value is an exact f64.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given rate (> 0): the gap between Poisson arrivals.
    fn exponential(&mut self, rate: f64) -> f64 {
        // 1 - u lies in (0, 1]: the logarithm is finite.
        -(1.0 - self.next_f64()).ln() / rate
    }
}

fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Generates the trace: arrivals of every phase in turn, then the bursts, sorted by arrival
/// (a burst's tasks come after the phase arrivals of the same millisecond).
pub fn generate(spec: &GenerateSpec) -> Result<Vec<Task>, GenerateError> {
    let mut rng = SplitMix64::new(spec.seed);
    let (low, high) = spec.durations;
    let duration = |rng: &mut SplitMix64| millis(low + (high - low) * rng.next_f64()).max(0.001);
    let mut tasks = Vec::new();
    let mut phase_start = 0.0;
    for phase in &spec.phases {
        let peak = phase.start_rate.max(phase.end_rate);
        if peak > 0.0 {
            // Thinning (Lewis and Shedler): candidates at the peak rate, each kept with
            // probability rate(t) / peak, give a Poisson stream of rate(t).
            let mut t = 0.0;
            loop {
                t += rng.exponential(peak);
                if t >= phase.seconds {
                    break;
                }
                let rate =
                    phase.start_rate + (phase.end_rate - phase.start_rate) * t / phase.seconds;
                let keep = rng.next_f64() * peak < rate;
                if keep {
                    let arrival = millis(phase_start + t);
                    tasks.push(Task {
                        arrival,
                        duration: duration(&mut rng),
                    });
                }
            }
        }
        phase_start += phase.seconds;
    }
    for burst in &spec.bursts {
        for _ in 0..burst.count {
            tasks.push(Task {
                arrival: millis(burst.at),
                duration: duration(&mut rng),
            });
        }
    }
    if tasks.is_empty() {
        return Err(GenerateError::NoTask);
    }
    // Stable: tasks of one millisecond keep their generation order.
    tasks.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    Ok(tasks)
}

fn number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// `0.2:60,1:90,1..3:120`: a rate (or FROM..TO, a linear ramp) and a length in seconds each.
pub fn parse_phases(text: &str) -> Result<Vec<Phase>, GenerateError> {
    let mut phases = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |problem: &str| GenerateError::Phase {
            item: item.to_string(),
            problem: problem.to_string(),
        };
        let (rate, seconds) = item.split_once(':').ok_or_else(|| bad("no `:`"))?;
        let (start_rate, end_rate) = match rate.split_once("..") {
            Some((from, to)) => (number(from), number(to)),
            None => (number(rate), number(rate)),
        };
        let (Some(start_rate), Some(end_rate)) = (start_rate, end_rate) else {
            return Err(bad("a rate must be a number >= 0 (tasks per second)"));
        };
        let seconds = number(seconds)
            .filter(|s| *s > 0.0)
            .ok_or_else(|| bad("the length must be a number of seconds > 0"))?;
        phases.push(Phase {
            start_rate,
            end_rate,
            seconds,
        });
    }
    if phases.is_empty() {
        return Err(GenerateError::NoPhase);
    }
    Ok(phases)
}

/// `2..8` (uniform between) or `5` (always 5 s).
pub fn parse_durations(text: &str) -> Result<(f64, f64), GenerateError> {
    let bad = |problem: &str| GenerateError::Durations {
        value: text.to_string(),
        problem: problem.to_string(),
    };
    let (low, high) = match text.split_once("..") {
        Some((low, high)) => (number(low), number(high)),
        None => (number(text), number(text)),
    };
    let (Some(low), Some(high)) = (low, high) else {
        return Err(bad("durations must be numbers of seconds"));
    };
    if low <= 0.0 {
        return Err(bad("durations must be > 0"));
    }
    if high < low {
        return Err(bad("MAX is below MIN"));
    }
    Ok((low, high))
}

/// `150:60,450:60`: bursts of COUNT tasks at AT seconds; empty: none.
pub fn parse_bursts(text: &str) -> Result<Vec<Burst>, GenerateError> {
    let mut bursts = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |problem: &str| GenerateError::Burst {
            item: item.to_string(),
            problem: problem.to_string(),
        };
        let (at, count) = item.split_once(':').ok_or_else(|| bad("no `:`"))?;
        let at = number(at).ok_or_else(|| bad("AT must be seconds >= 0"))?;
        let count = count
            .trim()
            .parse::<u32>()
            .map_err(|_| bad("COUNT must be a whole number"))?;
        bursts.push(Burst { at, count });
    }
    Ok(bursts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(phases: &str, seed: u64) -> GenerateSpec {
        GenerateSpec {
            phases: parse_phases(phases).expect("phases"),
            durations: (2.0, 8.0),
            bursts: Vec::new(),
            seed,
        }
    }

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // First outputs of SplitMix64 seeded with 0, as published with the algorithm.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let a = generate(&spec("1:120", 7)).expect("tasks");
        assert_eq!(a, generate(&spec("1:120", 7)).expect("tasks"));
        assert_ne!(a, generate(&spec("1:120", 8)).expect("tasks"));
    }

    #[test]
    fn phases_keep_their_rates_and_places() {
        // 0.5/s for 2000 s, quiet 1000 s, 2/s for 1000 s: about 1000, 0 and 2000 tasks.
        let tasks = generate(&spec("0.5:2000,0:1000,2:1000", 3)).expect("tasks");
        let count = |from: f64, to: f64| {
            tasks
                .iter()
                .filter(|t| t.arrival >= from && t.arrival < to)
                .count()
        };
        let (first, quiet, last) = (
            count(0.0, 2000.0),
            count(2000.0, 3000.0),
            count(3000.0, 4000.0),
        );
        // Poisson counts: standard deviation sqrt(n), so 5 deviations is a safe band.
        assert!(
            (first as f64 - 1000.0).abs() < 5.0 * 1000f64.sqrt(),
            "{first}"
        );
        assert_eq!(quiet, 0);
        assert!(
            (last as f64 - 2000.0).abs() < 5.0 * 2000f64.sqrt(),
            "{last}"
        );
        assert!(tasks.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        assert!(tasks.iter().all(|t| (2.0..=8.0).contains(&t.duration)));
    }

    #[test]
    fn a_ramp_puts_more_arrivals_at_its_high_end() {
        let tasks = generate(&spec("0..2:2000", 11)).expect("tasks");
        let early = tasks.iter().filter(|t| t.arrival < 1000.0).count() as f64;
        let late = tasks.len() as f64 - early;
        // Expected 500 and 1500.
        assert!((early - 500.0).abs() < 5.0 * 500f64.sqrt(), "{early}");
        assert!((late - 1500.0).abs() < 5.0 * 1500f64.sqrt(), "{late}");
    }

    #[test]
    fn bursts_land_at_their_time() {
        let mut s = spec("0:100", 1);
        s.bursts = parse_bursts("10:5, 50:3").expect("bursts");
        let tasks = generate(&s).expect("tasks");
        let at: Vec<f64> = tasks.iter().map(|t| t.arrival).collect();
        assert_eq!(at, vec![10.0, 10.0, 10.0, 10.0, 10.0, 50.0, 50.0, 50.0]);
    }

    #[test]
    fn bad_specs_say_what_is_expected() {
        assert!(
            parse_phases("1:60,x:5")
                .expect_err("rate")
                .to_string()
                .contains("`x:5`")
        );
        assert!(
            parse_phases("1")
                .expect_err("colon")
                .to_string()
                .contains("no `:`")
        );
        assert!(parse_phases("1:0").is_err());
        assert!(parse_phases("-1:10").is_err());
        assert_eq!(parse_phases(" "), Err(GenerateError::NoPhase));
        assert_eq!(parse_durations("2..8"), Ok((2.0, 8.0)));
        assert_eq!(parse_durations("5"), Ok((5.0, 5.0)));
        assert!(
            parse_durations("8..2")
                .expect_err("order")
                .to_string()
                .contains("MAX is below MIN")
        );
        assert!(parse_durations("0..2").is_err());
        assert!(parse_bursts("10:x").is_err());
        assert_eq!(parse_bursts(""), Ok(vec![]));
        assert_eq!(generate(&spec("0:10", 1)), Err(GenerateError::NoTask));
    }
}
