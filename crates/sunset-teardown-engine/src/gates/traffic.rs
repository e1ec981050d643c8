//! `no_traffic`: a Prometheus query (the legacy backend's request rate, its connections) stays
//! below a threshold at every step of the last `for`. Read as one range query, so a resumed run
//! judges the same window a running one would; a window without data never passes.

use sunset_plan::format::NoTrafficFile;

use crate::Error;
use crate::audit::AuditLog;
use crate::checks::Check;
use crate::gates::prometheus::Prometheus;
use crate::gates::report::timestamp;

/// Samples in the window: enough to see a burst, few enough for one answer.
const POINTS: f64 = 60.0;

pub(crate) async fn evaluate(
    traffic: &NoTrafficFile,
    audit: &AuditLog,
    now: f64,
) -> Result<Check, Error> {
    let hold = traffic.hold.0.as_secs_f64();
    let step = (hold / POINTS).max(1.0);
    let start = now - hold;
    let query = traffic.query.as_str();
    let below = traffic.below.0;
    let series = Prometheus::new(traffic.prometheus.as_str(), audit)?
        .query_range(query, start, now, step)
        .await?;
    let window = sunset_plan::format_duration(traffic.hold.0);
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let Some(first) = points.iter().map(|(at, _)| *at).reduce(f64::min) else {
        return Ok(Check::NotYet(format!(
            "`{query}` has no data in the last {window}: no data is not zero traffic"
        )));
    };
    if let Some((at, value)) = points
        .iter()
        .filter(|(_, value)| value.is_nan() || *value >= below)
        .max_by(|a, b| a.0.total_cmp(&b.0))
    {
        return Ok(Check::NotYet(format!(
            "`{query}` was {value} at {} (not below {below}) within the last {window}",
            timestamp(*at)
        )));
    }
    // The window must be covered from its start: a series that began a minute ago has not been
    // quiet for five.
    if first > start + step {
        return Ok(Check::NotYet(format!(
            "`{query}` has data only since {} of the last {window}",
            timestamp(first)
        )));
    }
    let peak = points.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max);
    Ok(Check::Holds(format!(
        "`{query}` stayed below {below} for {window} (peak {peak})"
    )))
}
