//! The scenario report: figures checked against the targets, printed and written to
//! `<target dir>/keepfresh-bench-report.txt`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// What a figure is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// The figure must be at most this.
    AtMost(f64),
    /// The figure must be at least this.
    AtLeast(f64),
    /// The figure must equal this.
    Exactly(f64),
    /// Reported for context; no target.
    Info,
}

/// The scenario figures collected during one run.
#[derive(Default)]
pub(crate) struct Report {
    text: String,
    missed: Vec<String>,
}

impl Report {
    pub(crate) fn section(&mut self, title: &str) {
        let _ = writeln!(self.text, "\n## {title}");
        println!("\n## {title}");
    }

    pub(crate) fn note(&mut self, line: &str) {
        let _ = writeln!(self.text, "{line}");
        println!("{line}");
    }

    /// One figure with its unit, checked against `target`.
    pub(crate) fn figure(&mut self, name: &str, value: f64, unit: &str, target: Target) {
        let (goal, met) = match target {
            Target::AtMost(t) => (format!("<= {} {unit}", num(t)), Some(value <= t)),
            Target::AtLeast(t) => (format!(">= {} {unit}", num(t)), Some(value >= t)),
            Target::Exactly(t) => (format!("== {} {unit}", num(t)), Some(value == t)),
            Target::Info => (String::new(), None),
        };
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "",
        };
        if met == Some(false) {
            self.missed.push(name.to_owned());
        }
        let line = format!(
            "{name:<58} {:>12} {unit:<6} {goal:<18} {verdict}",
            num(value)
        );
        self.note(line.trim_end());
    }

    /// Prints the summary and writes the report file.
    pub(crate) fn finish(mut self) {
        let summary = if self.missed.is_empty() {
            "every checked target met".to_owned()
        } else {
            format!("targets NOT met: {}", self.missed.join("; "))
        };
        self.section("Summary");
        self.note(&summary);
        let path = report_path();
        match std::fs::write(&path, &self.text) {
            Ok(()) => println!("\nreport written to {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The build's target directory, found from this binary's path
/// (`<target>/<profile>/deps/keepfresh-<hash>`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn report_path() -> PathBuf {
    target_dir().join("keepfresh-bench-report.txt")
}

/// Milliseconds, for figures.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`-th percentile (nearest rank) of sorted samples.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
