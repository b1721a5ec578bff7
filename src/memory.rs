//! Host memory: peak resident memory per stage, and what the process can still allocate. Linux keeps the process's
//! high-water mark in `/proc/self/status` (`VmHWM`) and resets it when `5` is written to `/proc/self/clear_refs`;
//! elsewhere these calls report nothing. Device memory is budgeted per stage in [`working_set`].

pub mod working_set;

/// Starts a new measurement window.
pub fn reset_peak() {
    // Best effort: without procfs there is simply no figure to report.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last [`reset_peak`] (or process start), in bytes.
pub fn peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Time and peak memory of one stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageStats {
    /// Wall-clock time.
    pub time: std::time::Duration,
    /// Peak resident host memory of the process during the stage, when measured (Linux only).
    pub peak_host_bytes: Option<u64>,
    /// Peak device memory, on engines with a device.
    pub peak_device_bytes: Option<u64>,
}

/// Measures `f` as one stage: its time, and with `host_peak` its peak host memory (which resets the process's
/// high-water mark, see [`reset_peak`]).
pub fn stage<R>(host_peak: bool, f: impl FnOnce() -> R) -> (R, StageStats) {
    if host_peak {
        reset_peak();
    }
    let start = std::time::Instant::now();
    let out = f();
    let stats = StageStats {
        time: start.elapsed(),
        peak_host_bytes: if host_peak { peak_bytes() } else { None },
        peak_device_bytes: None,
    };
    (out, stats)
}

/// Bytes the process can still allocate: the system's available memory and free swap (`/proc/meminfo`), capped by
/// what its address-space limit (`ulimit -v`) leaves; `None` where that cannot be read.
pub fn available_host_bytes() -> Option<u64> {
    let kib = |text: &str, key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let system = 1024 * (kib(&meminfo, "MemAvailable:")? + kib(&meminfo, "SwapFree:").unwrap_or(0));
    Some(system.min(address_space_left().unwrap_or(u64::MAX)))
}

/// The address-space limit less the process's current size, when a limit is set.
#[cfg(unix)]
fn address_space_left() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let used = 1024 * line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(limit.rlim_cur.saturating_sub(used))
}

#[cfg(not(unix))]
fn address_space_left() -> Option<u64> {
    None
}

/// `Err(Error::OutOfHostMemory)` when `bytes` of `stage`'s activations on host engine `engine` exceed what the
/// process can still allocate; `Ok` where that is unknown.
pub fn check_host_fits(engine: &'static str, stage: &'static str, bytes: u64) -> crate::Result<()> {
    match available_host_bytes() {
        Some(available) if bytes > available => Err(crate::Error::OutOfHostMemory {
            stage,
            engine,
            needed_mib: bytes.div_ceil(1 << 20),
            available_mib: available >> 20,
        }),
        _ => Ok(()),
    }
}
