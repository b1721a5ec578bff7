//! Device memory is host memory, laid out so that misuse faults or is caught:
//! - every allocation is its own mapping, page-aligned (CUDA promises 256 bytes), between two inaccessible guard
//!   pages, so a kernel that reads or writes past either end of a buffer by a page or more faults, and the
//!   SIGSEGV handler (src/fault.rs) names the allocation;
//! - the bytes between the end of the buffer and the end of its last page hold a canary, checked after every piece
//!   of work, so a write even one element past the end is reported with the kernel that did it;
//! - new memory holds 0xff bytes (NaN in f32, bf16 and f16), so reading what nobody wrote shows up in results;
//! - freed memory becomes inaccessible and stays mapped for a while (quarantine), so a use after free faults;
//! - the device has a capacity (`SOFTGPU_MEMORY`), so out-of-memory paths run for real.
//!
//! Pinned host memory (`cuMemHostAlloc`) is tracked too: copies from it read it when they run, not when queued.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::device;
use crate::status::{CUresult, Fault};

const CANARY: u8 = 0xa5;
/// Freed mappings kept inaccessible before they are unmapped: bytes of address space, and mappings (each costs up to
/// three of the kernel's 65,530 memory maps per process: guard, data, guard).
const QUARANTINE_BYTES: usize = 1 << 30;
const QUARANTINE_MAPPINGS: usize = 4096;

/// Who owns an allocation, for the pool and graph-memory statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// `cuMemAllocAsync`: the device's default pool.
    Pool,
    /// An allocation node of a graph: live only between its allocation and free nodes.
    Graph,
    /// `cuMemAlloc`.
    Plain,
    /// `cuMemHostAlloc`: pinned host memory.
    Pinned,
}

#[derive(Debug)]
struct Allocation {
    size: usize,
    /// Start of the mapping (the leading guard page).
    base: usize,
    mapped: usize,
    owner: Owner,
    live: bool,
}

impl Allocation {
    fn data_pages(&self) -> usize {
        self.mapped - 2 * page()
    }
}

/// Memory statistics the pool and graph-memory attributes report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub used: u64,
    pub used_high: u64,
    /// Freed pool memory kept for reuse (RELEASE_THRESHOLD).
    pub cached: u64,
    pub reserved_high: u64,
}

impl Usage {
    pub fn reserved(&self) -> u64 {
        self.used + self.cached
    }
    fn grow(&mut self, size: u64) {
        self.cached = self.cached.saturating_sub(size);
        self.used += size;
        self.used_high = self.used_high.max(self.used);
        self.reserved_high = self.reserved_high.max(self.reserved());
    }
}

#[derive(Default)]
struct Memory {
    /// Keyed by the first byte of the buffer.
    allocations: BTreeMap<usize, Allocation>,
    quarantine: VecDeque<usize>,
    quarantined: usize,
    pool: Usage,
    graph: Usage,
    plain: u64,
    release_threshold: u64,
}

static MEMORY: Mutex<Memory> = Mutex::new(Memory {
    allocations: BTreeMap::new(),
    quarantine: VecDeque::new(),
    quarantined: 0,
    pool: Usage {
        used: 0,
        used_high: 0,
        cached: 0,
        reserved_high: 0,
    },
    graph: Usage {
        used: 0,
        used_high: 0,
        cached: 0,
        reserved_high: 0,
    },
    plain: 0,
    release_threshold: 0,
});

fn memory() -> MutexGuard<'static, Memory> {
    MEMORY.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl Memory {
    fn device_bytes(&self) -> u64 {
        self.pool.reserved() + self.graph.reserved() + self.plain
    }

    /// The allocation holding address `p` (live or not), by the buffer it belongs to.
    fn find(&self, p: usize) -> Option<(usize, &Allocation)> {
        let (&start, a) = self.allocations.range(..=p).next_back()?;
        (p < start + a.data_pages().max(1)).then_some((start, a))
    }

    /// The allocation whose mapping (guard pages included) holds `p`.
    fn find_mapping(&self, p: usize) -> Option<(usize, &Allocation)> {
        let (&start, a) = self.allocations.range(..=p + page()).next_back()?;
        (p >= a.base && p < a.base + a.mapped).then_some((start, a))
    }
}

