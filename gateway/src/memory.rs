//! Giving freed memory back to the system.
//!
//! glibc's allocator returns memory to the kernel only from the top of a
//! heap; what is freed below it (a closed HTTP connection's buffers, a
//! finished DTLS handshake, a viewer that left) stays in the process's
//! RSS until the same thread allocates again. After a burst of sessions
//! that is most of the burst: RSS stays at its high-water mark. Every
//! [`TRIM_EVERY`] a blocking task asks glibc to release every whole free
//! page (`malloc_trim(0)`, which walks each arena and `madvise`s them
//! away); pages reused later fault back in. docs/performance.md
//! ("Memory after a burst") has what it costs and gains.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often free pages are given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Gives back free pages every [`TRIM_EVERY`] until `stopped` turns true
/// (or its sender is dropped).
pub fn spawn_trimmer(mut stopped: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await; // the first tick is now
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
            let started = Instant::now();
            let released = tokio::task::spawn_blocking(release_free_pages)
                .await
                .unwrap_or(false);
            tracing::trace!(released, took = ?started.elapsed(), "free pages given back");
        }
    })
}

/// Asks the allocator to give every whole free page back to the kernel;
/// whether it gave any. A no-op where the allocator is not glibc's.
pub fn release_free_pages() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a padding size and touches only the
        // allocator's own state, under its own locks.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident pages of this process, in bytes (`/proc/self/statm`).
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("resident pages");
        pages * 4096
    }

    #[test]
    fn freed_memory_below_a_live_allocation_goes_back() {
        // 64 MB in 16 KB blocks (below the mmap threshold, so from the
        // heap), each followed by a small block that stays: glibc's own
        // top-of-heap trimming can give none of it back.
        let mut freed = Vec::new();
        let mut kept = Vec::new();
        for i in 0..4096u32 {
            freed.push(vec![i as u8 | 1; 16 * 1024]);
            kept.push(vec![i as u8; 64]);
        }
        let touched = rss();
        drop(freed);
        let before = rss();
        assert!(release_free_pages(), "nothing was given back");
        let after = rss();
        eprintln!("RSS touched {touched}, freed {before}, released {after}");
        assert!(
            before.saturating_sub(after) >= 32 << 20,
            "RSS only went from {before} to {after} bytes"
        );
        assert_eq!(kept.len(), 4096);
    }
}
