//! The `syncgate` binary: configuration errors, the dev token command, env
//! variables, and graceful shutdown on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use syncgate::protocol::ServerMessage;

/// Runs `serve` with `args`, expecting an immediate failure with one line on stderr.
fn refuses(args: &[&str]) -> String {
    let out =
        syncgate().arg("serve").args(args).args(["--listen", "127.0.0.1:0", "--store", "memory"]).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one clear line, got {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_configuration_is_one_clear_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n").unwrap();
    assert!(refuses(&["--jwt-public-key", garbage.to_str().unwrap()]).contains("--jwt-public-key"));
    assert!(refuses(&["--jwt-public-key", "/nonexistent/key.pem"]).contains("/nonexistent/key.pem"));
    assert!(refuses(&["--auth", "token"]).contains("--token"));
    assert!(refuses(&["--auth", "jwt"]).contains("--jwt-secret"));
    assert!(refuses(&["--jwt-secret", "x", "--token", "y", "--auth", "token"]).contains("conflicts"));
    assert!(refuses(&["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"]).contains("--tls-cert"));
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "listen = 5\n").unwrap();
    assert!(refuses(&["--config", config.to_str().unwrap()]).contains("c.toml"));
    std::fs::write(&config, "no-such-flag = 1\n").unwrap();
    assert!(refuses(&["--config", config.to_str().unwrap()]).contains("no-such-flag"));
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[[rules]]\nroles = [\"user\"]\nresource = \"a/**\"\nactions = [\"delete\"]\n").unwrap();
    let err = refuses(&["--rules", rules.to_str().unwrap()]);
    assert!(err.contains("rule 1") && err.contains("delete"), "{err}");
    assert!(refuses(&["--rules", "/nonexistent/rules.toml"]).contains("/nonexistent/rules.toml"));
    let introspect = ["--auth", "introspect", "--introspect-url", "http://127.0.0.1:1/x", "--introspect-token", "t"];
    let production = [&introspect[..], &["--introspect-fail-open", "--env", "production"]].concat();
    assert!(refuses(&production).contains("production"));
    assert!(refuses(&["--auth", "introspect"]).contains("--introspect-url"));
    assert!(
        refuses(&["--auth", "introspect", "--introspect-url", "https://idp.example/i"]).contains("--introspect-token")
    );
    assert!(refuses(&["--jwks-url", "http://idp.example.com/jwks"]).contains("loopback"));
    assert!(refuses(&["--sync-page-bytes", "10"]).contains("--sync-page-bytes"));
    let jwks = ["--jwks-url", "https://idp.example.com/jwks"];
    assert!(refuses(&[&jwks[..], &["--idp-ca-file", "/nonexistent/ca.pem"]].concat()).contains("/nonexistent/ca.pem"));
    let no_cert = dir.path().join("empty.pem");
    std::fs::write(&no_cert, "not a certificate\n").unwrap();
    let err = refuses(&[&jwks[..], &["--idp-ca-file", no_cert.to_str().unwrap()]].concat());
    assert!(err.contains("--idp-ca-file") && err.contains("no PEM certificate"), "{err}");
    assert!(refuses(&["--jwt-secret", SECRET, "--auth-cookie", "sg"]).contains("--allowed-origins"));
    assert!(refuses(&["--jwt-secret", SECRET, "--jwt-previous-secret", "old"]).contains("--jwt-previous-secret-until"));
}

