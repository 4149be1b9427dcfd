//! The tasks a closed-loop run sends: a seeded burst of `wpa.test.sleep` tasks of random
//! lengths in two waves, one long task alone, or a few long tasks among many short ones.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Tasks sent together, `at` after the first wave.
#[derive(Debug, Clone, PartialEq)]
pub struct Wave {
    pub at: Duration,
    /// Seconds each task sleeps, in sending order.
    pub seconds: Vec<f64>,
    /// When each task is sent, in seconds after the wave's start (empty: all at once).
    pub offsets: Vec<f64>,
}

/// What a run sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub waves: Vec<Wave>,
    /// For the report, e.g. "80 tasks of 3-12 s".
    pub label: String,
}

impl Load {
    /// `tasks` tasks of `shortest..=longest` seconds (to 0.1 s) drawn from `seed`: five
    /// eighths at once, the rest `gap` later, so the second wave lands while the first is
    /// still running and the replica count has to follow two steps.
    pub fn seeded_burst(
        seed: u64,
        tasks: usize,
        shortest: f64,
        longest: f64,
        gap: Duration,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seconds: Vec<f64> = (0..tasks)
            .map(|_| (rng.random_range(shortest..=longest) * 10.0).round() / 10.0)
            .collect();
        let second = seconds.split_off(tasks * 5 / 8);
        let mut waves = vec![Wave {
            at: Duration::ZERO,
            seconds,
            offsets: Vec::new(),
        }];
        if !second.is_empty() {
            waves.push(Wave {
                at: gap,
                seconds: second,
                offsets: Vec::new(),
            });
        }
        Load {
            waves,
            label: format!("{tasks} tasks of {shortest:.0}-{longest:.0} s"),
        }
    }

    /// One task of `seconds`, nothing else queued.
    pub fn one_long_task(seconds: f64) -> Self {
        Load {
            waves: vec![Wave {
                at: Duration::ZERO,
                seconds: vec![seconds],
                offsets: Vec::new(),
            }],
            label: format!("one {seconds:.0} s task"),
        }
    }

    /// `long` tasks of `long_seconds` spread evenly among `short` tasks of `short_seconds`,
    /// all sent at once: a few long tasks keep some workers busy after the rest is done.
    pub fn mixed(long: usize, long_seconds: f64, short: usize, short_seconds: f64) -> Self {
        let total = long + short;
        let mut seconds = vec![short_seconds; total];
        for i in 0..long {
            seconds[i * total / long] = long_seconds;
        }
        Load {
            waves: vec![Wave {
                at: Duration::ZERO,
                seconds,
                offsets: Vec::new(),
            }],
            label: format!("{long} x {long_seconds:.0} s among {short} x {short_seconds:.0} s"),
        }
    }

    /// Every task's length, in sending order.
    pub fn seconds(&self) -> impl Iterator<Item = f64> + '_ {
        self.waves.iter().flat_map(|w| w.seconds.iter().copied())
    }

    /// A Poisson stream in phases of `(tasks per second, seconds)`, each task running
    /// `shortest..=longest` seconds (to 0.1 s), drawn from `seed`.
    pub fn poisson(seed: u64, phases: &[(f64, f64)], shortest: f64, longest: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut offsets = Vec::new();
        let mut phase_start = 0.0;
        for &(rate, length) in phases {
            let mut t = phase_start;
            if rate > 0.0 {
                loop {
                    // Exponential gaps: -ln(U) / rate, U in (0, 1].
                    let u: f64 = 1.0 - rng.random_range(0.0..1.0);
                    t += -u.ln() / rate;
                    if t >= phase_start + length {
                        break;
                    }
                    offsets.push((t * 1000.0).round() / 1000.0);
                }
            }
            phase_start += length;
        }
        let seconds = offsets
            .iter()
            .map(|_| (rng.random_range(shortest..=longest) * 10.0).round() / 10.0)
            .collect();
        let label = phases
            .iter()
            .map(|(rate, length)| format!("{rate}/s {length:.0} s"))
            .collect::<Vec<_>>()
            .join(", ");
        Load {
            waves: vec![Wave {
                at: Duration::ZERO,
                seconds,
                offsets,
            }],
            label: format!("Poisson {label}; tasks {shortest:.0}-{longest:.0} s"),
        }
    }

    pub fn tasks(&self) -> usize {
        self.waves.iter().map(|w| w.seconds.len()).sum()
    }

    /// Task-seconds of work in the load.
    pub fn work(&self) -> f64 {
        self.seconds().sum()
    }
}
