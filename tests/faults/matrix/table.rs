//! The results table of a fault matrix: what every row counts, as Markdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tandem::{BackupMode, Mode};

use super::load::Outcome;

/// What every row of a matrix counts.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub requests: u64,
    pub failed: u64,
    pub lost_sessions: u64,
    pub lost_updates: u64,
    pub lost_unreported: u64,
    pub lost_past_floor: u64,
    pub slowest: Duration,
}

impl Counts {
    pub fn of(outcome: &Outcome) -> Counts {
        Counts {
            requests: outcome.requests.load(Ordering::Relaxed),
            failed: outcome.failed.load(Ordering::Relaxed),
            lost_sessions: outcome.lost_sessions.load(Ordering::Relaxed),
            lost_updates: outcome.lost_updates.load(Ordering::Relaxed),
            lost_unreported: outcome.lost_unreported.load(Ordering::Relaxed),
            lost_past_floor: outcome.lost_past_floor.load(Ordering::Relaxed),
            slowest: outcome.slowest(),
        }
    }

    /// Sessions lost and updates lost.
    pub fn losses(&self) -> (u64, u64) {
        (self.lost_sessions, self.lost_updates)
    }
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Sticky => "sticky",
        Mode::NonSticky => "non-sticky",
    }
}

pub fn backup_name(backup: BackupMode) -> &'static str {
    match backup {
        BackupMode::Async => "async",
        BackupMode::Sync { .. } => "sync",
    }
}

/// A count that only some rows have; `-` for the others.
pub fn optional(count: Option<u64>) -> String {
    count.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

pub fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// A row of the table.
pub fn line(cells: &[String]) -> String {
    format!("| {} |", cells.join(" | "))
}

/// The table: the header, then `rows`; the first `text` columns are left-aligned,
/// the others (counts) right-aligned.
pub fn print(header: &[&str], text: usize, rows: impl IntoIterator<Item = Vec<String>>) {
    println!("| {} |", header.join(" | "));
    let alignment: Vec<&str> = (0..header.len())
        .map(|column| if column < text { "---" } else { "---:" })
        .collect();
    println!("|{}|", alignment.join("|"));
    for row in rows {
        println!("{}", line(&row));
    }
}
