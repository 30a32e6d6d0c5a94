//! The standard `process_*` series (CPU time, resident and virtual memory,
//! open and allowed file descriptors, start time), read from `/proc/self` by
//! the `procfs` crate at every scrape.
//!
//! They carry no `syncgate_` prefix: dashboards and alerts written for any
//! Prometheus client library (Centrifugo's included) query these exact
//! names. On systems without procfs the series are absent rather than zero,
//! so a dashboard never shows a made-up value.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Reads the process's own figures at each scrape; holds nothing.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One scrape's figures; `None` where `/proc` could not say.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessFigures {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<f64>,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: Option<f64>,
    /// Open file descriptors (connections are file descriptors).
    pub open_fds: Option<f64>,
    /// The soft `RLIMIT_NOFILE`: when `open_fds` reaches it, accepts fail.
    pub max_fds: Option<f64>,
    /// When the process started, in Unix seconds.
    pub start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    /// The figures of this process now.
    #[cfg(target_os = "linux")]
    pub fn read() -> Self {
        use procfs::WithCurrentSystemInfo as _;
        use procfs::process::{LimitValue, Process};
        let Ok(me) = Process::myself() else { return Self::default() };
        let stat = me.stat().ok();
        let ticks = procfs::ticks_per_second() as f64;
        let limits = me.limits().ok();
        Self {
            cpu_seconds: stat.as_ref().map(|s| (s.utime + s.stime) as f64 / ticks),
            resident_bytes: stat.as_ref().map(|s| s.rss_bytes().get() as f64),
            virtual_bytes: stat.as_ref().map(|s| s.vsize as f64),
            open_fds: me.fd_count().ok().map(|n| n as f64),
            max_fds: limits.and_then(|l| match l.max_open_files.soft_limit {
                LimitValue::Value(n) => Some(n as f64),
                LimitValue::Unlimited => None,
            }),
            start_time_seconds: stat.as_ref().and_then(|s| {
                let boot = procfs::boot_time_secs().ok()? as f64;
                Some(boot + s.starttime as f64 / ticks)
            }),
        }
    }

    /// No procfs: nothing to report.
    #[cfg(not(target_os = "linux"))]
    pub fn read() -> Self {
        Self::default()
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = ProcessFigures::read();
        if let Some(seconds) = figures.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            ("process_resident_memory", "Resident memory size", Some(Unit::Bytes), figures.resident_bytes),
            ("process_virtual_memory", "Virtual memory size", Some(Unit::Bytes), figures.virtual_bytes),
            ("process_open_fds", "Open file descriptors", None, figures.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors (soft limit)", None, figures.max_fds),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(Unit::Seconds),
                figures.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                let metric = encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn figures_follow_the_process() {
        let before = ProcessFigures::read();
        let files: Vec<_> = (0..200).map(|_| std::fs::File::open("/proc/self/stat").unwrap()).collect();
        let during = ProcessFigures::read();
        drop(files);
        // Other tests in this process open and close files too: leave them room.
        let opened = during.open_fds.unwrap() - before.open_fds.unwrap();
        assert!((150.0..=250.0).contains(&opened), "200 open files counted as {opened}");
        assert!(before.resident_bytes.unwrap() > 1_000_000.0, "{before:?}");
        assert!(before.max_fds.unwrap() >= before.open_fds.unwrap());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = before.start_time_seconds.unwrap();
        assert!(started <= now + 1.0 && started > now - 3600.0, "started {started}, now {now}");
    }
}
