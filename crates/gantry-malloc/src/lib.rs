//! The C allocator's tuning for long-running Gantry processes (`gantry server`, `gantry
//! agent`): the one place in the workspace with `unsafe` code, a single `mallopt` call.
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
