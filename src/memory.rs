//! Peak resident host memory per stage. Linux keeps the process's high-water mark in `/proc/self/status`
//! (`VmHWM`) and resets it when `5` is written to `/proc/self/clear_refs`; elsewhere both calls do nothing.

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
