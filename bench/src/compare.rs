//! The side-by-side table of `bench/compare.sh`: one row per server, built from the JSON
//! reports of its `idle`, `throughput` and `latency` runs, each figure also as a ratio to the
//! first row (kith on SQLite).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::error::BenchError;

/// One server's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The server, as the table names it.
    pub label: String,
    /// `throughput` run: messages/s.
    pub throughput: Option<f64>,
    /// `throughput` run: lost messages (should be 0).
    pub lost: Option<u64>,
    /// `latency` run: the rate it ran at.
    pub latency_rate: Option<String>,
    /// `latency` run: p50, p90, p99, p99.9, max in ms.
    pub latency: Option<[f64; 5]>,
    /// `idle` run: server RSS per connection, KiB.
    pub kib_per_connection: Option<f64>,
    /// `throughput` run: server CPU seconds per 1,000 messages.
    pub cpu_per_1000: Option<f64>,
}

fn read(dir: &Path, name: &str) -> Result<Option<Value>, BenchError> {
    let path = dir.join(format!("{name}.json"));
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(BenchError::io(&path))?;
    serde_json::from_str(&text).map(Some).map_err(|e| BenchError::Config(format!("{}: {e}", path.display())))
}

impl Row {
    /// Reads `idle.json`, `throughput.json` and `latency.json` from `dir` (any may be missing).
    ///
    /// # Errors
    /// [`BenchError`] when a file exists but cannot be read or parsed.
    pub fn from_dir(label: &str, dir: &Path) -> Result<Self, BenchError> {
        let mut row = Self { label: label.to_owned(), ..Self::default() };
        if let Some(idle) = read(dir, "idle")? {
            row.kib_per_connection = idle["server"]["rssPerConnectionBytes"].as_f64().map(|b| b / 1024.0);
        }
        if let Some(run) = read(dir, "throughput")? {
            row.throughput = run["throughput"].as_f64();
            row.lost = run["lost"].as_u64();
            row.cpu_per_1000 = run["server"]["cpuSecondsPer1000Messages"].as_f64();
        }
        if let Some(run) = read(dir, "latency")? {
            let l = &run["latencyMs"];
            row.latency_rate = run["rate"].as_str().map(str::to_owned);
            row.latency = Some(["p50", "p90", "p99", "p999", "max"].map(|k| l[k].as_f64().unwrap_or(f64::NAN)));
        }
        Ok(row)
    }
}

/// A figure and its ratio to the baseline's.
fn cell(value: Option<f64>, baseline: Option<f64>, digits: usize) -> String {
    match (value, baseline) {
        (Some(v), Some(b)) if b > 0.0 && v.is_finite() => format!("{v:.digits$} ({:.2}×)", v / b),
        (Some(v), _) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".to_owned(),
    }
}

/// The markdown table; ratios are to the first row.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    let rate = rows.iter().find_map(|r| r.latency_rate.clone()).unwrap_or_else(|| "?".into());
    let _ = writeln!(
        out,
        "| server | throughput (msg/s) | lost | p50 ms @ {rate} | p90 ms | p99 ms | p99.9 ms | max ms | RSS per idle connection (KiB) | CPU s per 1,000 msgs |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = rows.first().cloned().unwrap_or_default();
    for row in rows {
        let lat = |i: usize| row.latency.map(|l| l[i]);
        let base_lat = |i: usize| base.latency.map(|l| l[i]);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            cell(row.throughput, base.throughput, 0),
            row.lost.map_or_else(|| "–".to_owned(), |l| l.to_string()),
            cell(lat(0), base_lat(0), 2),
            cell(lat(1), base_lat(1), 2),
            cell(lat(2), base_lat(2), 2),
            cell(lat(3), base_lat(3), 2),
            cell(lat(4), base_lat(4), 2),
            cell(row.kib_per_connection, base.kib_per_connection, 1),
            cell(row.cpu_per_1000, base.cpu_per_1000, 3),
        );
    }
    out
}

/// One line of the targets table: what the benchmark issue asks of kith and what was measured.
struct Target {
    scenario: &'static str,
    file: &'static str,
    what: &'static str,
    goal: &'static str,
    measured: fn(&Value) -> Option<(String, bool)>,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_f64()
}

