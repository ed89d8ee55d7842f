//! The readable table `userstate bench` prints without `--json`.

use crate::{FloorMode, FloorReport, RunReport};

/// Prints runs and floors as an aligned table on stdout.
pub fn print_table(runs: &[RunReport], floors: &[FloorReport]) {
    println!(
        "{:<10} {:<17} {:>7} {:>5} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7} {:>8} {:>10} {:>8}",
        "store",
        "workload",
        "users",
        "conc",
        "commands",
        "commands/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "errors",
        "rejected",
        "lag p99 µs",
        "durable"
    );
    for r in runs {
        println!(
            "{:<10} {:<17} {:>7} {:>5} {:>10} {:>12.0} {:>9.0} {:>9.0} {:>9.0} {:>7} {:>8} {:>10.0} {:>8}",
            r.store, r.workload, r.users, r.concurrency, r.commands, r.commands_per_s, r.p50_us,
            r.p99_us, r.p999_us, r.errors, r.rejected, r.projection_lag_p99_us, r.durable
        );
        if r.reads > 0 {
            println!("{:<10} {:<17} reads/s {:.0}", "", "", r.reads_per_s);
        }
    }
    for f in floors {
        println!(
            "fsync floor: {:>3} records/sync {:<8} -> {:>10.0} records/s ({:.0} syncs/s, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs)",
            f.records_per_sync,
            match f.mode {
                FloorMode::Append => "append",
                FloorMode::InPlace => "in-place",
            },
            f.records_per_s,
            f.syncs_per_s,
            f.sync_p50_us,
            f.sync_p99_us,
            f.sync_max_us
        );
    }
}
