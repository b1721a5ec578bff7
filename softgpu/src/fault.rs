//! Turns a kernel's access to a guard page or freed memory (SIGSEGV) into a report naming the work that ran and the
//! allocation it missed, then aborts: on a GPU the same access is `CUDA_ERROR_ILLEGAL_ADDRESS`, which kills the
//! context, and here it ends the test that caused it. Faults outside device memory go to the handler that was
//! installed before (Rust's stack-overflow report, or the default action).

use std::cell::Cell;
use std::sync::{Mutex, Once};

use crate::status::Fault;

/// The label of the work running now (for the report).
static RUNNING: Mutex<String> = Mutex::new(String::new());
static INSTALL: Once = Once::new();
static mut PREVIOUS: Option<libc::sigaction> = None;

thread_local! {
    static EXECUTING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as the work named `label`.
pub fn running(label: &str, f: impl FnOnce() -> Result<(), Fault>) -> Result<(), Fault> {
    {
        let mut r = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        r.clear();
        r.push_str(label);
    }
    let outer = EXECUTING.with(|e| e.replace(true));
    let result = f();
    EXECUTING.with(|e| e.set(outer));
    result
}

/// Whether this thread is running queued work (rather than making an API call).
pub fn executing() -> bool {
    EXECUTING.with(Cell::get)
}

/// Installs the SIGSEGV handler once per process.
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid value to fill in; the handler only reads process state.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_segv as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGSEGV, &action, &mut previous) == 0 {
                PREVIOUS = Some(previous);
            }
        }
    });
}

fn say(msg: &str) {
    // SAFETY: write(2) on stderr with a valid buffer.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(what) = crate::memory::describe(addr) {
        let work = RUNNING
            .try_lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "unknown work".into());
        say(&format!(
            "softgpu: illegal address in `{work}`: {what} (CUDA_ERROR_ILLEGAL_ADDRESS on a GPU); aborting\n"
        ));
        // SAFETY: ends the process.
        unsafe { libc::abort() };
    }
    // SAFETY: PREVIOUS was written once before this handler could run; chaining as the kernel would have.
    unsafe {
        let previous = (*std::ptr::addr_of!(PREVIOUS)).unwrap_or_else(|| std::mem::zeroed());
        if previous.sa_sigaction == libc::SIG_DFL || previous.sa_sigaction == libc::SIG_IGN {
            // Back to the default action; returning re-runs the faulting access, which now kills the process.
            libc::sigaction(libc::SIGSEGV, &previous, std::ptr::null_mut());
        } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(previous.sa_sigaction);
            f(sig, info, context);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(previous.sa_sigaction);
            f(sig);
        }
    }
}
