//! Giving freed memory back to the system. glibc's malloc keeps what it frees inside its arenas:
//! after 10,000 idle client connections close, the 160 MiB they held would stay in geolb's RSS.
//! A watcher thread looks at the allocator every [`EVERY`] and, when [`KEPT_FREE`] more lies free
//! in it than after its last trim, asks it to hand the free pages back (`malloc_trim`, which also
//! releases whole pages in the middle of the heap). Off the request path: a thread of its own, and
//! a look that costs microseconds. Other allocators (musl's) return memory by themselves.

use std::time::Duration;

/// How often the allocator is looked at.
pub const EVERY: Duration = Duration::from_secs(2);

/// Free memory the allocator may gather, beyond what it held after the last trim, before it is
/// asked to return it: enough for bursts of requests to reuse without a system call each.
pub const KEPT_FREE: usize = 8 << 20;

/// When to trim, from what lies free in the allocator (pure). A trim returns the pages but glibc
/// still counts them free, so the mark is what was free at the last trim, lowered as the free
/// memory is used again.
#[derive(Debug, Default)]
pub struct Trimmer {
    mark: usize,
}

impl Trimmer {
    /// Whether to trim now, `free` bytes lying free in the allocator.
    pub fn should_trim(&mut self, free: usize) -> bool {
        self.mark = self.mark.min(free);
        if free > self.mark.saturating_add(KEPT_FREE) {
            self.mark = free;
            return true;
        }
        false
    }
}

/// Starts the watcher (once per process; a second call starts nothing).
pub fn give_back_freed_memory() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("geolb-memory".into())
            .spawn(|| {
                let mut trimmer = Trimmer::default();
                loop {
                    std::thread::sleep(EVERY);
                    let Some(free) = free_bytes() else { return };
                    if trimmer.should_trim(free) {
                        trim();
                        tracing::debug!(free_bytes = free, "free memory returned to the system");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no memory watcher thread: freed memory stays in geolb's RSS");
        }
    });
}

/// Bytes lying free in the allocator's arenas (`None` where the allocator does not say).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn free_bytes() -> Option<usize> {
    // SAFETY: a thread-safe glibc call with no arguments (glibc >= 2.33; Debian bookworm: 2.36).
    Some(unsafe { libc::mallinfo2() }.fordblks)
}

/// Returns the allocator's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: a thread-safe glibc call with no pointer argument; 0 keeps no pad at the heap top.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn free_bytes() -> Option<usize> {
    None
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_when_free_memory_grows_past_the_mark() {
        let mut t = Trimmer::default();
        assert!(!t.should_trim(KEPT_FREE), "a little free memory is kept");
        assert!(t.should_trim(160 << 20), "10,000 closed connections");
        // Still counted free after the trim: no trim again and again.
        assert!(!t.should_trim(160 << 20));
        assert!(!t.should_trim((160 << 20) + KEPT_FREE));
        // Used again, then freed again: trimmed again.
        assert!(!t.should_trim(4 << 20));
        assert!(t.should_trim(100 << 20));
    }
}
