//! How glibc's allocator treats the CPU engines' tensors. Each op returns a fresh output tensor; by default glibc
//! serves every allocation above 128 KiB–32 MiB with its own `mmap` and unmaps it on free, so every op of a 512 px
//! decode (tensors of tens to hundreds of MiB) page-faults its whole output in, zero-filled by the kernel: 28% of a
//! `sana-run bench --variant sana-600m-512 --engine cpu` run was the kernel clearing pages (perf). Served from the
//! heap and kept there up to a bound, freed tensors are reused by the next op instead: the same bench went from
//! 127 s to 72 s on this 2-core machine. A library does not change its host process's allocator, so this lives in
//! the binary; a program embedding `sana` gets the same with
//! `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824`.

/// Free memory glibc keeps for reuse before returning it to the system: more than one stage's working set at
/// 512–1024 px, so the memory of a stage that is over (the text encoder's weights) still goes back.
const KEEP_FREED_BYTES: libc::c_int = 1 << 30;

/// Serves large allocations from the heap and keeps up to [`KEEP_FREED_BYTES`] of freed memory for reuse.
pub fn reuse_freed_tensors() {
    // SAFETY: mallopt only sets allocator parameters; called first thing in main, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED_BYTES);
    }
}