const TARGETS: &[Target] = &[
    Target {
        scenario: "idle",
        file: "idle-sqlite",
        what: "connections held",
        goal: "19,000",
        measured: |v| {
            let held = num(v, &["connections", "established"])? - num(v, &["connections", "disconnected"])?;
            Some((format!("{held:.0}"), held >= 19_000.0))
        },
    },
    Target {
        scenario: "idle",
        file: "idle-sqlite",
        what: "node RSS per connection",
        goal: "≤ 8 KiB",
        measured: |v| {
            let kib = num(v, &["server", "rssPerConnectionBytes"])? / 1024.0;
            Some((format!("{kib:.1} KiB"), kib <= 8.0))
        },
    },
    Target {
        scenario: "throughput",
        file: "throughput-sqlite",
        what: "durable messages/s, SQLite",
        goal: "≥ 20,000",
        measured: |v| {
            let t = num(v, &["throughput"])?;
            Some((format!("{t:.0}"), t >= 20_000.0 && num(v, &["lost"])? == 0.0))
        },
    },
    Target {
        scenario: "throughput",
        file: "throughput-postgres",
        what: "durable messages/s, PostgreSQL",
        goal: "≥ 15,000",
        measured: |v| {
            let t = num(v, &["throughput"])?;
            Some((format!("{t:.0}"), t >= 15_000.0 && num(v, &["lost"])? == 0.0))
        },
    },
    Target {
        scenario: "latency",
        file: "latency-sqlite",
        what: "rate reached (asked 5,000/s, 10,000 clients)",
        goal: "5,000/s",
        measured: |v| {
            let t = num(v, &["throughput"])?;
            Some((format!("{t:.0}/s"), t >= 4_900.0))
        },
    },
    Target {
        scenario: "latency",
        file: "latency-sqlite",
        what: "send→receive p50 / p99 / p99.9",
        goal: "≤ 2 / 10 / 25 ms",
        measured: |v| {
            let l = |k| num(v, &["latencyMs", k]);
            let (p50, p99, p999) = (l("p50")?, l("p99")?, l("p999")?);
            Some((format!("{p50:.2} / {p99:.2} / {p999:.2} ms"), p50 <= 2.0 && p99 <= 10.0 && p999 <= 25.0))
        },
    },
    Target {
        scenario: "federation",
        file: "federation",
        what: "messages/s between two nodes",
        goal: "≥ 10,000",
        measured: |v| {
            let t = num(v, &["throughput"])?;
            Some((format!("{t:.0}"), t >= 10_000.0 && num(v, &["received"])? > 0.0))
        },
    },
    Target {
        scenario: "federation",
        file: "federation",
        what: "send→receive p99 between two nodes",
        goal: "≤ 20 ms",
        measured: |v| {
            if num(v, &["received"])? == 0.0 {
                return Some(("nothing delivered".into(), false));
            }
            let p99 = num(v, &["latencyMs", "p99"])?;
            Some((format!("{p99:.2} ms"), p99 <= 20.0))
        },
    },
];

/// The targets table of `bench/kith.sh`: each target of the benchmark issue beside the figure
/// measured in `dir` (`<file>.json` per run), and whether it is met.
///
/// # Errors
/// [`BenchError`] when a report exists but cannot be read.
pub fn targets_markdown(dir: &Path) -> Result<String, BenchError> {
    let mut out = String::from("| scenario | what | target | measured | met |\n|---|---|---|---|---|\n");
    for target in TARGETS {
        let (measured, met) = match read(dir, target.file)? {
            Some(report) => match (target.measured)(&report) {
                Some((figure, met)) => (figure, if met { "yes" } else { "**no**" }),
                None => ("–".to_owned(), "–"),
            },
            None => ("not run".to_owned(), "–"),
        };
        let _ = writeln!(out, "| {} | {} | {} | {} | {} |", target.scenario, target.what, target.goal, measured, met);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_to_the_first_row_and_missing_figures_show_a_dash() {
        let kith = Row {
            label: "kith".into(),
            throughput: Some(20_000.0),
            lost: Some(0),
            latency_rate: Some("500/s".into()),
            latency: Some([1.0, 2.0, 4.0, 8.0, 16.0]),
            kib_per_connection: Some(8.0),
            cpu_per_1000: Some(0.1),
        };
        let other =
            Row { label: "other".into(), throughput: Some(1_000.0), kib_per_connection: Some(200.0), ..Row::default() };
        let table = markdown(&[kith, other]);
        assert!(table.contains("| kith | 20000 (1.00×) | 0 | 1.00 (1.00×)"), "{table}");
        assert!(table.contains("| other | 1000 (0.05×) | – | –"), "{table}");
        assert!(table.contains("200.0 (25.00×)"), "{table}");
        assert!(table.contains("p50 ms @ 500/s"));
    }
}
