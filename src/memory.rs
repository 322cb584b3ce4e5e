//! The allocator, and giving freed memory back to the system after a peak.
//!
//! The pollgate binary allocates with jemalloc (`src/main.rs`; the library
//! leaves the choice to whoever links it). In a 16,000-waiter fan-out profile
//! glibc's malloc was an eighth of the server's CPU (chunk unlinking and
//! consolidation as answers and re-polls churn small buffers). jemalloc took
//! about 10 % off the user-space CPU per proxied request and 65 % onto the
//! rate of 100 KB answers (in fan-out its gain is within the noise), and
//! kept glibc's memory per held poll and at start; mimalloc saved as much
//! CPU but started 10 MiB larger (README, "What made the difference").
//!
//! After a peak (a flood of connections, 200,000 short-lived channels), an
//! allocator keeps the freed pages for reuse: jemalloc hands them back only
//! as they age, and only while it is called. [`release`] has every arena
//! hand back its unused pages at once. It is not called per request: the
//! sweep calls [`Trimmer::check`] once per tick, and it releases only when
//! the instance's load has fallen far since its highest point (its count of
//! held polls, connections, channels and remembered ids by
//! `MEMORY_TRIM_AFTER_FREES`, or the bytes of messages it holds by
//! `MEMORY_TRIM_AFTER_BYTES`: a publish-heavy peak frees few objects but
//! many bytes when its messages expire), at most once per
//! `MEMORY_TRIM_INTERVAL`. A steady load never trims.

use tokio::time::Instant;

use crate::defaults::{MEMORY_TRIM_AFTER_BYTES, MEMORY_TRIM_AFTER_FREES, MEMORY_TRIM_INTERVAL};

/// The instance's load, as the trim looks at it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Held polls, connections, channels and remembered ids.
    pub objects: usize,
    /// Bytes of messages held (`broker::held_bytes`).
    pub bytes: usize,
}

/// Decides when a fall in load is worth a trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    /// The highest load seen since the last trim, each measure apart.
    high: Load,
    last: Option<Instant>,
}

impl Trimmer {
    /// Given the load now, trims when it has fallen far enough; returns
    /// whether the allocator did (the metric counts only those).
    /// `release` is [`release`] outside tests.
    pub fn check(&mut self, load: Load, now: Instant, release: impl FnOnce() -> bool) -> bool {
        self.high.objects = self.high.objects.max(load.objects);
        self.high.bytes = self.high.bytes.max(load.bytes);
        let fallen = self.high.objects - load.objects >= MEMORY_TRIM_AFTER_FREES
            || self.high.bytes - load.bytes >= MEMORY_TRIM_AFTER_BYTES;
        let rested = self
            .last
            .is_none_or(|at| now.duration_since(at) >= MEMORY_TRIM_INTERVAL);
        if !(fallen && rested) {
            return false;
        }
        self.high = load;
        self.last = Some(now);
        release()
    }
}

/// Asks jemalloc to return every free page to the system now (a binary on
/// another allocator gets nothing back); false when it refused (a different jemalloc linked in, a renamed control).
#[allow(unsafe_code)]
pub fn release() -> bool {
    // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena (jemalloc 5's
    // MALLCTL_ARENAS_ALL is 4096) returns its unused dirty pages.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: the name is NUL-terminated; a purge reads and writes no value,
    // so every pointer may be null and the length 0 (jemalloc's mallctl(3)).
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        tracing::warn!(rc, "the allocator refused to purge its arenas");
    }
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fall_from_the_peak_trims_and_not_too_often() {
        // The allocator's answer is not what this test is about.
        let purged = || true;
        let objects = |objects| Load { objects, bytes: 0 };
        let mut t = Trimmer::default();
        let start = Instant::now();
        assert!(!t.check(objects(10_000), start, purged), "rising load");
        assert!(!t.check(objects(10_000 - MEMORY_TRIM_AFTER_FREES + 1), start, purged));
        assert!(t.check(objects(100), start, purged), "fell from the peak");
        assert!(
            !t.check(objects(100), start, purged),
            "the peak is now the low point"
        );
        t.check(objects(50_000), start, purged);
        assert!(
            !t.check(objects(0), start + MEMORY_TRIM_INTERVAL / 2, purged),
            "not twice in one interval"
        );
        assert!(t.check(objects(0), start + MEMORY_TRIM_INTERVAL, purged));
    }

    #[test]
    fn a_fall_in_bytes_held_trims_with_few_objects_freed() {
        let purged = || true;
        let bytes = |bytes| Load { objects: 10, bytes };
        let mut t = Trimmer::default();
        let start = Instant::now();
        t.check(bytes(MEMORY_TRIM_AFTER_BYTES * 4), start, purged);
        assert!(!t.check(bytes(MEMORY_TRIM_AFTER_BYTES * 3 + 1), start, purged));
        assert!(t.check(bytes(0), start, purged), "the messages expired");
    }
}
