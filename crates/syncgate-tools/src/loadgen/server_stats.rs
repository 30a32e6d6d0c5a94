//! What the server process used during a run, read from `/proc/<pid>`
//! (Linux): CPU time (user + system) and resident memory.

use std::fmt;

/// `/proc` reports CPU time in `USER_HZ` ticks, which Linux fixes at 100 per second.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the server process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// CPU seconds used so far (user + system).
    pub cpu_secs: f64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
}

impl Sample {
    /// Reads process `pid`; `None` if it cannot be read (not Linux, gone).
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
        let after = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
        Some(Self { cpu_secs: ticks / TICKS_PER_SECOND, rss_kib })
    }
}

/// The server's use between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU seconds used.
    pub cpu_secs: f64,
    /// Wall-clock seconds between the samples.
    pub wall_secs: f64,
    /// Resident memory at the end, KiB.
    pub rss_kib: u64,
    /// Change in resident memory, KiB (may be negative).
    pub rss_delta_kib: i64,
}

impl Usage {
    /// From `before` to `after`, `wall_secs` apart.
    pub fn between(before: Sample, after: Sample, wall_secs: f64) -> Self {
        Self {
            cpu_secs: after.cpu_secs - before.cpu_secs,
            wall_secs,
            rss_kib: after.rss_kib,
            rss_delta_kib: after.rss_kib as i64 - before.rss_kib as i64,
        }
    }

    /// Server CPU per unit of work (for example per delivery), in microseconds.
    pub fn micros_per(&self, units: u64) -> f64 {
        self.cpu_secs * 1e6 / units.max(1) as f64
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server CPU {:.2} s ({:.2} cores) · RSS {} KiB ({:+} KiB)",
            self.cpu_secs,
            self.cpu_secs / self.wall_secs.max(f64::EPSILON),
            self.rss_kib,
            self.rss_delta_kib
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let sample = Sample::read(std::process::id()).expect("/proc is readable on Linux");
        assert!(sample.rss_kib > 0);
        assert!(sample.cpu_secs >= 0.0);
    }
}
