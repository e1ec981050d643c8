//! The progress display every binary shares, on stderr: bars on a TTY, a plain line every few
//! seconds otherwise, and with `--json` a `progress` event on stdout each second instead. Rates
//! read as people say them (`83.5k rows/s`, `112.4 MiB/s`), and a note (the throttle reason)
//! rides on the bar and the line.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::output::{emit, report_error};

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Rows,
    Bytes,
}

impl Unit {
    /// `1.2k rows`, `3.4 MiB`.
    pub fn amount(self, value: f64) -> String {
        match self {
            Unit::Rows => format!("{} rows", human_count(value)),
            Unit::Bytes => human_bytes(value),
        }
    }

    /// `83.5k rows/s`, `112.4 MiB/s`.
    pub fn rate(self, per_second: f64) -> String {
        format!("{}/s", self.amount(per_second))
    }
}

/// One counter shown: a bar of its own on a TTY, a part of the line otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    pub name: &'static str,
    pub unit: Unit,
}

/// What the command reports at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// One value per meter, in order.
    pub values: Vec<u64>,
    /// What the first meter is heading for (0 while unknown); the others share it.
    pub total: u64,
    /// A note for the operator, such as why the run is throttled.
    pub note: Option<String>,
    /// The `--json` event's fields (an object); `"event": "progress"` is added.
    pub event: serde_json::Value,
}

const LINE_EVERY: Duration = Duration::from_secs(5);
const EVENT_EVERY: Duration = Duration::from_secs(1);

/// The display of one command.
pub struct Progress {
    meters: Vec<Meter>,
    mode: Mode,
}

enum Mode {
    Bars {
        _multi: MultiProgress,
        bars: Vec<ProgressBar>,
        /// Whether a sample with any progress was shown: the first one may start far from zero
        /// (a resumed run reads its progress once it has connected), which is not a rate.
        started: bool,
    },
    Lines {
        last: Instant,
        /// The values of the last line, or of the first sample with progress (the baseline of
        /// the first rate); zeros before that.
        previous: Vec<u64>,
    },
    Events {
        last: Option<Instant>,
    },
}

impl Progress {
    /// Bars when stderr is a terminal, lines when it is not, events when `json`.
    pub fn new(meters: Vec<Meter>, json: bool) -> Progress {
        let mode = if json {
            Mode::Events { last: None }
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
            let bars = meters
                .iter()
                .map(|meter| {
                    let bar = multi.add(ProgressBar::new(0));
                    bar.set_style(bar_style(meter.unit, meters.len() > 1));
                    bar.set_prefix(meter.name);
                    bar
                })
                .collect();
            Mode::Bars {
                _multi: multi,
                bars,
                started: false,
            }
        } else {
            Mode::Lines {
                last: Instant::now(),
                previous: vec![0; meters.len()],
            }
        };
        Progress { meters, mode }
    }

    /// Shows `sample` as the mode wants; cheap to call often (lines and events are throttled).
    pub fn show(&mut self, sample: Sample) {
        match &mut self.mode {
            Mode::Bars { bars, started, .. } => {
                let note = sample.note.unwrap_or_default();
                for (bar, value) in bars.iter().zip(&sample.values) {
                    // Compressed and uploaded bytes stay below the input's total: their bars
                    // grow past it only when the estimate was low.
                    bar.set_length(sample.total.max(*value));
                    bar.set_position(*value);
                    if !*started {
                        bar.reset_eta();
                    }
                    bar.set_message(note.clone());
                }
                *started = *started || sample.values.iter().any(|value| *value > 0);
            }
            Mode::Lines { last, previous } => {
                // The baseline of the first rate is the first sample with any progress (lines
                // of zeros keep coming every few seconds until then).
                let progressed = sample.values.iter().any(|value| *value > 0);
                if progressed && previous.iter().all(|value| *value == 0) {
                    previous.clone_from(&sample.values);
                    *last = Instant::now();
                    return;
                }
                if last.elapsed() < LINE_EVERY {
                    return;
                }
                let seconds = last.elapsed().as_secs_f64();
                *last = Instant::now();
                report_error(&line(&self.meters, &sample, previous, seconds));
                previous.clone_from(&sample.values);
            }
            Mode::Events { last } => {
                if last.is_some_and(|at| at.elapsed() < EVENT_EVERY) {
                    return;
                }
                *last = Some(Instant::now());
                emit(&event("progress", sample.event).to_string());
            }
        }
    }

