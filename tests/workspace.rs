//! An app that embeds the Rust client compiles neither the server nor its
//! tools: `syncgate-client`'s dependency tree holds no SQLite, no HTTP server,
//! no command-line parser and no load generator.

use std::process::Command;

#[test]
fn the_client_crate_does_not_pull_in_the_server() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "syncgate-client", "-e", "normal,features", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("syncgate-proto"), "the tree was read: {tree}");
    for unwanted in ["rusqlite", "clap", "hdrhistogram", "hyper feature \"server\"", "syncgate v", "syncgate-tools"] {
        assert!(!tree.contains(unwanted), "syncgate-client depends on {unwanted}:\n{tree}");
    }
}
