//! Giving freed memory back to the system after a peak.
//!
//! glibc's malloc keeps what a program frees in its arenas for reuse, and
//! returns pages only from the top of a heap. A flood of connections, or
//! 200,000 short-lived channels, leaves small live allocations scattered
//! over the pages the peak took, so the process stayed at its peak RSS
//! (measured: 78 MB after a flood, 300 MB after 200k channels, against a
//! ~9 MB base). `malloc_trim(0)` walks every arena and hands back each free
//! page (`MADV_DONTNEED`), wherever it lies.
//!
//! It walks and locks the arenas, so it is not called per request: the
//! sweep calls [`Trimmer::check`] once per tick, and it trims only when the
//! instance's load (held polls, connections, channels) has fallen by
//! `MEMORY_TRIM_AFTER_FREES` since its highest point, at most once per
//! `MEMORY_TRIM_INTERVAL`. A steady load never trims.

use tokio::time::Instant;

use crate::defaults::{MEMORY_TRIM_AFTER_FREES, MEMORY_TRIM_INTERVAL};

/// Decides when a fall in load is worth a trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    /// The highest load seen since the last trim.
    high: usize,
    last: Option<Instant>,
}

impl Trimmer {
    /// Given the load now, trims when it has fallen far enough; returns
    /// whether it asked the allocator.
    pub fn check(&mut self, load: usize, now: Instant) -> bool {
        self.high = self.high.max(load);
        let fallen = self.high - load >= MEMORY_TRIM_AFTER_FREES;
        let rested = self
            .last
            .is_none_or(|at| now.duration_since(at) >= MEMORY_TRIM_INTERVAL);
        if !(fallen && rested) {
            return false;
        }
        self.high = load;
        self.last = Some(now);
        release();
        true
    }
}

/// Asks the allocator to return every free page to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release() {
    // SAFETY: `malloc_trim` takes no pointer and has no precondition; glibc
    // serializes it with every other allocator call.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    tracing::debug!(released, "allocator trimmed");
}

/// Elsewhere (musl, macOS) the allocator returns memory by itself, or has
/// no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fall_from_the_peak_trims_and_not_too_often() {
        let mut t = Trimmer::default();
        let start = Instant::now();
        assert!(!t.check(10_000, start), "rising load");
        assert!(!t.check(10_000 - MEMORY_TRIM_AFTER_FREES + 1, start));
        assert!(t.check(100, start), "fell from the peak");
        assert!(!t.check(100, start), "the peak is now the low point");
        t.check(50_000, start);
        assert!(
            !t.check(0, start + MEMORY_TRIM_INTERVAL / 2),
            "not twice in one interval"
        );
        assert!(t.check(0, start + MEMORY_TRIM_INTERVAL));
    }
}