/// Maps `size` bytes between guard pages; accessible now unless `reserve_only` (graph memory is mapped at replay).
fn map(size: usize, reserve_only: bool) -> Option<(usize, usize)> {
    let data = round_up(size.max(1), page());
    let mapped = data.checked_add(2 * page())?;
    // SAFETY: a fresh anonymous mapping; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mapped,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let start = base as usize + page();
    if !reserve_only && !open(start, size) {
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(base, mapped) };
        return None;
    }
    Some((base as usize, mapped))
}

/// Makes the buffer at `start` accessible, fresh (0xff) and canaried.
fn open(start: usize, size: usize) -> bool {
    let data = round_up(size.max(1), page());
    // SAFETY: `start..start + data` is the data part of one of our mappings.
    unsafe {
        if libc::mprotect(start as *mut _, data, libc::PROT_READ | libc::PROT_WRITE) != 0 {
            return false;
        }
        std::ptr::write_bytes(start as *mut u8, 0xff, size);
        std::ptr::write_bytes((start + size) as *mut u8, CANARY, data - size);
    }
    true
}

fn close(start: usize, a: &Allocation) {
    // SAFETY: the data pages of one of our mappings.
    unsafe { libc::mprotect(start as *mut _, a.data_pages(), libc::PROT_NONE) };
}

/// Allocates `size` bytes for `owner`; out of memory when the device's capacity would be exceeded.
pub fn alloc(size: usize, owner: Owner) -> Result<usize, Fault> {
    let mut m = memory();
    let needed = size as u64;
    let counted = owner != Owner::Pinned;
    if counted {
        // Pool memory kept for reuse is given back before an allocation fails, as the driver does.
        let available = device::capacity().saturating_sub(m.device_bytes() - m.pool.cached);
        if needed > available {
            return Err(Fault::new(
                CUresult::CUDA_ERROR_OUT_OF_MEMORY,
                format!(
                    "{size} bytes requested, {available} of the device's {} free (SOFTGPU_MEMORY sets the capacity)",
                    device::capacity()
                ),
            ));
        }
    }
    let (base, mapped) = map(size, owner == Owner::Graph).ok_or_else(|| {
        Fault::new(
            CUresult::CUDA_ERROR_OUT_OF_MEMORY,
            format!("the host cannot map {size} bytes"),
        )
    })?;
    let start = base + page();
    match owner {
        Owner::Pool => {
            let over = (m.pool.cached + m.pool.used + needed).saturating_sub(device::capacity());
            m.pool.cached = m.pool.cached.saturating_sub(over);
            m.pool.grow(needed);
        }
        Owner::Plain => m.plain += needed,
        Owner::Graph | Owner::Pinned => {}
    }
    m.allocations.insert(
        start,
        Allocation {
            size,
            base,
            mapped,
            owner,
            live: owner != Owner::Graph,
        },
    );
    Ok(start)
}

/// Frees the allocation starting at `ptr`, which must be live and of `owner`'s kind.
pub fn free(ptr: usize, owners: &[Owner]) -> Result<(), Fault> {
    let mut m = memory();
    let Some(a) = m.allocations.get_mut(&ptr) else {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("{ptr:#x} is not the start of an allocation"),
        ));
    };
    if !a.live || !owners.contains(&a.owner) {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!(
                "{ptr:#x} ({} bytes, {:?}) is {} (a double free?)",
                a.size,
                a.owner,
                if a.live {
                    "another kind of memory"
                } else {
                    "already freed"
                }
            ),
        ));
    }
    a.live = false;
    let (size, owner) = (a.size as u64, a.owner);
    let a = &m.allocations[&ptr];
    close(ptr, a);
    match owner {
        Owner::Pool => {
            m.pool.used -= size;
            m.pool.cached += size;
        }
        Owner::Plain => m.plain -= size,
        Owner::Graph | Owner::Pinned => {}
    }
    if owner != Owner::Graph {
        quarantine(&mut m, ptr);
    }
    Ok(())
}

/// Keeps a freed mapping inaccessible for a while, then unmaps it.
fn quarantine(m: &mut Memory, ptr: usize) {
    m.quarantined += m.allocations[&ptr].mapped;
    m.quarantine.push_back(ptr);
    while m.quarantined > QUARANTINE_BYTES || m.quarantine.len() > QUARANTINE_MAPPINGS {
        let Some(old) = m.quarantine.pop_front() else {
            break;
        };
        if let Some(a) = m.allocations.remove(&old) {
            m.quarantined -= a.mapped;
            // SAFETY: the whole mapping of a freed allocation nothing refers to any more.
            unsafe { libc::munmap(a.base as *mut _, a.mapped) };
        }
    }
}

