//! The disk's floor: how many records per second `write` + `fdatasync` allows, measured in the
//! directory the file store uses, in the same run as the store's figures (BENCH.md).
//!
//! Two ways, because the file system charges them differently: appending (each sync must also
//! commit the file's new size) and overwriting zeros written beforehand, which is how the file
//! store writes (ADR 0007).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Size of one record in the floor measurement (BENCH.md: 200 bytes).
pub const RECORD_BYTES: usize = 200;

/// Bytes of zeros written (and synced) before an in-place measurement; writes wrap around.
const IN_PLACE_FILE: usize = 16 << 20;

/// How the floor's writes reach the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloorMode {
    /// Each batch appended at the end of the file.
    Append,
    /// Each batch written over zeros written and synced beforehand (what the file store does).
    InPlace,
}

/// BENCH.md's `{"store":"fsync-floor",…}` line.
#[derive(Clone, Debug, Serialize)]
pub struct FloorReport {
    /// Always `fsync-floor`.
    pub store: &'static str,
    /// Records written before each `fdatasync`.
    pub records_per_sync: usize,
    /// Appending or writing in place.
    pub mode: FloorMode,
    /// Records made durable per second.
    pub records_per_s: f64,
    /// `fdatasync` calls per second.
    pub syncs_per_s: f64,
    /// Median time of one write + `fdatasync`, microseconds.
    pub sync_p50_us: f64,
    /// 99th percentile of the same: the disk's own tail, which no store's p99 can beat when
    /// every answer waits for one sync.
    pub sync_p99_us: f64,
    /// The slowest write + `fdatasync` of the run, microseconds.
    pub sync_max_us: f64,
}

/// Writes batches of `records_per_sync` 200-byte records to a scratch file in `dir` (`mode`
/// says how), each batch followed by one `fdatasync`, for about `duration`. The file is removed
/// afterwards.
pub fn fsync_floor(
    dir: &Path,
    records_per_sync: usize,
    mode: FloorMode,
    duration: Duration,
) -> io::Result<FloorReport> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(".fsync-floor-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let batch = vec![0x5au8; RECORD_BYTES * records_per_sync.max(1)];
    let size = IN_PLACE_FILE.max(batch.len());
    if mode == FloorMode::InPlace {
        file.write_all(&vec![0u8; size])?;
        file.sync_all()?;
    }
    let mut times = Vec::new();
    let mut at = 0;
    let start = Instant::now();
    while start.elapsed() < duration || times.is_empty() {
        let t = Instant::now();
        match mode {
            FloorMode::Append => file.write_all(&batch)?,
            FloorMode::InPlace => {
                if at + batch.len() > size {
                    at = 0;
                }
                file.write_all_at(&batch, at as u64)?;
                at += batch.len();
            }
        }
        file.sync_data()?;
        times.push(t.elapsed());
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    times.sort();
    let syncs = times.len() as f64;
    Ok(FloorReport {
        store: "fsync-floor",
        records_per_sync,
        mode,
        records_per_s: syncs * records_per_sync as f64 / elapsed,
        syncs_per_s: syncs / elapsed,
        sync_p50_us: times[times.len() / 2].as_secs_f64() * 1e6,
        sync_p99_us: times[(times.len() * 99 / 100).min(times.len() - 1)].as_secs_f64() * 1e6,
        sync_max_us: times[times.len() - 1].as_secs_f64() * 1e6,
    })
}
