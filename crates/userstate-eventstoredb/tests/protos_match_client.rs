//! The protos the test server is generated from (`protos/`) are the ones shipped inside the
//! `kurrentdb` crate this workspace locks, byte for byte.

use std::io::Write;
use std::path::{Path, PathBuf};

fn locked_kurrentdb_version(root: &Path) -> Option<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"kurrentdb\"" {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_string());
        }
    }
    None
}

fn shipped_protos(version: &str) -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let registries = std::fs::read_dir(cargo_home.join("registry/src")).ok()?;
    registries
        .filter_map(Result::ok)
        .map(|r| r.path().join(format!("kurrentdb-{version}/protos")))
        .find(|p| p.is_dir())
}

#[test]
fn vendored_protos_are_the_clients() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.join("../..");
    let Some(version) = locked_kurrentdb_version(&root) else {
        panic!("kurrentdb is not in Cargo.lock");
    };
    let Some(shipped) = shipped_protos(&version) else {
        // Straight to stderr, past the test harness's capture: never skipped silently.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: kurrentdb {version} sources not found under $CARGO_HOME/registry/src \
             (vendored or offline build); cannot compare the protos"
        );
        return;
    };
    let vendored = crate_dir.join("protos");
    let mut compared = 0;
    for entry in std::fs::read_dir(&vendored).expect("protos/ exists") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().expect("file name");
        let ours = std::fs::read(&path).expect("read vendored proto");
        let theirs = std::fs::read(shipped.join(name))
            .unwrap_or_else(|e| panic!("{name:?} is not shipped with kurrentdb {version}: {e}"));
        assert!(
            ours == theirs,
            "{name:?} differs from kurrentdb {version}'s"
        );
        compared += 1;
    }
    assert_eq!(compared, 5, "streams, shared, status, code, serverfeatures");
}