/// Reserves graph memory for an allocation node: address fixed now, accessible only between the node's allocation
/// and free at each replay.
pub fn reserve_graph(size: usize) -> Result<usize, Fault> {
    alloc(size, Owner::Graph)
}

/// The allocation node of graph memory at `ptr` runs: the buffer becomes live (fresh contents).
pub fn open_graph(ptr: usize) -> Result<(), Fault> {
    let mut m = memory();
    let capacity = device::capacity();
    let total = m.device_bytes();
    let Some(a) = m.allocations.get_mut(&ptr) else {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
            format!("graph allocation {ptr:#x} was released"),
        ));
    };
    if a.live {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!(
                "graph allocation {ptr:#x} ({} bytes) is still allocated from the last launch (never freed)",
                a.size
            ),
        ));
    }
    let size = a.size;
    if total + size as u64 > capacity {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_OUT_OF_MEMORY,
            format!("graph allocation of {size} bytes exceeds the device's capacity"),
        ));
    }
    if !open(ptr, size) {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_OUT_OF_MEMORY,
            format!("cannot map {size} bytes"),
        ));
    }
    a.live = true;
    m.graph.grow(size as u64);
    Ok(())
}

/// Frees graph memory (its free node, or a free of it after the graph ran).
pub fn free_graph(ptr: usize) -> Result<(), Fault> {
    free(ptr, &[Owner::Graph])?;
    let mut m = memory();
    let size = m.allocations[&ptr].size as u64;
    m.graph.used -= size;
    m.graph.cached += size;
    Ok(())
}

/// Unmaps graph memory reserved by a destroyed graph (its address space goes back to the host).
pub fn release_graph(ptr: usize) {
    let mut m = memory();
    if let Some(a) = m.allocations.get(&ptr) {
        if a.live {
            // Still allocated by the user's program (allocated by the graph, not freed in it): kept until freed.
            return;
        }
        let a = m.allocations.remove(&ptr).expect("present");
        // SAFETY: the whole mapping of a graph allocation no graph refers to any more.
        unsafe { libc::munmap(a.base as *mut _, a.mapped) };
    }
}

/// Whether `ptr` is a graph allocation (a free of it is a graph free).
pub fn owner_of(ptr: usize) -> Option<Owner> {
    memory().allocations.get(&ptr).map(|a| a.owner)
}

/// Checks that `[ptr, ptr + bytes)` lies inside one live device allocation.
pub fn check_device(ptr: u64, bytes: u64) -> Result<(), Fault> {
    check(ptr, bytes, &[Owner::Pool, Owner::Graph, Owner::Plain])
}

/// Checks that `[ptr, ptr + bytes)` lies inside one live allocation of `owners`.
fn check(ptr: u64, bytes: u64, owners: &[Owner]) -> Result<(), Fault> {
    let m = memory();
    let p = ptr as usize;
    let illegal = |why: String| Err(Fault::new(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS, why));
    match m.find(p) {
        None => illegal(format!("{ptr:#x} is not in any allocation")),
        // At an API call, graph memory a capture reserved is a valid operand: it exists when the graph runs.
        Some((start, a)) if !a.live && a.owner == Owner::Graph && !crate::fault::executing() => {
            in_bounds(p - start, bytes, a.size, ptr, start)
        }
        Some((start, a)) if !a.live => illegal(format!(
            "{ptr:#x} is in an allocation of {} bytes at {start:#x} that was freed",
            a.size
        )),
        Some((_, a)) if !owners.contains(&a.owner) => illegal(format!(
            "{ptr:#x} is {:?} memory, not device memory",
            a.owner
        )),
        Some((start, a)) => in_bounds(p - start, bytes, a.size, ptr, start),
    }
}

fn in_bounds(offset: usize, bytes: u64, size: usize, ptr: u64, start: usize) -> Result<(), Fault> {
    if offset as u64 + bytes <= size as u64 {
        return Ok(());
    }
    Err(Fault::new(
        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
        format!(
            "{bytes} bytes at {ptr:#x} run {} bytes past the end of the allocation of {size} bytes at {start:#x}",
            offset as u64 + bytes - size as u64
        ),
    ))
}

