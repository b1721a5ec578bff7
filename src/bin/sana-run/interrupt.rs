//! SIGINT, SIGTERM and SIGHUP end `sana-run` at once, as their default would, but first remove the temporary files
//! of outputs being written, so an interrupted run leaves nothing behind (issue 14).

extern "C" fn on_signal(signal: libc::c_int) {
    sana::atomic_write::remove_pending_temps_in_signal_handler();
    // SAFETY: signal and raise are async-signal-safe. The default action ends the process, so its exit status
    // says which signal ended it, as it would without this handler.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// Installs the handler for the signals that ask a command to stop.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler calls only async-signal-safe functions.
        unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}
