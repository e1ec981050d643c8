//! What `--metrics-addr` serves while `create`, `verify` and `restore` run: bytes through each
//! stage and parts uploaded, labelled with the command and the archive.

use std::sync::atomic::{AtomicU64, Ordering};

use sunset_archive_engine::CreateStats;
use sunset_cli::metrics::{Exposition, Kind};

/// `create`'s stages: bytes read from the sources, compressed, held by the destination.
pub fn render_create(archive: &str, stats: &CreateStats) -> String {
    let mut out = Exposition::new(&[("command", "create"), ("archive", archive)]);
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
    out.single(
        "sunset_archive_read_bytes_total",
        "Source bytes read (files and table exports).",
        Kind::Counter,
        get(&stats.read),
    );
    out.single(
        "sunset_archive_source_bytes",
        "The sources' estimated size (file sizes and table sizes), for progress.",
        Kind::Gauge,
        get(&stats.read_total),
    );
    out.single(
        "sunset_archive_compressed_bytes_total",
        "Bytes out of the compressor.",
        Kind::Counter,
        get(&stats.compressed),
    );
    out.single(
        "sunset_archive_uploaded_bytes_total",
        "Archive bytes the destination holds, counting parts kept from an interrupted run.",
        Kind::Counter,
        get(&stats.uploaded),
    );
    out.single(
        "sunset_archive_parts_uploaded_total",
        "Parts the destination acknowledged in this run.",
        Kind::Counter,
        get(&stats.parts_uploaded),
    );
    out.single(
        "sunset_archive_parts_reused_total",
        "Parts kept from an interrupted run (their hashes checked, not sent again).",
        Kind::Counter,
        get(&stats.parts_reused),
    );
    out.finish()
}

/// `verify` and `restore`: archive bytes read back.
pub fn render_read(command: &str, archive: &str, read: &AtomicU64) -> String {
    let mut out = Exposition::new(&[("command", command), ("archive", archive)]);
    out.single(
        "sunset_archive_read_bytes_total",
        "Archive bytes read back from the destination.",
        Kind::Counter,
        read.load(Ordering::Relaxed) as f64,
    );
    out.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn create_serves_each_stage_and_the_parts() {
        let stats = sunset_archive_engine::CreateStats::default();
        stats
            .parts_uploaded
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let text = super::render_create("s3://b/a/x", &stats);
        assert!(text.contains(
            "sunset_archive_parts_uploaded_total{command=\"create\",archive=\"s3://b/a/x\"} 2"
        ));
        for name in [
            "read_bytes_total",
            "source_bytes",
            "compressed_bytes_total",
            "uploaded_bytes_total",
            "parts_reused_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE sunset_archive_{name} ")),
                "{name}"
            );
        }
    }
}
