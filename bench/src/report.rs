//! Figures: the report that prints them, medians over repeated runs, and
//! what the process reads of itself (RSS, CPU time).

use serde_json::{Value, json};

pub struct Report {
    pub rows: Vec<Value>,
    /// Print each row as it comes (off while repeating a workload).
    print: bool,
}

impl Report {
    pub fn new(print: bool) -> Report {
        Report {
            rows: Vec::new(),
            print,
        }
    }

    /// Adds the median of each figure over several runs of a workload, with
    /// the range in its note.
    pub fn add_median(&mut self, runs: Vec<Vec<Value>>) {
        let Some(first) = runs.first() else { return };
        if runs.len() == 1 {
            for row in first.clone() {
                self.push(row);
            }
            return;
        }
        for (i, row) in first.iter().enumerate() {
            let mut values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.get(i).and_then(|row| row["value"].as_f64()))
                .collect();
            let median = percentile(&mut values, 0.5);
            let (lo, hi) = (values[0], values[values.len() - 1]);
            let mut row = row.clone();
            row["value"] = json!(median);
            let note = row["note"].as_str().unwrap_or("").to_owned();
            let range = format!(
                "median of {} runs ({} to {})",
                values.len(),
                short(lo),
                short(hi)
            );
            row["note"] = json!(if note.is_empty() {
                range
            } else {
                format!("{range}; {note}")
            });
            self.push(row);
        }
    }

    fn push(&mut self, row: Value) {
        println!("{row}");
        self.rows.push(row);
    }

    pub fn add(
        &mut self,
        workload: &str,
        guest: &str,
        metric: &str,
        value: f64,
        unit: &str,
        note: &str,
    ) {
        let row = json!({"workload": workload, "guest": guest, "metric": metric, "value": value, "unit": unit, "note": note});
        if self.print {
            println!("{row}");
        }
        self.rows.push(row);
    }

    pub fn table(&self) {
        println!(
            "\n| workload | guest | metric | value | unit | note |\n|---|---|---|---:|---|---|"
        );
        for r in &self.rows {
            let v = short(r["value"].as_f64().unwrap_or(0.0));
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r["workload"].as_str().unwrap_or(""),
                r["guest"].as_str().unwrap_or(""),
                r["metric"].as_str().unwrap_or(""),
                v,
                r["unit"].as_str().unwrap_or(""),
                r["note"].as_str().unwrap_or("")
            );
        }
    }
}

/// A figure for the table: whole numbers from 100 up, else 3 decimals.
pub fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Runs a workload `$n` times into quiet reports and adds the median of
/// each figure to `$r`.
macro_rules! repeated {
    ($r:expr, $n:expr, |$run:ident| $body:expr) => {{
        let mut runs = Vec::new();
        for _ in 0..$n {
            let mut $run = Report::new($n == 1);
            $body.await?;
            runs.push($run.rows);
        }
        if $n == 1 {
            $r.rows.extend(runs.pop().unwrap_or_default());
        } else {
            $r.add_median(runs);
        }
    }};
}

pub fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

/// CPU time (user + system) the process used so far, in seconds.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime
    // are the 12th and 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

pub fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}
