//! Records the git commit the binary is built from, for `userstate_build_info` on /metrics:
//! `USERSTATE_GIT_COMMIT` when the builder sets it (a build from a source archive), else
//! `git rev-parse HEAD` when git and a repository are there, else nothing (`unknown`).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).ok())
        .flatten()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=USERSTATE_GIT_COMMIT");
    let commit = std::env::var("USERSTATE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]));
    // Built again when HEAD moves (a commit, a checkout): HEAD itself and the branch it names.
    // (Only paths that exist: a missing one would run this script on every build.)
    let branch = git(&["rev-parse", "--symbolic-full-name", "HEAD"]);
    let mut watched: Vec<String> = ["HEAD"]
        .into_iter()
        .chain(branch.as_deref())
        .filter_map(|path| git(&["rev-parse", "--git-path", path]))
        .collect();
    if let Some(dir) = git(&["rev-parse", "--git-common-dir"]) {
        watched.push(format!("{dir}/packed-refs"));
    }
    for file in watched {
        if std::path::Path::new(&file).exists() {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if let Some(commit) = commit {
        println!("cargo:rustc-env=USERSTATE_GIT_COMMIT={commit}");
    }
}
