//! Unit tests of `serve`'s flag resolution, in a file of their own so `serve.rs` stays under 500 lines.

use super::*;
use crate::cli::{Cli, Command};
use clap::Parser;

fn parse(args: &[&str]) -> ServeArgs {
    let mut argv = vec!["syncgate", "serve"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Serve(a) => *a,
        _ => unreachable!("a serve command line"),
    }
}

#[test]
fn flags_win_over_the_file_and_the_file_fills_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9999\"\njwt_secret = \"from-file-secret-that-is-long-enough\"\nauth-timeout = 3\n",
    )
    .unwrap();
    // Its own data directory: a server on the defaults may hold ./syncgate-data.
    let data = dir.path().join("data");
    let mut args = parse(&["--listen", "127.0.0.1:7000", "--data-dir", data.to_str().unwrap()]);
    args.config = Some(path);
    let serve = args.resolve().unwrap();
    assert_eq!(serve.listen.port(), 7000);
    assert_eq!(serve.config.session.auth_timeout, Duration::from_secs(3));
}

#[test]
fn a_refused_flag_leaves_the_data_directory_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    assert!(parse(&["--tls-cert", "/x", "--data-dir", data_arg]).resolve().is_err());
    assert!(parse(&["--auth-cookie", "sid", "--data-dir", data_arg]).resolve().is_err());
    assert!(!data.exists(), "a refused start-up must not create or lock the data directory");
}

#[test]
fn unknown_file_keys_and_conflicts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "jwt_sekret = \"x\"\n").unwrap();
    let mut args = parse(&[]);
    args.config = Some(path);
    assert!(args.resolve().err().unwrap().to_string().contains("jwt-sekret"));
    let err = parse(&["--auth", "token"]).resolve().err().unwrap().to_string();
    assert!(err.contains("--token"), "{err}");
    assert!(parse(&["--jwt-secret", "a", "--jwt-public-key", "/x"]).resolve().is_err());
    assert!(parse(&["--tls-cert", "/x"]).resolve().is_err());
}