/// The second security pass, as seen from the command line.
#[test]
fn security_settings_are_refused_with_one_line() {
    let introspect = ["--auth", "introspect", "--introspect-url", "http://127.0.0.1:1/x", "--introspect-token", "t"];
    for env in ["Production", "PRODUCTION", " production "] {
        let args = [&introspect[..], &["--introspect-fail-open", "--env", env]].concat();
        assert!(refuses(&args).contains("production"), "--env {env:?} must count as production");
    }
    let two_jwks = ["--jwks-url", "http://127.0.0.1:1/a", "--jwks-url", "http://127.0.0.1:1/b"];
    assert!(refuses(&two_jwks).contains("[[issuers]]"), "several unbound key sources stop start-up");
    let secret_and_jwks = ["--jwt-secret", SECRET, "--jwks-url", "http://127.0.0.1:1/a"];
    assert!(refuses(&secret_and_jwks).contains("[[issuers]]"));
    let unpinned = ["--jwks-url", "http://127.0.0.1:1/a", "--env", "production"];
    assert!(refuses(&unpinned).contains("--jwt-audience"), "JWKS without audience/issuer in production");
    assert!(refuses(&["--jwt-secret", SECRET, "--admin-token", "x"]).contains("32 bytes"));
    assert!(refuses(&["--jwt-secret", SECRET, "--admin-listen", "127.0.0.1:0"]).contains("--admin-token"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("issuers.toml");
    std::fs::write(&config, "jwt-secret = \"x\"\n[[issuers]]\nissuer = \"https://a\"\njwt_secret = \"s\"\n").unwrap();
    assert!(refuses(&["--config", config.to_str().unwrap()]).contains("[[issuers]]"), "flat keys beside tables");
    std::fs::write(&config, "[[issuers]]\nissuer = \"https://a\"\n").unwrap();
    assert!(refuses(&["--config", config.to_str().unwrap()]).contains("needs jwks-url"));
}

/// `[[issuers]]` tables in the --config file bind each secret to its issuer.
#[tokio::test]
async fn issuer_tables_from_the_config_file_bind_keys_to_issuers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("issuers.toml");
    let (a, b) = ("secret-of-provider-a-0123456789abcdef", "secret-of-provider-b-0123456789abcdef");
    std::fs::write(
        &config,
        format!(
            "[[issuers]]\nissuer = \"https://a.example\"\njwt-secret = \"{a}\"\naudience = \"syncgate\"\n\
             [[issuers]]\nissuer = \"https://b.example\"\njwt_secret = \"{b}\"\n"
        ),
    )
    .unwrap();
    let (mut child, addr) = spawn_server(&["--config", config.to_str().unwrap()], &[]);
    let key = |secret: &str| jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let claims = |iss: &str, aud: &str| serde_json::json!({"sub": "u", "iss": iss, "aud": aud, "exp": now() + 600});
    let good = sign(jsonwebtoken::Algorithm::HS256, &key(a), &claims("https://a.example", "syncgate"));
    RawWs::authed(addr, &good).await;
    let crossed = sign(jsonwebtoken::Algorithm::HS256, &key(a), &claims("https://b.example", "x"));
    assert_eq!(RawWs::refused(addr, &crossed).await.0, "token_invalid");
    let wrong_aud = sign(jsonwebtoken::Algorithm::HS256, &key(a), &claims("https://a.example", "other"));
    assert_eq!(RawWs::refused(addr, &wrong_aud).await.0, "audience_mismatch");
    child.kill().unwrap();
    let _ = child.wait();
}

/// A `sub` holding a newline cannot forge a log line.
#[tokio::test]
async fn claims_in_log_lines_cannot_forge_lines() {
    // Successful authentications are logged at DEBUG.
    let (mut child, addr, log) = spawn_server_with_log(&["--jwt-secret", SECRET, "--log", "debug"], &[]);
    let forged = "mallory\n2026-12-01T00:00:00Z  INFO authenticated sub=admin";
    RawWs::authed(addr, &hs256(serde_json::json!({"sub": forged, "exp": now() + 600}))).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let line = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = log.recv_timeout(left).expect("no authenticated line");
        assert!(!line.starts_with("2026-12-01T00:00:00Z"), "a forged line: {line:?}");
        if line.contains("authenticated") {
            break line;
        }
    };
    assert!(line.contains(r"mallory\n2026"), "the newline is escaped: {line:?}");
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test]
async fn sighup_reloads_rules_and_keeps_them_when_the_new_file_is_bad() {
    use syncgate::protocol::ClientMessage;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    let allow = |topic: &str| format!("[[rules]]\nroles = [\"user\"]\nresource = \"{topic}\"\nactions = [\"read\"]\n");
    std::fs::write(&rules, allow("rooms/*")).unwrap();
    let (mut child, addr, log) =
        spawn_server_with_log(&["--jwt-secret", SECRET, "--rules", rules.to_str().unwrap()], &[]);
    let mut ws = RawWs::authed(addr, &token("alice", &["user"])).await;
    ws.send(&ClientMessage::Sub { id: 1, topic: "rooms/lobby".into() }).await;
    assert_eq!(ws.msg().await, ServerMessage::Ok { id: 1 });
    ws.send(&ClientMessage::Sub { id: 2, topic: "rooms/staff".into() }).await;
    assert_eq!(ws.msg().await, ServerMessage::Ok { id: 2 });

    let hup = |pid: u32| Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    std::fs::write(&rules, "this is not toml [[").unwrap();
    assert!(hup(child.id()).success());
    // The signal is handled apart from the connection: wait for its verdict before the next write.
    wait_for_log(&log, "rules not reloaded");
    ws.send(&ClientMessage::Ping { id: Some(3) }).await;
    assert_eq!(
        ws.msg().await,
        ServerMessage::Pong { id: Some(3) },
        "a bad file keeps the old rules and the connection"
    );

    std::fs::write(&rules, allow("rooms/lobby")).unwrap();
    assert!(hup(child.id()).success());
    match ws.msg().await {
        ServerMessage::Error { id: Some(2), code, .. } => assert_eq!(code, "forbidden"),
        other => panic!("{other:?}"),
    }
    ws.send(&ClientMessage::Sub { id: 4, topic: "rooms/lobby".into() }).await;
    assert_eq!(ws.msg().await, ServerMessage::Ok { id: 4 });
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn the_token_command_mints_a_verifiable_token() {
    let out = syncgate()
        .args([
            "token",
            "--secret",
            SECRET,
            "--sub",
            "alice",
            "--role",
            "user",
            "--role",
            "editor",
            "--ttl",
            "10m",
            "--claim",
            "orgId=acme",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let verifier = syncgate::auth::JwtVerifier::new(syncgate::auth::JwtSettings::new(syncgate::auth::JwtKey::Secret(
        SECRET.as_bytes().to_vec(),
    )))
    .unwrap();
    let identity = verifier.check(&token, now()).unwrap();
    assert_eq!(identity.sub, "alice");
    assert_eq!(identity.roles, ["user", "editor"]);
    assert_eq!(identity.claims["orgId"], "acme");
    let exp = identity.expires_at.unwrap();
    assert!((now() + 590..=now() + 610).contains(&exp));
}

/// Starts the binary on an ephemeral port and returns it with its address (read from the log).
fn spawn_server(args: &[&str], envs: &[(&str, &str)]) -> (std::process::Child, std::net::SocketAddr) {
    let (child, addr, _log) = spawn_server_with_log(args, envs);
    (child, addr)
}

/// Like [`spawn_server`], and hands over the server's later log lines.
fn spawn_server_with_log(
    args: &[&str],
    envs: &[(&str, &str)],
) -> (std::process::Child, std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut child = syncgate()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--store", "memory"])
        .args(args)
        .envs(envs.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let (log_tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    (child, addr, log)
}

/// `--log-format json` writes one JSON object per line, fields and all.
#[test]
fn json_logs_are_one_object_per_line() {
    let mut child = syncgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory", "--jwt-secret", SECRET, "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        let object: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        if object["fields"]["message"] == "syncgate listening" {
            break object;
        }
    };
    assert_eq!(listening["level"], "INFO");
    assert!(listening["fields"]["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{listening}");
    child.kill().unwrap();
    let _ = child.wait();
}

/// Waits (15 s at most) for a log line containing `needle`.
fn wait_for_log(log: &std::sync::mpsc::Receiver<String>, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn environment_configures_and_sigterm_shuts_down_cleanly() {
    let (mut child, addr) = spawn_server(&[], &[("SYNCGATE_JWT_SECRET", SECRET), ("SYNCGATE_AUTH_TIMEOUT", "5")]);
    let mut ws = RawWs::authed(addr, &token("alice", &[])).await;
    assert_eq!(RawWs::refused(addr, "garbage").await.1, 4001, "the env secret put the server in jwt mode");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(ws.close_code().await, 1001);
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn flags_win_over_the_environment() {
    let (mut child, addr) =
        spawn_server(&["--auth", "token", "--token", "from-flag"], &[("SYNCGATE_TOKEN", "from-env")]);
    let mut ws = RawWs::connect("/ws", addr).await;
    assert!(matches!(ws.msg().await, ServerMessage::AuthRequired { .. }));
    drop(ws);
    let _ok = RawWs::authed(addr, "from-flag").await;
    assert_eq!(RawWs::refused(addr, "from-env").await.0, "token_invalid");
    child.kill().unwrap();
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// During `--drain-grace` a second SIGTERM or SIGINT exits at once.
#[cfg(unix)]
#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    let (mut child, _addr) = spawn_server(&["--jwt-secret", SECRET, "--drain-grace", "30"], &[]);
    let pid = child.id().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the first signal drains (30 s)");
    signal("-INT");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the second signal did not end the process");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Postgres URL that does not answer stops `serve` with one line naming the
/// host; `backup`/`restore` of a Postgres store point at pg_dump, pg_restore
/// and `new-epoch`.
#[test]
fn postgres_stores_refuse_in_one_line() {
    let one_line = |args: &[&str]| {
        let out = syncgate().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "one clear line, got {stderr:?}");
        stderr
    };
    let url = "postgres://postgres:hunter2@127.0.0.1:1/test";
    let down = one_line(&["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET, "--store", url]);
    assert!(down.contains("127.0.0.1:1") && down.contains("does not answer"), "{down}");
    assert!(!down.contains("hunter2"), "the password is never printed: {down}");
    for command in ["backup", "restore"] {
        let extra: &[&str] = if command == "backup" { &["--out", "x.sgdb"] } else { &["--from", "x.sgdb"] };
        let said = one_line(&[&[command, "--store", url][..], extra].concat());
        assert!(said.contains("pg_dump") && said.contains("new-epoch"), "{said}");
    }
    let bad = syncgate().args(["serve", "--store", "mysql://x"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("postgres://"));
}

#[test]
fn backplane_settings_refuse_in_one_line() {
    let one_line = |args: &[&str]| {
        let mut argv = vec!["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET];
        argv.extend_from_slice(args);
        let out = syncgate().args(&argv).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "one clear line, got {stderr:?}");
        stderr
    };
    let nats = "nats://127.0.0.1:1";
    let pg = "postgres://postgres@127.0.0.1:1/test";
    for store in [&[][..], &["--store", "memory"][..], &["--store", "disk"][..]] {
        let said = one_line(&[store, &["--backplane", nats][..]].concat());
        assert!(said.contains("--store postgres://"), "a store of one node with a backplane: {said}");
    }
    let said = one_line(&["--env", "production", "--store", pg, "--backplane", nats]);
    assert!(said.contains("--cluster-secret"), "{said}");
    let said = one_line(&["--store", pg, "--backplane", nats, "--cluster-secret", "short"]);
    assert!(said.contains("at least 16 bytes"), "{said}");
    let said = one_line(&["--store", pg, "--backplane", nats, "--cluster-name", "a.b"]);
    assert!(said.contains("--cluster-name"), "{said}");
    let said = one_line(&["--cluster-name", "prod"]);
    assert!(said.contains("needs --backplane"), "{said}");
    let said = one_line(&["--backplane", "redis://x", "--store", pg]);
    assert!(said.contains("nats://"), "{said}");
    let said = one_line(&["--trusted-proxies", "10.0.0.0/33"]);
    assert!(said.contains("--trusted-proxies"), "{said}");
    // NATS that does not answer stops serve with one line naming the host, not the password.
    if let Ok(url) = std::env::var("SYNCGATE_TEST_POSTGRES") {
        let schema = format!("t_cli_nats_{}", std::process::id());
        let said = one_line(&[
            "--store",
            &url,
            "--postgres-schema",
            &schema,
            "--backplane",
            "nats://user:hunter2@127.0.0.1:1",
        ]);
        assert!(said.contains("127.0.0.1:1") && said.contains("does not answer"), "{said}");
        assert!(!said.contains("hunter2"), "the password is never printed: {said}");
    } else {
        println!("skipped the unreachable-NATS case: SYNCGATE_TEST_POSTGRES is not set");
    }
}
