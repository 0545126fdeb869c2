//! Sets `SWITCHYARD_COMMIT` for the crate: the commit `switchyard --version` shows.
//!
//! From the `SWITCHYARD_COMMIT` environment variable when set (a container build has no `.git`
//! and passes it as a build argument), else `git rev-parse --short=12 HEAD`, else `unknown`.
//! There is no `-dirty` suffix: knowing whether the work tree changed would mean running this
//! script on every edit of every file, which would rebuild the crate each time; release builds
//! come from clean checkouts anyway.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SWITCHYARD_COMMIT");
    let commit = match std::env::var("SWITCHYARD_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => git_commit().unwrap_or_else(|| "unknown".to_owned()),
    };
    assert!(
        commit.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')),
        "invalid SWITCHYARD_COMMIT '{commit}': use letters, digits and . - _ +"
    );
    println!("cargo:rustc-env=SWITCHYARD_COMMIT={commit}");
}

/// The checked-out commit, and `rerun-if-changed` lines for the files a new commit or another
/// checkout changes (so the commit is never stale, and the script does not run on every build).
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let git_dir = PathBuf::from(git(&["rev-parse", "--absolute-git-dir"])?);
    let common_dir = git(&["rev-parse", "--git-common-dir"]).map_or_else(|| git_dir.clone(), |dir| absolute(&dir));
    // A checkout of another branch or commit rewrites HEAD.
    watch(&git_dir.join("HEAD"));
    // A commit on the branch rewrites its ref: a loose file, or (after `git pack-refs`) a line of
    // packed-refs, until the next commit writes a loose file again in refs/heads.
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let loose = common_dir.join(&branch);
        if loose.exists() {
            watch(&loose);
        } else {
            watch(&common_dir.join("refs/heads"));
        }
        watch(&common_dir.join("packed-refs"));
    }
    Some(commit)
}

/// Cargo runs the script again whenever a watched path is missing, so only existing ones are.
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// `--git-common-dir` may answer relative to the crate's directory, where git runs.
fn absolute(dir: &str) -> PathBuf {
    let path = PathBuf::from(dir);
    if path.is_absolute() {
        return path;
    }
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_default();
    let joined = manifest_dir.join(path);
    joined.canonicalize().unwrap_or(joined)
}

/// One line of git's answer, or `None` when git is missing or this is not a checkout.
fn git(args: &[&str]) -> Option<String> {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let output = Command::new("git").args(args).current_dir(manifest_dir).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let line = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}
