//! Build script: records the git revision the binary is built from, for `virtdns --version`
//! (`VIRTDNS_GIT_REV`). It is `git rev-parse --short HEAD` when this source tree is a git
//! checkout of its own, the `VIRTDNS_GIT_REV` environment variable when a packager sets it,
//! and "unknown" otherwise (a release tarball, or a tree unpacked inside another repository).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=VIRTDNS_GIT_REV");
    let rev = std::env::var("VIRTDNS_GIT_REV")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_rev)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VIRTDNS_GIT_REV={}", rev.trim());
}

/// The short revision of HEAD, when the manifest's folder is the top of a git work tree.
fn git_rev() -> Option<String> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let same = |a: &str, b: &str| {
        Path::new(a)
            .canonicalize()
            .ok()
            .zip(Path::new(b).canonicalize().ok())
            .is_some_and(|(a, b)| a == b)
    };
    if !same(&top, &manifest) {
        return None;
    }
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the ref it points to (a commit).
    for path in ["HEAD", "packed-refs"] {
        watch(git(&["rev-parse", "--git-path", path]));
    }
    if let Some(name) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", &name]));
    }
    git(&["rev-parse", "--short", "HEAD"])
}

/// Reruns this script when `path` changes; a path that does not exist is left out, as cargo
/// would otherwise rerun the script on every build.
fn watch(path: Option<String>) {
    if let Some(p) = path.filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
