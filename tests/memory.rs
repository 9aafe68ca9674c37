//! Freed memory goes back to the system: what glibc keeps after many small frees (the heap's top
//! pinned by one live block, as a long-lived connection pins it) is returned by the watcher's trim.
//! A test binary of its own: RSS is the whole process's.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn freed_small_blocks_go_back_to_the_system() {
    // 96 MiB in 2 KiB blocks (each touched), then one block allocated after them, kept.
    let mut blocks: Vec<Vec<u8>> = (0..48 * 1024).map(|i| vec![i as u8; 2048]).collect();
    let pin = vec![1u8; 2048];
    let full = rss_bytes();
    blocks.clear();
    blocks.shrink_to_fit();
    let freed = rss_bytes();
    // glibc keeps them: the top of the heap is in use.
    assert!(
        full.saturating_sub(freed) < 48 << 20,
        "glibc returned the memory by itself ({} MiB): this test proves nothing here",
        full.saturating_sub(freed) >> 20
    );
    let free = geolb::memory::free_bytes().unwrap();
    assert!(free > 64 << 20, "free in the allocator: {free}");
    assert!(geolb::memory::Trimmer::default().should_trim(free));
    geolb::memory::trim();
    let trimmed = rss_bytes();
    assert!(
        freed.saturating_sub(trimmed) > 64 << 20,
        "RSS {} MiB before the trim, {} MiB after",
        freed >> 20,
        trimmed >> 20
    );
    assert_eq!(pin[0], 1);
}
