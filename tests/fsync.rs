//! The durability claim itself: an accepted op is on disk before its
//! `OP_RESULT`. A crash test cannot show this (SIGKILL keeps the page cache),
//! so this test counts the `fsync`/`fdatasync` calls the real binary makes
//! between sending a write and receiving its result, through an `LD_PRELOAD`
//! shim it compiles with the machine's C compiler. With `--durability none` the
//! same measurement sees no sync call, which shows the check can fail.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use rmpv::Value;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};

const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/* Appends one byte to $SYNC_SHIM_LOG for every fsync or fdatasync, then syncs. */
static void note(void) {
    const char *path = getenv("SYNC_SHIM_LOG");
    if (!path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (fd < 0) return;
    (void)!write(fd, "s", 1);
    close(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    note();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    note();
    return real(fd);
}
"#;

fn build_shim(dir: &Path) -> PathBuf {
    let source = dir.join("sync_shim.c");
    let library = dir.join("sync_shim.so");
    std::fs::write(&source, SHIM).unwrap();
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) builds the LD_PRELOAD shim");
    assert!(status.success(), "the shim did not compile");
    library
}

/// Sync calls counted so far.
fn syncs(log: &Path) -> usize {
    std::fs::metadata(log).map_or(0, |m| m.len() as usize)
}

/// Starts the binary on a disk store with the shim, writes one op, and
/// returns the sync calls made between the write and its `OP_RESULT`.
async fn syncs_during_one_acknowledged_write(durability: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let shim = build_shim(dir.path());
    let log = dir.path().join("syncs.log");
    let data = dir.path().join("data");
    let mut child = syncgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET, "--durability", durability])
        .arg("--data-dir")
        .arg(&data)
        .env("LD_PRELOAD", &shim)
        .env("SYNC_SHIM_LOG", &log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let mut ws = RawWs::authed(addr, &token("alice", &[])).await;
    // Let start-up syncs (schema, epoch) finish before measuring.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = syncs(&log);
    let op = OpInput::Op(RawOp {
        op_id: Value::from("o1"),
        collection: "c".into(),
        key: "k".into(),
        value: Value::from("durable?"),
        hlc: format!("{}:0:alice", now() * 1000),
    });
    ws.send(&ClientMessage::OpBatch { id: 1, ops: vec![op] }).await;
    assert!(
        matches!(ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await, ServerMessage::OpResult { results, .. } if results[0].ok)
    );
    let during = syncs(&log) - before;
    child.kill().unwrap();
    let _ = child.wait();
    during
}

#[tokio::test]
async fn an_acknowledged_write_was_synced_to_disk_before_its_result() {
    assert!(
        syncs_during_one_acknowledged_write("full").await >= 1,
        "OP_RESULT was sent without an fsync/fdatasync of the write"
    );
    // The measurement is real: without fsync it sees none, and the assertion above would fail.
    assert_eq!(syncs_during_one_acknowledged_write("none").await, 0);
}
