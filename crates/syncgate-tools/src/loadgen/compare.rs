//! `--reference` of `bench handshake`, `fanout` and `ops`: the reference
//! server ([`super::reference`]) started as a child process of the load
//! generator, and syncgate's figures printed beside its figures.
//!
//! On two shared cores a p99 alone says little (it moves with whatever else
//! runs); the same load against the bare transport, in the same invocation,
//! gives the ratio that does.

use std::fmt;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use super::reference::Workload;

/// The reference server, running until this is dropped.
pub struct ReferenceChild {
    child: Child,
    url: String,
}

impl ReferenceChild {
    /// Starts `syncgate bench reference --workload W` (this same binary);
    /// with `verify_secret` it checks every token as HS256 with it.
    pub fn start(workload: Workload, verify_secret: Option<&str>) -> Result<Self, String> {
        let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        command.args(["bench", "reference", "--workload", workload.flag()]).stdout(Stdio::piped());
        // The secret goes through the environment, never the command line (visible in `ps`).
        command.env_remove("SYNCGATE_REFERENCE_SECRET");
        if let Some(secret) = verify_secret {
            command.env("SYNCGATE_REFERENCE_SECRET", secret);
        }
        let mut child = command.spawn().map_err(|e| format!("cannot start the reference server: {e}"))?;
        let mut line = String::new();
        let read = match child.stdout.take() {
            Some(stdout) => std::io::BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string()),
            None => Err("the reference server has no stdout".into()),
        };
        let reference = Self { child, url: format!("ws://{}/ws", line.trim()) };
        read?;
        Ok(reference)
    }

    /// Its WebSocket URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its process id (for `--server-pid`-style readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ReferenceChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The figures one run is compared by.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Units per second (deliveries, ops).
    pub rate: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// syncgate's figures beside the reference's, with the ratios.
pub struct SideBySide {
    /// What the rate counts (`deliveries/s`).
    pub unit: &'static str,
    /// What the latency measures (`publish → receive`).
    pub latency: &'static str,
    /// syncgate's run.
    pub syncgate: Figures,
    /// The reference's run, same load.
    pub reference: Figures,
}

impl fmt::Display for SideBySide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, r) = (self.syncgate, self.reference);
        let ratio = |a: f64, b: f64| a / b.max(f64::EPSILON);
        writeln!(
            f,
            "{:<28} {:>12} {:>12} {:>22}",
            "same load, one invocation", "syncgate", "reference", "syncgate / reference"
        )?;
        write!(f, "{:<28} {:>12.0} {:>12.0} {:>22.2}", self.unit, s.rate, r.rate, ratio(s.rate, r.rate))?;
        for (name, ours, theirs) in [("p50", s.p50_ms, r.p50_ms), ("p99", s.p99_ms, r.p99_ms)] {
            let row = format!("{} {name} ms", self.latency);
            write!(f, "\n{row:<28} {ours:>12.2} {theirs:>12.2} {:>22.2}", ratio(ours, theirs))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_syncgate_over_reference() {
        let table = SideBySide {
            unit: "ops/s",
            latency: "batch",
            syncgate: Figures { rate: 100.0, p50_ms: 2.0, p99_ms: 9.0 },
            reference: Figures { rate: 200.0, p50_ms: 1.0, p99_ms: 3.0 },
        }
        .to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("ops/s") && lines[1].ends_with("0.50"), "{table}");
        assert!(lines[2].ends_with("2.00"), "{table}");
        assert!(lines[3].starts_with("batch p99 ms") && lines[3].ends_with("3.00"), "{table}");
    }
}
