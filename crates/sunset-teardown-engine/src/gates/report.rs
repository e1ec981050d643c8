//! A metric parity report as people read it (Markdown, a row per metric) and as tools read it
//! (JSON), saved beside the audit log each time the gate is evaluated; `status` lists them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::gates::parity::{ParityReport, Verdict};

/// Where one evaluation's report was saved.
#[derive(Debug, Clone)]
pub(crate) struct Saved {
    pub markdown: PathBuf,
}

/// A saved report as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GateReport {
    pub name: String,
    pub verdict: String,
    pub metrics: usize,
    pub failing: Vec<String>,
    pub inconclusive: Vec<String>,
    pub markdown: PathBuf,
}

pub(crate) fn timestamp(unix: f64) -> String {
    #[allow(clippy::cast_possible_truncation, reason = "Unix seconds fit an i64")]
    let seconds = unix.floor() as i64;
    chrono::DateTime::from_timestamp(seconds, 0).map_or_else(
        || unix.to_string(),
        |at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

fn percent(difference: f64) -> String {
    if difference == 0.0 {
        "0".to_owned()
    } else {
        format!("{:.3} %", difference * 100.0)
    }
}

pub(crate) fn markdown(report: &ParityReport) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# metrics_match: {}\n", report.verdict.as_str());
    let _ = writeln!(text, "- legacy: {}", report.legacy);
    let _ = writeln!(text, "- new: {}", report.new);
    let _ = writeln!(
        text,
        "- window: {} to {}, every {} s\n",
        timestamp(report.start),
        timestamp(report.end),
        report.step
    );
    text.push_str("| metric | series | tolerance | worst difference | where | verdict |\n");
    text.push_str("| --- | ---: | ---: | ---: | --- | --- |\n");
    for metric in &report.metrics {
        let place = match &metric.worst {
            Some(worst) if worst.difference > 0.0 => format!(
                "`{}` at {}: legacy {}, new {}",
                worst.series,
                timestamp(worst.at),
                worst.legacy,
                worst.new
            ),
            _ => String::new(),
        };
        let place = match (&metric.note, place.is_empty()) {
            (Some(note), true) => note.clone(),
            (Some(note), false) => format!("{place}; {note}"),
            (None, _) => place,
        };
        let _ = writeln!(
            text,
            "| `{}` | {} | {} | {} | {} | {} |",
            metric.metric,
            metric.series,
            percent(metric.tolerance),
            metric
                .worst
                .as_ref()
                .map_or_else(|| "-".to_owned(), |w| percent(w.difference)),
            place.replace('|', "\\|"),
            metric.verdict.as_str()
        );
    }
    text
}

/// Writes `NAME.json` and `NAME.md` under `dir`, each written aside and renamed.
pub(crate) fn save(dir: &Path, name: &str, report: &ParityReport) -> Result<Saved, Error> {
    const WHAT: &str = "writing the gate report";
    std::fs::create_dir_all(dir).map_err(Error::io(WHAT, dir))?;
    let json = serde_json::to_vec_pretty(report).expect("a parity report serializes");
    let markdown_path = dir.join(format!("{name}.md"));
    for (path, bytes) in [
        (dir.join(format!("{name}.json")), json),
        (markdown_path.clone(), markdown(report).into_bytes()),
    ] {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, bytes).map_err(Error::io(WHAT, &partial))?;
        std::fs::rename(&partial, &path).map_err(Error::io(WHAT, &path))?;
    }
    Ok(Saved {
        markdown: markdown_path,
    })
}

/// One line for the step's output and the validation's last answer.
pub(crate) fn summary(report: &ParityReport, saved: &Saved) -> String {
    let at = format!("report: {}", saved.markdown.display());
    let series: usize = report.metrics.iter().map(|m| m.series).sum();
    let of = |verdict: Verdict| {
        report
            .metrics
            .iter()
            .filter(|m| m.verdict == verdict)
            .collect::<Vec<_>>()
    };
    match report.verdict {
        Verdict::Pass => format!(
            "metrics match: {} metrics, {series} series within tolerance ({at})",
            report.metrics.len()
        ),
        Verdict::Fail => {
            let failing = of(Verdict::Fail);
            let worst = failing
                .iter()
                .filter_map(|m| m.worst.as_ref().map(|w| (m, w)))
                .max_by(|a, b| a.1.difference.total_cmp(&b.1.difference));
            let first = match worst {
                Some((metric, worst)) => format!(
                    "`{}` differs by {} at `{}` ({}: legacy {}, new {})",
                    metric.metric,
                    percent(worst.difference),
                    worst.series,
                    timestamp(worst.at),
                    worst.legacy,
                    worst.new
                ),
                None => String::new(),
            };
            format!(
                "metrics differ: {first}; {} of {} metrics fail ({at})",
                failing.len(),
                report.metrics.len()
            )
        }
        Verdict::Inconclusive => {
            let inconclusive = of(Verdict::Inconclusive);
            let first = inconclusive.first().map_or_else(String::new, |m| {
                format!(
                    "`{}`: {}",
                    m.metric,
                    m.note.as_deref().unwrap_or("no data to compare")
                )
            });
            format!(
                "metrics inconclusive (missing data never passes): {first}; {} of {} metrics inconclusive ({at})",
                inconclusive.len(),
                report.metrics.len()
            )
        }
    }
}

/// The reports saved under `dir`, by name.
pub fn saved_reports(dir: &Path) -> Vec<GateReport> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut reports: Vec<GateReport> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            let json: serde_json::Value = serde_json::from_str(&text).ok()?;
            let names = |verdict: &str| -> Vec<String> {
                json["metrics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| m["verdict"] == verdict)
                    .filter_map(|m| m["metric"].as_str().map(str::to_owned))
                    .collect()
            };
            Some(GateReport {
                name: path.file_stem()?.to_string_lossy().into_owned(),
                verdict: json["verdict"].as_str()?.to_owned(),
                metrics: json["metrics"].as_array().map_or(0, Vec::len),
                failing: names("fail"),
                inconclusive: names("inconclusive"),
                markdown: path.with_extension("md"),
            })
        })
        .collect();
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    reports
}
