//! The run's report: rounds, crash points, kills by process and by the
//! phase of the snapshots in flight at the kill, violations.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::Target;
use super::check::Violation;
use super::pg::PgCrash;
use super::probe;

/// One kill.
#[derive(Debug, Clone)]
pub struct CrashPoint {
    pub round: usize,
    pub index: usize,
    pub target: Target,
    /// The statuses of the snapshots in flight at the kill.
    pub phases: Vec<String>,
    pub at: Duration,
    pub down: Duration,
    pub pg_crash: PgCrash,
    /// Wall-clock time of the kill (to line up with logs and events).
    pub wall: chrono::DateTime<chrono::Utc>,
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} round {} {} kill {}{} (down {} ms) in flight: [{}]",
            self.index,
            self.round,
            self.wall.format("%H:%M:%S%.3f"),
            self.target.name(),
            if self.target == Target::Postgres {
                match self.pg_crash {
                    PgCrash::KillGroup => " (kill -9 of every process)",
                    PgCrash::Immediate => " (pg_ctl stop -m immediate)",
                }
            } else {
                ""
            },
            self.down.as_millis(),
            self.phases.join(" ")
        )
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub unguarded: bool,
    pub per_round: usize,
    pub desktops: usize,
    pub rounds: usize,
    pub crash_points: Vec<CrashPoint>,
    pub statuses: BTreeMap<String, usize>,
    pub flows: u64,
    pub cancels: u64,
    pub violations: Vec<Violation>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    pub probe: probe::Stats,
    pub settle_max: Duration,
    pub duration: Duration,
    pub log_dir: PathBuf,
    /// Starts of each process (1 + restarts).
    pub restarts: BTreeMap<&'static str, usize>,
    /// Per process: how long from the kill until it was up again (mean,
    /// max).
    pub recovery: BTreeMap<&'static str, (Duration, Duration)>,
}

const PHASES: [&str; 4] = ["QUEUED", "DIFFING", "PUSHING", "idle"];

impl Report {
    /// Kills per process, and per process and phase (a kill counts once
    /// for each phase among the snapshots in flight at it).
    pub fn kills(&self) -> BTreeMap<Target, (usize, BTreeMap<&'static str, usize>)> {
        let mut table: BTreeMap<Target, (usize, BTreeMap<&'static str, usize>)> = BTreeMap::new();
        for cp in &self.crash_points {
            let entry = table.entry(cp.target).or_default();
            entry.0 += 1;
            let phases: BTreeSet<&str> = cp.phases.iter().map(String::as_str).collect();
            if phases.is_empty() {
                *entry.1.entry("idle").or_default() += 1;
            }
            for phase in PHASES {
                if phases.contains(phase) {
                    *entry.1.entry(phase).or_default() += 1;
                }
            }
        }
        table
    }

    /// Kills that hit at least one snapshot in flight.
    pub fn hits(&self) -> usize {
        self.crash_points
            .iter()
            .filter(|c| !c.phases.is_empty())
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "=== chaos report ===")?;
        writeln!(
            f,
            "seed {} (again: scripts/chaos.sh --seed {} --crash-points {} --per-round {} --desktops {}{})",
            self.seed,
            self.seed,
            self.crash_points.len(),
            self.per_round,
            self.desktops,
            if self.unguarded { " --self-test" } else { "" }
        )?;
        if self.unguarded {
            writeln!(
                f,
                "API ran with DCS_TEST_UNGUARDED_TRANSITIONS=1 (self-test)"
            )?;
        }
        writeln!(
            f,
            "{} rounds, {} crash points ({} with a snapshot in flight) in {:.0} s; \
             longest settle after the parts were back {:.1} s",
            self.rounds,
            self.crash_points.len(),
            self.hits(),
            self.duration.as_secs_f64(),
            self.settle_max.as_secs_f64()
        )?;
        let total: usize = self.statuses.values().sum();
        writeln!(
            f,
            "snapshots: {total} ({}); flows {}, cancels sent {}",
            self.statuses
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.flows,
            self.cancels
        )?;
        writeln!(
            f,
            "race probe: {} races, {} snapshots ({} PUSHED won, {} FAILED by re-registration won), \
             {} late contradicting terminal events{}",
            self.probe.races,
            self.probe.snapshots,
            self.probe.pushed,
            self.probe.failed,
            self.probe.late_events,
            if self.probe.skipped.is_empty() {
                String::new()
            } else {
                format!(", {} skipped", self.probe.skipped.len())
            }
        )?;
        writeln!(
            f,
            "process starts: {}",
            self.restarts
                .iter()
                .map(|(p, n)| format!("{p} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "back up after a kill (mean / max): {}",
            self.recovery
                .iter()
                .map(|(p, (mean, max))| format!(
                    "{p} {:.1} / {:.1} s",
                    mean.as_secs_f64(),
                    max.as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "kills by process and phase of the snapshots in flight at the kill:"
        )?;
        writeln!(
            f,
            "  {:<10} {:>6} {:>7} {:>8} {:>8} {:>6}",
            "process", "kills", "QUEUED", "DIFFING", "PUSHING", "idle"
        )?;
        for (target, (kills, phases)) in self.kills() {
            let pg = if target == Target::Postgres {
                let killed = self
                    .crash_points
                    .iter()
                    .filter(|c| c.target == target && c.pg_crash == PgCrash::KillGroup)
                    .count();
                format!(
                    "   ({killed} kill -9 of all its processes, {} immediate stops)",
                    kills - killed
                )
            } else {
                String::new()
            };
            writeln!(
                f,
                "  {:<10} {:>6} {:>7} {:>8} {:>8} {:>6}{pg}",
                target.name(),
                kills,
                phases.get("QUEUED").unwrap_or(&0),
                phases.get("DIFFING").unwrap_or(&0),
                phases.get("PUSHING").unwrap_or(&0),
                phases.get("idle").unwrap_or(&0),
            )?;
        }
        if !self.notes.is_empty() {
            // The same note (first line, times aside) counted once.
            let mut grouped: BTreeMap<String, usize> = BTreeMap::new();
            for n in &self.notes {
                let first = n.lines().next().unwrap_or("");
                let key: String = first
                    .split_whitespace()
                    .filter(|w| {
                        !w.contains(':') || !w.chars().next().is_some_and(|c| c.is_ascii_digit())
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                *grouped.entry(key).or_default() += 1;
            }
            writeln!(
                f,
                "notes ({}, {} distinct):",
                self.notes.len(),
                grouped.len()
            )?;
            for (n, count) in grouped.iter().take(30) {
                writeln!(f, "  - {count} x {n}")?;
            }
        }
        if !self.warnings.is_empty() {
            writeln!(f, "warnings ({}):", self.warnings.len())?;
            for w in &self.warnings {
                writeln!(f, "  - {w}")?;
            }
        }
        writeln!(f, "violations: {}", self.violations.len())?;
        let mut by_invariant: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.violations {
            *by_invariant.entry(v.invariant).or_default() += 1;
        }
        for (invariant, n) in by_invariant {
            writeln!(f, "  {invariant}: {n}")?;
        }
        for v in self.violations.iter().take(40) {
            writeln!(f, "  - {v}")?;
        }
        if self.violations.len() > 40 {
            writeln!(
                f,
                "  ... {} more in {}",
                self.violations.len() - 40,
                self.log_dir.join("violations.txt").display()
            )?;
        }
        writeln!(f, "logs: {}", self.log_dir.display())
    }
}
