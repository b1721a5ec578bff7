//! The temporary files of staged writes, kept where a signal handler can reach them: a process ended by SIGINT or
//! SIGTERM (`sana-run`'s handler) removes them before it dies, so an interrupted write leaves nothing behind.
//!
//! A handler may only call async-signal-safe functions: no allocation, no locks. So each pending path lives in a
//! fixed buffer of a node in a lock-free list that only grows (nodes are reused, never freed), and the handler
//! reads only nodes whose state says their buffer is complete.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

/// Longest path (with its NUL) a node holds; a longer temporary path is not registered (and survives a signal).
const PATH_CAPACITY: usize = 4096;

const FREE: u8 = 0;
const WRITING: u8 = 1;
const PENDING: u8 = 2;

struct Node {
    state: AtomicU8,
    path: std::cell::UnsafeCell<[u8; PATH_CAPACITY]>,
    next: *const Node,
}

// The buffer is written only by the thread that moved the node from FREE to WRITING, and read only in PENDING.
unsafe impl Sync for Node {}

static HEAD: AtomicPtr<Node> = AtomicPtr::new(std::ptr::null_mut());
/// Set by the handler before it reads the list: a registration that sees it leaves its buffer alone.
static EXITING: AtomicBool = AtomicBool::new(false);

/// A registered temporary path; dropping it unregisters the path (after the file was renamed or removed).
pub(super) struct PendingTemp(Option<&'static Node>);

impl PendingTemp {
    /// Registers `path` before the file is created, so a signal at any later moment finds it.
    pub(super) fn register(path: &std::path::Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
            return Self(None);
        };
        let bytes = c_path.as_bytes_with_nul();
        if bytes.len() > PATH_CAPACITY {
            return Self(None);
        }
        let node = claim_node();
        if EXITING.load(Ordering::SeqCst) {
            // The process is being ended by a signal; the handler may be reading this node's old path.
            return Self(None);
        }
        // SAFETY: this thread owns the node in the WRITING state; the handler reads only PENDING nodes.
        unsafe { (&mut *node.path.get())[..bytes.len()].copy_from_slice(bytes) };
        node.state.store(PENDING, Ordering::SeqCst);
        Self(Some(node))
    }
}

impl std::fmt::Debug for PendingTemp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "PendingTemp(registered)"
        } else {
            "PendingTemp(unregistered)"
        })
    }
}

impl Drop for PendingTemp {
    fn drop(&mut self) {
        if let Some(node) = self.0 {
            node.state.store(FREE, Ordering::SeqCst);
        }
    }
}

/// A FREE node of the list, now WRITING, or a new one pushed on it.
fn claim_node() -> &'static Node {
    let mut at = HEAD.load(Ordering::SeqCst);
    while !at.is_null() {
        // SAFETY: nodes are leaked boxes, never freed.
        let node = unsafe { &*at };
        if node
            .state
            .compare_exchange(FREE, WRITING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return node;
        }
        at = node.next as *mut Node;
    }
    let node: &'static mut Node = Box::leak(Box::new(Node {
        state: AtomicU8::new(WRITING),
        path: std::cell::UnsafeCell::new([0; PATH_CAPACITY]),
        next: std::ptr::null(),
    }));
    let mut head = HEAD.load(Ordering::SeqCst);
    loop {
        node.next = head;
        match HEAD.compare_exchange(head, node, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return node,
            Err(now) => head = now,
        }
    }
}

/// Removes every pending temporary file of this process. Async-signal-safe (atomics and `unlink` only): meant for a
/// SIGINT/SIGTERM handler that then ends the process, and useful only there: writes under way afterwards fail.
pub fn remove_pending_temps_in_signal_handler() {
    EXITING.store(true, Ordering::SeqCst);
    let mut at = HEAD.load(Ordering::SeqCst);
    while !at.is_null() {
        // SAFETY: nodes are never freed; a PENDING node's buffer holds a complete NUL-terminated path.
        let node = unsafe { &*at };
        if node.state.load(Ordering::SeqCst) == PENDING {
            unsafe { libc::unlink(node.path.get() as *const libc::c_char) };
        }
        at = node.next as *mut Node;
    }
}
