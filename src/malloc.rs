//! glibc malloc settings for a process that builds and frees large columns all the time.
//!
//! Every OTLP flush gathers the buffered rows into the lake's order: fresh column buffers of a
//! row group each (a few MB to ~20 MB: the attribute maps' keys and values), encoded to Parquet
//! and freed a moment later. With glibc's defaults, a buffer past the dynamic mmap threshold is
//! a fresh `mmap` whose every page faults and is zeroed on first touch, and a freed heap top past
//! the trim threshold goes back to the kernel, so each flush faulted its memory in again: ~38,000
//! page faults a second, 5% of the server's CPU at 250,000 spans/s (perf, benches/RESULTS.md).
//! Allocations up to [`MMAP_THRESHOLD`] now come from malloc's heaps, up to [`TRIM_THRESHOLD`]
//! of free heap top is kept for the next flush, and there is one arena per core (glibc's default
//! is eight per core, and each would keep its own free top): over six rounds of alternating
//! 20-second gRPC runs against the defaults, 8x fewer page faults and 28% less peak RSS (median 550 MiB
//! against 760 MiB), at the same spans per server CPU-second within the runs' noise (the two
//! thresholds alone took 1.2-1.5 GiB for at most a few percent; benches/RESULTS.md).
//!
//! Written by hand (a `mallopt` call): no crate sets these. An operator's own settings win:
//! nothing is changed when the environment sets glibc's malloc tunables
//! (`GLIBC_TUNABLES=glibc.malloc.*`, `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`,
//! `MALLOC_TRIM_THRESHOLD_`, ...).

/// Allocations up to this size come from malloc's heaps (32 MiB: the most glibc's dynamic
/// threshold reaches on 64-bit; larger ones, rare one-off buffers of a big import, stay mmaps).
const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of a heap kept rather than returned to the kernel.
const TRIM_THRESHOLD: usize = 128 << 20;

/// Sets the thresholds and the arenas, unless the environment sets malloc's own (see the
/// module). Called first in `main`, before any other thread (arenas are taken by threads as
/// they first allocate).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn tune() {
    if operator_set(|name| std::env::var_os(name)) {
        return;
    }
    let as_int = |v: usize| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
    let arenas = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    // SAFETY: `mallopt` only changes three of the allocator's parameters, under malloc's own
    // locks; no pointer is passed and no memory is touched. A refusal (its result, ignored)
    // would leave glibc's defaults: correct, only larger.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, as_int(arenas));
        libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(MMAP_THRESHOLD));
        libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(TRIM_THRESHOLD));
    }
}

/// Other allocators and C libraries: their own defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune() {}

/// Whether the environment (`var`) sets glibc's malloc parameters itself.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn operator_set(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    [
        "MALLOC_ARENA_MAX",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_TOP_PAD_",
        "MALLOC_MMAP_MAX_",
    ]
    .iter()
    .any(|name| var(name).is_some())
        || var("GLIBC_TUNABLES").is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_malloc_settings_win() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).into())
        };
        assert!(!operator_set(env(&[])));
        assert!(!operator_set(env(&[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")])));
        assert!(operator_set(env(&[("GLIBC_TUNABLES", "glibc.pthread.rseq=0:glibc.malloc.arena_max=2")])));
        assert!(operator_set(env(&[("MALLOC_TRIM_THRESHOLD_", "0")])));
        assert!(operator_set(env(&[("MALLOC_MMAP_THRESHOLD_", "131072")])));
        assert!(operator_set(env(&[("MALLOC_ARENA_MAX", "8")])));
    }
}
