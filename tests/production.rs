//! `--env production` refuses unsafe settings with one line naming the flag
//! to change; `--allow-unsafe-production NAME,…` lets a named one through and
//! the server says so at start-up. Run against the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{SECRET, syncgate};

/// `serve args…` in `dir`, expecting a refusal: its one stderr line.
fn refused(dir: &std::path::Path, args: &[&str]) -> String {
    let data = dir.join("data");
    let mut command = syncgate();
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]).args(args);
    let out = exits_within(command, args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} must be refused: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!data.exists(), "a refused start-up must not create the data directory");
    stderr
}

/// Runs `command` to its end; a server that starts instead of refusing fails
/// the test after 10 s rather than hanging it.
fn exits_within(mut command: std::process::Command, args: &[&str]) -> std::process::Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {args:?} started instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `serve args…`, expecting it to start: the log lines up to "listening".
fn starts(dir: &std::path::Path, args: &[&str]) -> Vec<String> {
    let data = dir.join("started");
    let mut child = syncgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let listening = line.contains("addr=");
        log.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(log.last().is_some_and(|l| l.contains("addr=")), "{args:?} must start: {log:?} {status:?}");
    log
}

#[test]
fn auth_none_without_rules_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let line = refused(dir.path(), &["--env", "production"]);
    assert!(line.contains("--auth none without --rules") && line.contains("--auth token|jwt|introspect"), "{line}");
    assert!(line.contains("--allow-unsafe-production auth-none"), "names the override: {line}");
    // The environment variable counts like the flag.
    let mut command = syncgate();
    command.args(["serve", "--listen", "127.0.0.1:0", "--store", "disk"]);
    command.env("SYNCGATE_ENV", "Production").current_dir(dir.path());
    let out = exits_within(command, &["SYNCGATE_ENV=Production"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth none"));
    // With rules, mode none is a deliberate policy: it starts.
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[[rules]]\nroles = [\"*\"]\nresource = \"public/**\"\nactions = [\"read\"]\n").unwrap();
    starts(dir.path(), &["--env", "production", "--rules", rules.to_str().unwrap()]);
}

#[test]
fn a_memory_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let line = refused(dir.path(), &["--env", "production", "--jwt-secret", SECRET, "--store", "memory"]);
    assert!(line.contains("--store memory") && line.contains("--store disk"), "{line}");
    assert!(!line.contains("--auth none"), "only what is wrong: {line}");
}

#[test]
fn durability_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let line = refused(dir.path(), &["--env", "production", "--jwt-secret", SECRET, "--durability", "none"]);
    assert!(line.contains("--durability none") && line.contains("--durability full"), "{line}");
}

#[test]
fn a_cookie_without_allowed_origins_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let line = refused(dir.path(), &["--env", "production", "--jwt-secret", SECRET, "--auth-cookie", "sg"]);
    assert!(line.contains("--auth-cookie needs --allowed-origins"), "{line}");
}

#[test]
fn every_unsafe_setting_is_named_in_one_line_and_overrides_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let all = ["--env", "production", "--store", "memory", "--durability", "none"];
    let line = refused(dir.path(), &all);
    for flag in ["--auth none", "--store memory", "--durability none"] {
        assert!(line.contains(flag), "{flag} in {line}");
    }
    assert!(line.contains("--allow-unsafe-production auth-none,store-memory,durability-none"), "{line}");
    // Allowing two of three still refuses the third.
    let partly = refused(dir.path(), &[&all[..], &["--allow-unsafe-production", "auth-none,store-memory"]].concat());
    assert!(partly.contains("--durability none") && !partly.contains("--store memory"), "{partly}");

    let log = starts(
        dir.path(),
        &[&all[..], &["--allow-unsafe-production", "auth-none,store-memory,durability-none"]].concat(),
    );
    for name in ["auth-none", "store-memory", "durability-none"] {
        assert!(
            log.iter()
                .any(|l| l.contains("WARN") && l.contains(&format!("{name} allowed by --allow-unsafe-production"))),
            "the override of {name} is logged at start-up: {log:#?}"
        );
    }
    // The flag's name alone works too.
    starts(dir.path(), &[&all[..], &["--allow-unsafe-production", "auth,store,durability"]].concat());
    // An unknown name is a usage error, not a silent pass.
    let out = syncgate().args(["serve", "--allow-unsafe-production", "everything"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth-none"), "lists the accepted names");
}

#[test]
fn the_config_file_carries_the_override_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncgate.toml");
    std::fs::write(
        &config,
        format!("env = \"production\"\njwt-secret = \"{SECRET}\"\nstore = \"memory\"\nallow-unsafe-production = [\"store\"]\n"),
    )
    .unwrap();
    let log = starts(dir.path(), &["--config", config.to_str().unwrap()]);
    assert!(log.iter().any(|l| l.contains("store-memory allowed by --allow-unsafe-production")), "{log:#?}");
    std::fs::write(&config, format!("env = \"production\"\njwt-secret = \"{SECRET}\"\nstore = \"memory\"\n")).unwrap();
    let line = refused(dir.path(), &["--config", config.to_str().unwrap()]);
    assert!(line.contains("--store memory"), "{line}");
}
