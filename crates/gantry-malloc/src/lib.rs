//! The C allocator's tuning for long-running Gantry processes (`gantry server`, `gantry
//! agent`): the one place in the workspace with `unsafe` code, two plain C calls (`mallopt`,
//! `malloc_trim`).
//!
//! glibc gives threads their own malloc arenas (up to eight per core), and memory freed in one
//! arena is not reused by another: with tokio's worker and blocking threads each touching the
//! heap, a server that had run 600 one-job pipelines held 19 MiB of heap with the default and
//! 9 MiB with two arenas (benches/server, /proc/PID/smaps_rollup), at no measurable cost in
//! latency on this workload. Set before any thread starts.

/// Limits glibc's malloc to `arenas` arenas; `MALLOC_ARENA_MAX` in the environment (read by
/// glibc itself) wins when set. Does nothing on other C libraries. Call it first in `main`,
/// before threads exist.
pub fn limit_arenas(arenas: i32) {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(
        unsafe_code,
        reason = "mallopt is a plain C call with integer arguments"
    )]
    // SAFETY: mallopt takes two integers and changes a setting of the allocator; it is
    // called before any other thread exists, so no allocation races with it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Gives the free memory the C allocator holds back to the system (`malloc_trim(0)`): glibc
/// returns only the top of each arena by itself, so the pages freed in the middle of a heap
/// after a burst (a few hundred pipelines, a registry push) stay in the process's resident
/// set until something reuses them. True when memory was released. Cheap on a small heap
/// (it walks the arenas' free lists); call it from a blocking thread now and then.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(
        unsafe_code,
        reason = "malloc_trim is a plain C call with an integer argument"
    )]
    // SAFETY: malloc_trim takes the allocator's own locks; it may run while other threads
    // allocate.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}
