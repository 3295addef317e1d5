//! The rows every scenario adds to the table, and the table itself (Markdown, so that a run's
//! output goes into BENCHMARKS.md as printed).

use std::fmt::Write;
use std::sync::Mutex;

/// Whether a figure meets its goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// The scenario reports a figure without a goal.
    NoGoal,
}

/// One line of the table: a figure, the floor it is measured against and their ratio.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: &'static str,
    /// What was measured, e.g. `64 connections`.
    pub case: String,
    /// The floor, with its absolute figures.
    pub floor: String,
    /// Ours, with its absolute figures.
    pub ours: String,
    /// ours / floor (or floor / ours where smaller is better), as the goal states it.
    pub ratio: Option<f64>,
    pub goal: String,
    pub verdict: Verdict,
}

impl Row {
    /// A row whose goal is `ratio >= min`.
    pub fn at_least(
        scenario: &'static str,
        case: impl Into<String>,
        floor: impl Into<String>,
        ours: impl Into<String>,
        ratio: f64,
        min: f64,
    ) -> Row {
        Row {
            scenario,
            case: case.into(),
            floor: floor.into(),
            ours: ours.into(),
            ratio: Some(ratio),
            goal: format!(">= {min}"),
            verdict: if ratio >= min {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        }
    }

    /// A row reported without a goal.
    pub fn figure(
        scenario: &'static str,
        case: impl Into<String>,
        floor: impl Into<String>,
        ours: impl Into<String>,
        ratio: Option<f64>,
    ) -> Row {
        Row {
            scenario,
            case: case.into(),
            floor: floor.into(),
            ours: ours.into(),
            ratio,
            goal: "(none)".to_owned(),
            verdict: Verdict::NoGoal,
        }
    }
}

/// The rows gathered so far; each scenario also prints its own as it finishes.
#[derive(Default)]
pub struct Table {
    rows: Mutex<Vec<Row>>,
}

impl Table {
    pub fn add(&self, row: Row) {
        eprintln!("  => {}", line(&row));
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(row);
    }

    pub fn render(&self) -> String {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("| scenario | case | floor | ours | ratio | goal | met |\n");
        out.push_str("|---|---|---|---|---|---|---|\n");
        for row in rows.iter() {
            out.push_str(&line(row));
            out.push('\n');
        }
        let met = rows.iter().filter(|r| r.verdict == Verdict::Met).count();
        let missed: Vec<String> = rows
            .iter()
            .filter(|r| r.verdict == Verdict::Missed)
            .map(|r| format!("{} ({})", r.scenario, r.case))
            .collect();
        let _ = write!(out, "\ngoals met: {met}; missed: {}", missed.len());
        if !missed.is_empty() {
            let _ = write!(out, " ({})", missed.join(", "));
        }
        out.push('\n');
        out
    }
}

fn line(row: &Row) -> String {
    let ratio = row
        .ratio
        .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
    let met = match row.verdict {
        Verdict::Met => "yes",
        Verdict::Missed => "**no**",
        Verdict::NoGoal => "-",
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} |",
        row.scenario, row.case, row.floor, row.ours, ratio, row.goal, met
    )
}

/// `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in microseconds as ms with two decimals.
pub fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}