/// Whether `[ptr, ptr + bytes)` is pinned host memory (live), `Err` if it overlaps pinned memory badly.
pub fn is_pinned(ptr: usize, bytes: usize) -> Result<bool, Fault> {
    let m = memory();
    match m.find(ptr) {
        Some((_, a)) if a.owner == Owner::Pinned => {
            drop(m);
            check(ptr as u64, bytes as u64, &[Owner::Pinned]).map(|()| true)
        }
        _ => Ok(false),
    }
}

/// Checks pinned host memory is still allocated when a queued copy runs.
pub fn check_pinned(ptr: usize, bytes: usize) -> Result<(), Fault> {
    check(ptr as u64, bytes as u64, &[Owner::Pinned])
}

/// Finds every live buffer whose canary was overwritten since it was allocated, naming the bytes past its end.
pub fn check_canaries() -> Result<(), Fault> {
    let m = memory();
    for (&start, a) in m.allocations.iter().filter(|(_, a)| a.live) {
        let end = start + a.size;
        let slack = round_up(a.size.max(1), page()) - a.size;
        // SAFETY: the canary bytes of a live (accessible) allocation.
        let canary = unsafe { std::slice::from_raw_parts(end as *const u8, slack) };
        if let Some(i) = canary.iter().position(|&b| b != CANARY) {
            let last = canary.iter().rposition(|&b| b != CANARY).unwrap_or(i);
            let detail = format!(
                "bytes {i}..={last} past the end of the {:?} allocation of {} bytes at {start:#x} were written",
                a.owner, a.size
            );
            // Re-arm, so one overrun is reported once.
            // SAFETY: as above, writable.
            unsafe { std::ptr::write_bytes(end as *mut u8, CANARY, slack) };
            return Err(Fault::new(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS, detail));
        }
    }
    Ok(())
}

/// Describes the allocation whose mapping holds `addr` (for the fault handler; never blocks).
pub fn describe(addr: usize) -> Option<String> {
    let m = MEMORY.try_lock().ok()?;
    let (start, a) = m.find_mapping(addr)?;
    let at = if addr < start {
        format!("{} bytes before the start", start - addr)
    } else if addr >= start + a.size {
        format!("{} bytes past the end", addr - start - a.size)
    } else {
        format!("at offset {}", addr - start)
    };
    Some(format!(
        "{addr:#x} is {at} of the {}{:?} allocation of {} bytes at {start:#x}",
        if a.live { "" } else { "FREED " },
        a.owner,
        a.size
    ))
}

/// Pool statistics.
pub fn pool_usage() -> Usage {
    memory().pool
}

/// Graph memory statistics.
pub fn graph_usage() -> Usage {
    memory().graph
}

/// Sets a pool high-water mark back to the current figure (the driver accepts only 0 as the new value).
pub fn reset_pool_high(reserved: bool) {
    let mut m = memory();
    if reserved {
        m.pool.reserved_high = m.pool.reserved();
    } else {
        m.pool.used_high = m.pool.used;
    }
}

/// As [`reset_pool_high`] for graph memory.
pub fn reset_graph_high(reserved: bool) {
    let mut m = memory();
    if reserved {
        m.graph.reserved_high = m.graph.reserved();
    } else {
        m.graph.used_high = m.graph.used;
    }
}

pub fn release_threshold() -> u64 {
    memory().release_threshold
}

pub fn set_release_threshold(v: u64) {
    memory().release_threshold = v;
}

/// `cuMemPoolTrimTo`: keeps at least `keep` bytes reserved, releases the rest of the cached memory.
pub fn trim_pool(keep: u64) {
    let mut m = memory();
    let reserved = m.pool.reserved();
    if reserved > keep {
        m.pool.cached = m.pool.cached.saturating_sub(reserved - keep);
    }
}

/// At a synchronisation, the pool releases cached memory above its release threshold.
pub fn release_above_threshold() {
    let mut m = memory();
    let keep = m.release_threshold;
    let reserved = m.pool.reserved();
    if reserved > keep {
        m.pool.cached = m.pool.cached.saturating_sub(reserved - keep);
    }
}

/// `cuDeviceGraphMemTrim`: graph memory no graph holds goes back.
pub fn trim_graph() {
    memory().graph.cached = 0;
}

/// Bytes the device has free, for `cuMemGetInfo`.
pub fn free_bytes() -> u64 {
    device::capacity().saturating_sub(memory().device_bytes())
}
