//! `no_traffic`: the legacy backend's traffic stays below a threshold for the whole of the last
//! `for`. From Prometheus, a query read as one range query (a window without data never passes:
//! no data is not zero traffic). From CloudWatch, an Application Load Balancer's one-minute sums
//! of `RequestCount` or `ActiveConnectionCount`; CloudWatch reports no datapoint for a minute
//! without requests, so the load balancer is looked up first: a name that names nothing is an
//! error, never a quiet load balancer.

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use sunset_plan::format::{CloudWatchTrafficFile, NoTrafficFile};

use crate::Error;
use crate::checks::Check;
use crate::cloud::Cloud;
use crate::gates::prometheus::Prometheus;
use crate::gates::report::timestamp;

/// Samples in the window: enough to see a burst, few enough for one answer.
const POINTS: f64 = 60.0;

/// CloudWatch's resolution for load balancer metrics.
const PERIOD_SECONDS: i32 = 60;

pub(crate) async fn evaluate(
    traffic: &NoTrafficFile,
    cloud: &Cloud,
    now: f64,
) -> Result<Check, Error> {
    match (&traffic.prometheus, &traffic.query, &traffic.cloudwatch) {
        (Some(prometheus), Some(query), _) => {
            from_prometheus(traffic, prometheus.as_str(), query.as_str(), cloud, now).await
        }
        (_, _, Some(cloudwatch)) => from_cloudwatch(traffic, cloudwatch, cloud, now).await,
        _ => Err(Error::Internal(
            "`no_traffic` without a Prometheus query or a CloudWatch metric".to_owned(),
        )),
    }
}

async fn from_prometheus(
    traffic: &NoTrafficFile,
    prometheus: &str,
    query: &str,
    cloud: &Cloud,
    now: f64,
) -> Result<Check, Error> {
    let hold = traffic.hold.0.as_secs_f64();
    let step = (hold / POINTS).max(1.0);
    let start = now - hold;
    let below = traffic.below.0;
    let series = Prometheus::new(prometheus, &cloud.audit)?
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

async fn from_cloudwatch(
    traffic: &NoTrafficFile,
    source: &CloudWatchTrafficFile,
    cloud: &Cloud,
    now: f64,
) -> Result<Check, Error> {
    let wanted = source.load_balancer.as_str();
    let balancers = cloud.load_balancers().await?;
    let balancer = balancers
        .iter()
        .find(|lb| lb.arn == wanted || lb.name == wanted)
        .ok_or_else(|| {
            Error::Probe(format!(
                "no load balancer `{wanted}`: its traffic can not be read (CloudWatch has no data for what does not exist)"
            ))
        })?;
    // The dimension is the ARN's tail: `app/NAME/ID`.
    let dimension = balancer
        .arn
        .split_once(":loadbalancer/")
        .map(|(_, tail)| tail.to_owned())
        .filter(|tail| tail.starts_with("app/"))
        .ok_or_else(|| {
            Error::BadInput(format!(
                "`{wanted}` is not an Application Load Balancer: only those report {} (AWS/ApplicationELB)",
                source.metric.as_str()
            ))
        })?;
    #[allow(clippy::cast_possible_truncation, reason = "Unix seconds fit an i64")]
    let (end, start) = (now as i64, (now - traffic.hold.0.as_secs_f64()) as i64);
    let request = cloud
        .cloudwatch
        .get_metric_statistics()
        .namespace("AWS/ApplicationELB")
        .metric_name(source.metric.as_str())
        .dimensions(
            Dimension::builder()
                .name("LoadBalancer")
                .value(&dimension)
                .build(),
        )
        .start_time(DateTime::from_secs(start))
        .end_time(DateTime::from_secs(end))
        .period(PERIOD_SECONDS)
        .statistics(Statistic::Sum);
    let answer = cloud
        .call(
            "cloudwatch",
            "GetMetricStatistics",
            false,
            std::slice::from_ref(&balancer.arn),
            request.send(),
        )
        .await?;
    let window = sunset_plan::format_duration(traffic.hold.0);
    let below = traffic.below.0;
    let metric = source.metric.as_str();
    let busiest = answer
        .datapoints()
        .iter()
        .filter_map(|d| Some((d.timestamp()?.secs(), d.sum()?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    Ok(match busiest {
        #[allow(clippy::cast_precision_loss, reason = "Unix seconds")]
        Some((at, sum)) if sum >= below => Check::NotYet(format!(
            "{metric} of {} was {sum} in the minute from {} (not below {below}) within the last {window}",
            balancer.name,
            timestamp(at as f64)
        )),
        Some((_, sum)) => Check::Holds(format!(
            "{metric} of {} stayed below {below} for {window} (busiest minute {sum})",
            balancer.name
        )),
        None => Check::Holds(format!(
            "{metric} of {} had no datapoint in the last {window}: no requests",
            balancer.name
        )),
    })
}
