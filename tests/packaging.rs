//! What an operator installs: `docs/syncgate.service` and the backup units of
//! `docs/running-in-production.md` are units systemd accepts
//! (`systemd-analyze verify`, when the tool is on the machine); the service
//! keeps its hardening and sets only environment variables that are `serve`
//! flags; the `Dockerfile` stays multi-stage, non-root, with a health check on
//! `/readyz`.

use std::path::Path;
use std::process::Command;

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn unit() -> String {
    repo_file("docs/syncgate.service")
}

/// The units the guide shows, each from a `# /etc/systemd/system/NAME` line to
/// the next such line or the end of its code block.
fn guide_units() -> Vec<(String, String)> {
    let guide = repo_file("docs/running-in-production.md");
    let mut units: Vec<(String, String)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in guide.lines() {
        if let Some(name) = line.strip_prefix("# /etc/systemd/system/") {
            units.push((name.trim().to_string(), String::new()));
            current = Some(units.len() - 1);
        } else if line.starts_with("```") {
            current = None;
        } else if let Some(i) = current {
            units[i].1.push_str(line);
            units[i].1.push('\n');
        }
    }
    units
}

/// `systemd-analyze verify` on `units` written to a temporary directory under
/// their names; `None` when the tool is not installed.
fn verify(units: &[(String, String)]) -> Option<()> {
    let version = Command::new("systemd-analyze").arg("--version").output().ok()?;
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, text) in units {
        // As installed, with the binary just built (verify refuses a command that does not exist).
        let path = dir.path().join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/syncgate", env!("CARGO_BIN_EXE_syncgate"))).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze").arg("verify").args(&paths).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // Unknown keys and bad values are warnings with a zero exit: none may concern these units.
    let complaints: Vec<&str> =
        stderr.lines().filter(|l| units.iter().any(|(name, _)| l.contains(name.as_str()))).collect();
    assert!(complaints.is_empty(), "systemd-analyze verify complains:\n{}", complaints.join("\n"));
    Some(())
}

#[test]
fn the_unit_keeps_its_hardening_and_names_real_flags() {
    let unit = unit();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for setting in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=syncgate",
        "LimitNOFILE=1048576",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "Environment=SYNCGATE_ENV=production",
        "Environment=SYNCGATE_DATA_DIR=/var/lib/syncgate",
        "ExecStart=/usr/local/bin/syncgate serve",
    ] {
        assert!(lines.contains(&setting), "docs/syncgate.service lacks {setting}");
    }
    let flags = Command::new(env!("CARGO_BIN_EXE_syncgate")).args(["docs", "flags"]).output().unwrap();
    let flags = String::from_utf8(flags.stdout).unwrap();
    let mut checked = 0;
    for line in &lines {
        if let Some(assignment) = line.strip_prefix("Environment=") {
            let name = assignment.split('=').next().unwrap();
            assert!(flags.contains(&format!("`{name}`")), "{name} is not the variable of a serve flag");
            checked += 1;
        }
    }
    assert!(checked >= 5, "the unit's environment was read");
}

#[test]
fn systemd_analyze_verifies_the_unit_and_the_guides_units() {
    let guide = guide_units();
    let names: Vec<&str> = guide.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["syncgate-backup.service", "syncgate-backup.timer"], "the guide's units were read");
    let mut units = vec![("syncgate.service".to_string(), unit())];
    units.extend(guide);
    if verify(&units).is_none() {
        eprintln!("systemd-analyze is not installed: the units are not verified on this machine");
    }
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_checks_readyz() {
    let dockerfile = repo_file("Dockerfile");
    let instructions: Vec<&str> = dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let from = instructions.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(from >= 2, "a build stage and a runtime stage");
    let user = instructions.iter().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER");
    assert!(!user.starts_with("root") && !user.starts_with("0"), "runs as {user}");
    let health = instructions.iter().position(|l| l.starts_with("HEALTHCHECK")).expect("a HEALTHCHECK");
    assert!(instructions[health..].iter().take(2).any(|l| l.contains("/readyz")), "the health check asks /readyz");
    assert!(dockerfile.contains("SYNCGATE_LISTEN=0.0.0.0:8080"), "listens beyond the container's loopback");
}
