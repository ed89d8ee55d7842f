//! deploy/: the systemd unit passes `systemd-analyze verify` with the real binary as its
//! `ExecStart`, keeps systemd's exposure score low (`systemd-analyze security --offline`), and
//! allows more descriptors than the default connection cap needs; the example config file is
//! one the binary accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_userstate");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn unit() -> String {
    std::fs::read_to_string(repo().join("deploy/userstate.service")).unwrap()
}

/// The unit with its `ExecStart` pointing at the binary under test, in a directory of its own.
fn unit_for_test() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("userstate.service");
    std::fs::write(&path, unit().replace("/usr/local/bin/userstate", BIN)).unwrap();
    (dir, path)
}

fn systemd_analyze() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
    }
    found
}

#[test]
fn the_unit_verifies() {
    if !systemd_analyze() {
        return;
    }
    let (_dir, path) = unit_for_test();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

#[test]
fn the_unit_is_hardened() {
    if !systemd_analyze() {
        return;
    }
    let (_dir, path) = unit_for_test();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for userstate.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{text}"));
    // 0 is fully locked down, 10 not at all; what is left is the network a server needs.
    assert!(score <= 1.5, "exposure {score}:\n{text}");
}

#[test]
fn the_descriptor_limit_covers_the_connection_cap() {
    let unit = unit();
    let limit: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE")
        .parse()
        .unwrap();
    let config = std::fs::read_to_string(repo().join("deploy/userstate.toml")).unwrap();
    let config: toml::Table = config.parse().unwrap();
    let cap = config["serve"]["max-connections"].as_integer().unwrap() as u64;
    assert!(
        limit >= cap + 100,
        "LimitNOFILE={limit}, max-connections {cap}"
    );
    for option in [
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/userstate",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(option)), "{option}");
    }
}

#[test]
fn the_example_config_is_accepted() {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(repo().join("deploy/userstate.toml"))
        .args(["rebuild", "--store", "memory"])
        .env_remove("USERSTATE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
