//! Prometheus metrics on `--metrics-addr`: a minimal HTTP/1 endpoint that answers every request
//! with the text exposition format. Hand-written because one GET handler does not justify an
//! HTTP server dependency in the toolkit.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::stats::{DURATION_BUCKETS, Stats};

/// Renders the metrics in the Prometheus text format.
pub fn render(run: &str, stats: &Stats) -> String {
    let run = run.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{run=\"{run}\"}} {value}"
        );
    };
    counter(
        "sunset_backfill_rows_processed_total",
        "Rows visited by committed batches.",
        "counter",
        Stats::get(&stats.rows_seen),
    );
    counter(
        "sunset_backfill_rows_changed_total",
        "Rows whose discriminator committed batches changed.",
        "counter",
        Stats::get(&stats.rows_changed),
    );
    counter(
        "sunset_backfill_batches_total",
        "Committed batches.",
        "counter",
        Stats::get(&stats.batches),
    );
    counter(
        "sunset_backfill_retries_total",
        "Batches retried after a lock timeout, deadlock or serialization failure.",
        "counter",
        Stats::get(&stats.retries),
    );
    counter(
        "sunset_backfill_errors_total",
        "Errors that stopped a worker.",
        "counter",
        Stats::get(&stats.errors),
    );
    counter(
        "sunset_backfill_rows_total",
        "Rows in scope of the run.",
        "gauge",
        Stats::get(&stats.total_rows),
    );
    counter(
        "sunset_backfill_batch_size",
        "The current batch size.",
        "gauge",
        Stats::get(&stats.batch_size),
    );
    let throttle = stats.throttle();
    counter(
        "sunset_backfill_throttled",
        "1 while the run waits (operator pause or a health signal).",
        "gauge",
        u64::from(throttle.is_some()),
    );
    let (buckets, sum) = *stats.durations.lock().expect("stats lock");
    let name = "sunset_backfill_batch_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Duration of committed batches.\n# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (bound, count) in DURATION_BUCKETS
        .iter()
        .map(ToString::to_string)
        .chain(["+Inf".to_owned()])
        .zip(buckets)
    {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{run=\"{run}\",le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_sum{{run=\"{run}\"}} {sum}\n{name}_count{{run=\"{run}\"}} {cumulative}"
    );
    out
}

/// Binds `addr` and serves the metrics until the task is dropped. Binding errors are returned so
/// a bad `--metrics-addr` fails before the run starts.
pub async fn serve(
    addr: SocketAddr,
    run: String,
    stats: Arc<Stats>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = render(&run, &stats);
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    }))
}
