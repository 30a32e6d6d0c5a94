//! Records the git commit the crate is built from, for the
//! `syncgate_build_info{version, commit}` metric: `SYNCGATE_BUILD_COMMIT`
//! when set (a build from a tarball or in a container without `.git`), else
//! `git rev-parse`, else `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SYNCGATE_BUILD_COMMIT");
    let commit = std::env::var("SYNCGATE_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Build again when HEAD moves: HEAD itself (a checkout) and the branch it names (a commit).
    let mut watched = vec!["HEAD".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    watched.push("packed-refs".into());
    for name in watched {
        // Only files that exist: cargo reruns the script every time for a missing one.
        if let Some(path) = git(&["rev-parse", "--git-path", &name]).filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=SYNCGATE_COMMIT={commit}");
}
