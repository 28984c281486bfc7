//! Per-plugin call counters and latency percentiles.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Hook, PluginError};

/// How many recent latencies are kept for percentiles.
const WINDOW: usize = 1024;

/// Counters for one plugin. Updated by every call, read by the admin API.
#[derive(Debug, Default)]
pub struct PluginStats {
    calls: AtomicU64,
    decisions: AtomicU64,
    no_opinion: AtomicU64,
    errors: AtomicU64,
    limit_hits: AtomicU64,
    skipped: AtomicU64,
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    latencies_ns: Vec<u64>,
    next: usize,
    last_error: Option<(Hook, String)>,
}

/// A snapshot of [`PluginStats`], as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned a definite decision.
    pub decisions: u64,
    /// Calls that returned no opinion.
    pub no_opinion: u64,
    /// Calls that failed (errors, traps, malformed answers), limit hits excluded.
    pub errors: u64,
    /// Calls stopped by a limit.
    pub limit_hits: u64,
    /// Calls not made because the plugin was quarantined after failing in a row.
    pub skipped: u64,
    /// Median latency over recent calls, in microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency over recent calls, in microseconds.
    pub p99_us: f64,
    /// The latest failure, with its hook.
    pub last_error: Option<String>,
}

/// What one call came to.
pub(crate) enum Outcome<'a> {
    Decision,
    NoOpinion,
    Error(&'a PluginError),
}

impl PluginStats {
    /// Record one call.
    pub(crate) fn record(&self, hook: Hook, took: Duration, outcome: Outcome<'_>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let counter = match &outcome {
            Outcome::Decision => &self.decisions,
            Outcome::NoOpinion => &self.no_opinion,
            Outcome::Error(e) if e.is_limit() => &self.limit_hits,
            Outcome::Error(_) => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut r = self.recent.lock().expect("stats lock");
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        if r.latencies_ns.len() < WINDOW {
            r.latencies_ns.push(ns);
        } else {
            let i = r.next;
            r.latencies_ns[i] = ns;
        }
        r.next = (r.next + 1) % WINDOW;
        if let Outcome::Error(e) = outcome {
            r.last_error = Some((hook, e.to_string()));
        }
    }

    /// Record a call not made (quarantine).
    pub(crate) fn record_skip(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough snapshot for display.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = self.recent.lock().expect("stats lock");
        let mut l = r.latencies_ns.clone();
        l.sort_unstable();
        let pct = |p: f64| -> f64 {
            if l.is_empty() {
                return 0.0;
            }
            let i = ((l.len() as f64 - 1.0) * p).round() as usize;
            l[i] as f64 / 1000.0
        };
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            decisions: self.decisions.load(Ordering::Relaxed),
            no_opinion: self.no_opinion.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            limit_hits: self.limit_hits.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            p50_us: pct(0.5),
            p99_us: pct(0.99),
            last_error: r.last_error.as_ref().map(|(h, e)| format!("{h}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::LimitKind;

    #[test]
    fn counts_each_outcome_and_reports_percentiles() {
        let s = PluginStats::default();
        for us in 1..=100 {
            s.record(Hook::Place, Duration::from_micros(us), Outcome::Decision);
        }
        s.record(Hook::Place, Duration::ZERO, Outcome::NoOpinion);
        s.record(
            Hook::Release,
            Duration::ZERO,
            Outcome::Error(&PluginError::Failed("boom".into())),
        );
        s.record(
            Hook::Release,
            Duration::ZERO,
            Outcome::Error(&PluginError::Limit(LimitKind::Memory)),
        );
        let snap = s.snapshot();
        assert_eq!(
            (
                snap.calls,
                snap.decisions,
                snap.no_opinion,
                snap.errors,
                snap.limit_hits
            ),
            (103, 100, 1, 1, 1)
        );
        assert!(snap.p50_us > 40.0 && snap.p50_us < 60.0, "{}", snap.p50_us);
        assert!(snap.p99_us >= 98.0, "{}", snap.p99_us);
        assert_eq!(
            snap.last_error.as_deref(),
            Some("release: plugin exceeded its memory limit")
        );
    }

    #[test]
    fn the_window_is_bounded() {
        let s = PluginStats::default();
        for _ in 0..(WINDOW * 3) {
            s.record(Hook::Place, Duration::from_micros(1), Outcome::Decision);
        }
        assert_eq!(s.recent.lock().unwrap().latencies_ns.len(), WINDOW);
    }
}
