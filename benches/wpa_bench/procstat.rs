//! CPU time and memory of a process, from /proc (Linux only).

use std::time::Duration;

use anyhow::{Context, Result, anyhow};

/// User plus system CPU time consumed so far by `pid` (all its threads).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; the fields after its closing
    // parenthesis are space-separated, starting with field 3 (state).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat: {stat}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime is field 14 and stime field 15 (1-based), i.e. indexes 11 and 12 here.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("/proc/{pid}/stat has no field {}", i + 3))?
            .parse::<u64>()
            .with_context(|| format!("/proc/{pid}/stat field {}", i + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(
        total as f64 / clock_ticks_per_second(),
    ))
}

#[allow(unsafe_code)]
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// A `Vm*` line of /proc/<pid>/status in bytes (e.g. `VmHWM`, the peak resident set).
pub fn vm_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .ok_or_else(|| anyhow!("/proc/{pid}/status has no {field}"))?;
    let kib: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parsing {line:?}"))?;
    Ok(kib * 1024)
}

/// Threads of `pid`.
pub fn threads(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .ok_or_else(|| anyhow!("/proc/{pid}/status has no Threads"))?
        .trim()
        .parse()
        .context("parsing Threads")
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
