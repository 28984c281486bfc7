//! Log lines written by plugins, bounded per call so a plugin cannot flood the engine's log.

use std::sync::atomic::{AtomicU32, Ordering};

/// Most log lines one plugin call writes; further lines are counted and reported once.
pub const LINES_PER_CALL: u32 = 100;

/// Longest log line kept, in bytes; longer lines are cut at a character boundary.
pub const LINE_BYTES: usize = 2048;

/// How loud a plugin's log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogLevel {
    /// Detail for plugin authors.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// The log lines one plugin instance may still write in the current call.
#[derive(Debug, Default)]
pub struct LogBudget {
    written: AtomicU32,
    dropped: AtomicU32,
}

impl LogBudget {
    /// Start a new call.
    pub fn reset(&self) {
        self.written.store(0, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
    }

    /// Write one line for `plugin`, unless this call has used its lines up.
    pub fn write(&self, plugin: &str, level: LogLevel, text: &str) {
        if self.written.fetch_add(1, Ordering::Relaxed) >= LINES_PER_CALL {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let text = if text.len() > LINE_BYTES {
            &text[..text.floor_char_boundary(LINE_BYTES)]
        } else {
            text
        };
        match level {
            LogLevel::Debug => tracing::debug!(plugin, "{text}"),
            LogLevel::Info => tracing::info!(plugin, "{text}"),
            LogLevel::Warn => tracing::warn!(plugin, "{text}"),
            LogLevel::Error => tracing::error!(plugin, "{text}"),
        }
    }

    /// End the call: say how many lines were dropped, if any. Returns that number.
    pub fn finish(&self, plugin: &str) -> u32 {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                plugin,
                dropped,
                "plugin wrote more than {LINES_PER_CALL} log lines in one call; the rest were dropped"
            );
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_budget_are_counted_not_written() {
        let b = LogBudget::default();
        for _ in 0..LINES_PER_CALL + 7 {
            b.write("p", LogLevel::Info, "x");
        }
        assert_eq!(b.finish("p"), 7);
        assert_eq!(b.finish("p"), 0, "finish reports once");
        b.reset();
        b.write("p", LogLevel::Info, &"é".repeat(LINE_BYTES));
        assert_eq!(b.finish("p"), 0);
    }
}
