//! A fresh `syncgate serve` (the binary) already exposes every metric family
//! with every label value the protocol defines at zero, the process series and
//! `syncgate_build_info`; every metric the Grafana dashboard in `docs/` and the
//! README's metric table name exists there.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Stdio};

use common::idp::http;
use openmetrics_parser::openmetrics::parse_openmetrics;
use openmetrics_parser::{MetricNumber, OpenMetricsType, OpenMetricsValue};
use syncgate::protocol::AuthFailCode;
use syncgate::protocol::codes::{close, error};

const ADMIN: &str = "metrics-at-start-admin-token-0123456789";

struct Server(Child, SocketAddr);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> Server {
    let (child, addr) = common::spawn_serve(["--store", "memory", "--admin-token", ADMIN], Stdio::null());
    Server(child, addr)
}

async fn scrape(server: &Server) -> String {
    let (status, body) = http(server.1, "GET", "/metrics", Some(ADMIN), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

type Exposition = openmetrics_parser::MetricsExposition<OpenMetricsType, OpenMetricsValue>;

fn parse(text: &str) -> Exposition {
    parse_openmetrics(text).unwrap_or_else(|e| panic!("not OpenMetrics text: {e:?}\n{text}"))
}

/// The value of `family{labels}`; panics when the series is absent.
fn value(exposition: &Exposition, family: &str, labels: &[&str]) -> f64 {
    let found = exposition.families.get(family).unwrap_or_else(|| panic!("no family {family}"));
    let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    let sample = found.get_sample_by_label_values(&labels).unwrap_or_else(|| panic!("no series {family}{labels:?}"));
    match &sample.value {
        OpenMetricsValue::Counter(c) => c.value.as_f64(),
        OpenMetricsValue::Gauge(g) => MetricNumber::as_f64(g),
        OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
        other => panic!("unexpected sample {other:?}"),
    }
}

/// Every name a query may use: families, and the sample names their type implies.
fn queryable_names(exposition: &Exposition) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, family) in &exposition.families {
        names.insert(name.clone());
        match family.family_type {
            OpenMetricsType::Counter => {
                names.insert(format!("{name}_total"));
            }
            OpenMetricsType::Histogram => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {}
        }
    }
    names
}

#[tokio::test]
async fn every_family_and_label_value_is_there_at_zero_from_the_start() {
    let server = tokio::task::spawn_blocking(start).await.unwrap();
    let text = scrape(&server).await;
    let exposition = parse(&text);
    for kind in ["unauthenticated", "authenticated"] {
        assert_eq!(value(&exposition, "syncgate_connections", &[kind]), 0.0);
    }
    for kind in ["ok", "failed"] {
        assert_eq!(value(&exposition, "syncgate_handshakes", &[kind]), 0.0);
    }
    for code in AuthFailCode::ALL {
        assert_eq!(value(&exposition, "syncgate_auth_failures", &[code.as_str()]), 0.0);
    }
    for code in close::ALL {
        assert_eq!(value(&exposition, "syncgate_closes", &[&code.to_string()]), 0.0, "close {code}");
    }
    for code in error::ALL {
        assert_eq!(value(&exposition, "syncgate_errors", &[code]), 0.0);
    }
    for code in error::OP_CODES.iter().chain(&["ok"]) {
        assert_eq!(value(&exposition, "syncgate_ops", &[code]), 0.0);
    }
    for kind in ["connections", "connections_per_ip", "unauthenticated_per_ip", "auth_failures", "origin"] {
        assert_eq!(value(&exposition, "syncgate_refusals", &[kind]), 0.0);
    }
    for family in ["syncgate_commit_seconds", "syncgate_verification_seconds", "syncgate_outbound_burst"] {
        assert_eq!(value(&exposition, family, &[]), 0.0, "{family}: an empty histogram");
    }

    let build = exposition.families.get("syncgate_build_info").expect("syncgate_build_info");
    let sample = build.iter_samples().next().expect("one build_info series");
    let labels = sample.get_labelset().unwrap();
    let label = |name: &str| labels.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v.clone());
    assert_eq!(label("version").as_deref(), Some(env!("CARGO_PKG_VERSION")));
    let commit = label("commit").expect("a commit label");
    assert!(!commit.is_empty(), "{text}");
    assert!(matches!(&sample.value, OpenMetricsValue::Gauge(g) if g.as_f64() == 1.0), "{text}");

    // Process series: plausible figures of the server process, not of this test.
    let pid = server.0.id();
    let resident = value(&exposition, "process_resident_memory_bytes", &[]);
    assert!(resident > 1e6 && resident < 4e9, "{resident}");
    let fds = value(&exposition, "process_open_fds", &[]);
    let listed = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as f64).unwrap_or(fds);
    assert!((fds - listed).abs() <= 4.0, "open fds {fds}, /proc lists {listed}");
    assert!(value(&exposition, "process_max_fds", &[]) >= fds);
    assert!(value(&exposition, "process_cpu_seconds", &[]) >= 0.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = value(&exposition, "process_start_time_seconds", &[]);
    assert!(started <= now + 1.0 && started > now - 120.0, "started {started}, now {now}");
}

/// Metric names in a PromQL expression: identifiers of syncgate's or the process's series.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("syncgate_") || word.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_metric_of_the_dashboard_and_the_readme_exists_on_a_fresh_node() {
    let server = tokio::task::spawn_blocking(start).await.unwrap();
    let names = queryable_names(&parse(&scrape(&server).await));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            for name in metric_names(expr) {
                assert!(names.contains(&name), "panel {:?} queries {name}, which /metrics lacks", panel["title"]);
                used.insert(name);
            }
        }
    }
    assert!(used.len() >= 20, "the dashboard covers the metrics: {used:?}");

    // The README's metric table: every name exists, and the dashboard shows each family.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table = &readme[readme.find("| metric (`syncgate_…`) |").expect("the README's metric table")..];
    let rows = table.lines().skip(2).take_while(|line| line.starts_with('|'));
    let mut listed = 0;
    for row in rows {
        let first = row.split(" | ").next().unwrap();
        for cell in first.split('`').skip(1).step_by(2) {
            let name = format!("syncgate_{}", cell.split('{').next().unwrap());
            assert!(names.contains(&name), "the README lists {name}, which /metrics lacks");
            let family = ["_total", "_bucket"].iter().fold(name.clone(), |n, s| n.trim_end_matches(s).to_string());
            assert!(used.iter().any(|u| u.starts_with(&family)), "the dashboard shows nothing of {family}");
            listed += 1;
        }
    }
    assert!(listed >= 18, "the README's table was read ({listed} names)");
}