    /// Samples `sample` five times a second on a task of its own until the returned guard is
    /// stopped or dropped.
    pub fn spawn(
        meters: Vec<Meter>,
        json: bool,
        mut sample: impl FnMut() -> Sample + Send + 'static,
    ) -> Display {
        let task = tokio::spawn(async move {
            // Dropped with the task: bars stay on the terminal as last drawn.
            let mut progress = Progress::new(meters, json);
            loop {
                progress.show(sample());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Display(task)
    }
}

/// A [`Progress`] running on its own task; dropping it stops the display.
pub struct Display(tokio::task::JoinHandle<()>);

impl Display {
    /// Stops the display now (as dropping it would), where the end of the work is.
    pub fn stop(self) {}
}

impl Drop for Display {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A JSON event: `{"event": name, ...fields}` (`fields` other than an object are left out).
pub fn event(name: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("event".to_owned(), serde_json::Value::from(name));
    if let serde_json::Value::Object(fields) = fields {
        object.extend(fields);
    }
    serde_json::Value::Object(object)
}

fn bar_style(unit: Unit, named: bool) -> ProgressStyle {
    let color = std::env::var_os("NO_COLOR").is_none();
    let bar = if color {
        "{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue}"
    } else {
        "{spinner} [{elapsed_precise}] {wide_bar}"
    };
    let prefix = if named { "{prefix:>10} " } else { "" };
    let template = format!("{prefix}{bar} {{done}}/{{todo}} {{rate}} eta {{eta}} {{msg}}");
    ProgressStyle::with_template(&template)
        .expect("a valid template")
        .with_key(
            "done",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&unit.amount(state.pos() as f64));
            },
        )
        .with_key(
            "todo",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&unit.amount(state.len().unwrap_or(0) as f64));
            },
        )
        .with_key(
            "rate",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&unit.rate(state.per_sec()));
            },
        )
}

/// `rows 12.3k rows/100.0k rows (12.3%), 2.1k rows/s (replica lag 4.2s > 2s)`.
fn line(meters: &[Meter], sample: &Sample, previous: &[u64], seconds: f64) -> String {
    let mut text = String::new();
    for (index, (meter, value)) in meters.iter().zip(&sample.values).enumerate() {
        if index > 0 {
            text.push_str("; ");
        }
        let before = previous.get(index).copied().unwrap_or(0);
        let rate = value.saturating_sub(before) as f64 / seconds.max(0.001);
        let _ = write!(text, "{} {}", meter.name, meter.unit.amount(*value as f64));
        if index == 0 && sample.total > 0 {
            let percent = (*value as f64 * 100.0 / sample.total as f64).min(100.0);
            let _ = write!(
                text,
                "/{} ({percent:.1}%)",
                meter.unit.amount(sample.total as f64)
            );
        }
        let _ = write!(text, ", {}", meter.unit.rate(rate));
    }
    if let Some(note) = &sample.note {
        let _ = write!(text, " ({note})");
    }
    text
}

/// `950`, `83.5k`, `12.0M`, `3.1G`.
pub fn human_count(value: f64) -> String {
    let units = [(1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, suffix) in units {
        if value >= scale {
            return format!("{:.1}{suffix}", value / scale);
        }
    }
    format!("{value:.0}")
}

/// `512 B`, `1.5 KiB`, `112.4 MiB`, `2.0 GiB`.
pub fn human_bytes(value: f64) -> String {
    let units = [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (scale, suffix) in units {
        if value >= scale as f64 {
            return format!("{:.1} {suffix}", value / scale as f64);
        }
    }
    format!("{value:.0} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_rates_read_as_people_say_them() {
        assert_eq!(Unit::Rows.rate(83_531.884_1), "83.5k rows/s");
        assert_eq!(Unit::Rows.amount(950.0), "950 rows");
        assert_eq!(Unit::Rows.amount(12_000_000.0), "12.0M rows");
        assert_eq!(Unit::Bytes.rate(117_860_000.0), "112.4 MiB/s");
        assert_eq!(Unit::Bytes.amount(512.0), "512 B");
        assert_eq!(Unit::Bytes.amount(3.0 * (1u64 << 30) as f64), "3.0 GiB");
    }

    #[test]
    fn a_line_has_each_meter_its_rate_and_the_note() {
        let meters = [
            Meter {
                name: "read",
                unit: Unit::Bytes,
            },
            Meter {
                name: "uploaded",
                unit: Unit::Bytes,
            },
        ];
        let sample = Sample {
            values: vec![60 << 20, 10 << 20],
            total: 120 << 20,
            note: Some("waiting for parts".into()),
            ..Sample::default()
        };
        expect_test::expect![[r#"read 60.0 MiB/120.0 MiB (50.0%), 12.0 MiB/s; uploaded 10.0 MiB, 2.0 MiB/s (waiting for parts)"#]]
            .assert_eq(&line(&meters, &sample, &[0, 0], 5.0));
    }
}
