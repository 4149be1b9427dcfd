//! The Erlang C model of a pool of identical slots fed by a Poisson stream (M/M/N): how
//! likely a new task is to wait longer than some time. Used to size a pool for a steady
//! stream, where a fluid "capacity >= arrivals" count would let waits grow without bound as
//! the pool fills up.

/// Largest slot count looked at: beyond it the answer is "at least this many".
pub const MAX_SLOTS: u64 = 100_000;

/// P(a new task waits longer than `wait` seconds) with `slots` slots, `offered` Erlangs
/// (arrivals per second x mean task seconds) and tasks of `task_seconds` on average.
/// 1 when the slots cannot keep up (`slots <= offered`).
pub fn wait_tail(slots: u64, offered: f64, task_seconds: f64, wait: f64) -> f64 {
    if !positive(offered) {
        return 0.0;
    }
    let n = slots as f64;
    if n <= offered || !positive(task_seconds) {
        return 1.0;
    }
    let c = erlang_c(slots, offered);
    (c * (-(n - offered) * wait.max(0.0) / task_seconds).exp()).clamp(0.0, 1.0)
}

/// `value > 0` (false for NaN).
fn positive(value: f64) -> bool {
    value > 0.0
}

/// The probability that a new task has to wait at all (Erlang C), with `slots > offered`.
pub fn erlang_c(slots: u64, offered: f64) -> f64 {
    let n = slots as f64;
    if n <= offered {
        return 1.0;
    }
    let b = erlang_b(slots, offered);
    let c = n * b / (n - offered * (1.0 - b));
    if c.is_finite() {
        c.clamp(0.0, 1.0)
    } else {
        1.0
    }
}

/// The Erlang B blocking probability, by the stable recursion B(k) = a B(k-1) / (k + a B(k-1)).
fn erlang_b(slots: u64, offered: f64) -> f64 {
    let mut b = 1.0;
    for k in 1..=slots.min(MAX_SLOTS) {
        b = offered * b / (k as f64 + offered * b);
    }
    b
}

/// The fewest pods (of `slots_per_pod` slots each) with which a Poisson stream of
/// `arrivals` tasks a second, `task_seconds` each on average, waits longer than `wait`
/// seconds with probability at most `tail`. 0 without arrivals.
pub fn pods_for_stream(
    arrivals: f64,
    task_seconds: f64,
    slots_per_pod: u32,
    wait: f64,
    tail: f64,
) -> u64 {
    if !positive(arrivals) || !positive(task_seconds) {
        return 0;
    }
    let per_pod = u64::from(slots_per_pod.max(1));
    let offered = arrivals * task_seconds;
    // The first pod count whose slots exceed the offered load, then upwards.
    let mut pods = ((offered / per_pod as f64).floor() as u64).saturating_add(1);
    loop {
        let slots = pods.saturating_mul(per_pod);
        if slots >= MAX_SLOTS || wait_tail(slots, offered, task_seconds, wait) <= tail {
            return pods;
        }
        pods += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // One slot (M/M/1): P(wait) = utilisation.
        assert!((erlang_c(1, 0.5) - 0.5).abs() < 1e-12);
        // A textbook case: 10 slots, 8 Erlangs -> about 0.409.
        assert!(
            (erlang_c(10, 8.0) - 0.409).abs() < 0.001,
            "{}",
            erlang_c(10, 8.0)
        );
        assert_eq!(erlang_c(3, 3.0), 1.0);
        assert_eq!(wait_tail(5, 0.0, 4.0, 0.0), 0.0);
        // The tail falls with the wait.
        assert!(wait_tail(10, 8.0, 5.0, 10.0) < wait_tail(10, 8.0, 5.0, 1.0));
    }

    #[test]
    fn pods_for_a_stream() {
        assert_eq!(pods_for_stream(0.0, 5.0, 1, 30.0, 0.05), 0);
        // 3 tasks/s of 5 s: 15 Erlangs; one slot per pod needs more than 15 pods.
        let pods = pods_for_stream(3.0, 5.0, 1, 30.0, 0.05);
        assert!((16..=18).contains(&pods), "{pods}");
        // Four slots per pod need about a quarter of the pods.
        let wide = pods_for_stream(3.0, 5.0, 4, 30.0, 0.05);
        assert!(wide <= pods.div_ceil(4) + 1, "{wide} vs {pods}");
        // A stricter tail or a shorter wait never needs fewer.
        assert!(pods_for_stream(3.0, 5.0, 1, 30.0, 0.01) >= pods);
        assert!(pods_for_stream(3.0, 5.0, 1, 5.0, 0.05) >= pods);
        // Nonsense never panics.
        assert_eq!(pods_for_stream(f64::NAN, 5.0, 1, 30.0, 0.05), 0);
        assert!(pods_for_stream(1e9, 5.0, 1, 30.0, 0.05) >= MAX_SLOTS);
    }
}
