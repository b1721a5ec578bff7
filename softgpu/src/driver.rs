//! The driver API the engine reaches (every call src/engine/cuda/ makes through cudarc), exported under
//! the names cudarc resolves, plus a few neighbours it may reach next. Each call validates what it is given, answers
//! or queues work, and on failure prints why (src/status.rs) and returns the driver's code.

#![allow(non_snake_case)]
// The C API is the contract: each function's safety requirements are the driver's documented ones for it.
#![allow(clippy::missing_safety_doc)]

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use cudarc::driver::sys::{
    CUcontext, CUdevice, CUdevice_attribute, CUdeviceptr, CUevent, CUfunction,
    CUfunction_attribute, CUgraph, CUgraphExec, CUgraphMem_attribute, CUmemPool_attribute,
    CUmemoryPool, CUmodule, CUstream, CUstreamCaptureMode, CUstreamCaptureStatus,
};

use crate::memory::{self, Owner};
use crate::status::{fail, result, CUresult, Fault};
use crate::stream::{self, from_handle, to_handle, Event};
use crate::work::Work;
use crate::{context, device, fault, graph, module};

const OK: CUresult = CUresult::CUDA_SUCCESS;
/// The one pool handle (`cuDeviceGetDefaultMemPool`).
const POOL: CUmemoryPool = 0x9001_0000 as CUmemoryPool;
/// CU_EVENT_DISABLE_TIMING.
const EVENT_DISABLE_TIMING: c_uint = 0x2;

macro_rules! out {
    ($call:literal, $ptr:expr) => {
        if $ptr.is_null() {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                $call,
                "null output pointer",
            );
        }
    };
}

fn check_device(call: &str, dev: CUdevice) -> Result<(), CUresult> {
    if dev == 0 {
        Ok(())
    } else {
        Err(fail(
            CUresult::CUDA_ERROR_INVALID_DEVICE,
            call,
            format!("device {dev} does not exist (one device)"),
        ))
    }
}

// ------------------------------------------------------------------------------------------------ device, context

#[no_mangle]
pub extern "C" fn cuInit(flags: c_uint) -> CUresult {
    if flags != 0 {
        return fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            "cuInit",
            "flags must be 0",
        );
    }
    fault::install();
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    out!("cuDriverGetVersion", version);
    // SAFETY: checked non-null.
    unsafe { *version = 13000 };
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    out!("cuDeviceGetCount", count);
    // SAFETY: checked non-null.
    unsafe { *count = 1 };
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
    out!("cuDeviceGet", device);
    if let Err(e) = check_device("cuDeviceGet", ordinal) {
        return e;
    }
    // SAFETY: checked non-null.
    unsafe { *device = 0 };
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    out!("cuDeviceGetName", name);
    if let Err(e) = check_device("cuDeviceGetName", dev) {
        return e;
    }
    let bytes = device::NAME.as_bytes();
    let n = bytes
        .len()
        .min(usize::try_from(len).unwrap_or(0).saturating_sub(1));
    // SAFETY: the caller's buffer holds `len` bytes; n + 1 ≤ len.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), name.cast::<u8>(), n);
        *name.add(n) = 0;
    }
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    out!("cuDeviceTotalMem", bytes);
    if let Err(e) = check_device("cuDeviceTotalMem", dev) {
        return e;
    }
    // SAFETY: checked non-null.
    unsafe { *bytes = device::capacity() as usize };
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    pi: *mut c_int,
    attr: CUdevice_attribute,
    dev: CUdevice,
) -> CUresult {
    out!("cuDeviceGetAttribute", pi);
    if let Err(e) = check_device("cuDeviceGetAttribute", dev) {
        return e;
    }
    match device::attribute(attr) {
        // SAFETY: checked non-null.
        Some(v) => unsafe {
            *pi = v;
            OK
        },
        None => fail(
            CUresult::CUDA_ERROR_NOT_SUPPORTED,
            "cuDeviceGetAttribute",
            format!("{attr:?} is not modelled"),
        ),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(ctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    out!("cuDevicePrimaryCtxRetain", ctx);
    if let Err(e) = check_device("cuDevicePrimaryCtxRetain", dev) {
        return e;
    }
    // SAFETY: checked non-null.
    unsafe { *ctx = context::retain() };
    OK
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    if let Err(e) = check_device("cuDevicePrimaryCtxRelease", dev) {
        return e;
    }
    result("cuDevicePrimaryCtxRelease", context::release())
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(ctx: *mut CUcontext) -> CUresult {
    out!("cuCtxGetCurrent", ctx);
    // SAFETY: checked non-null.
    unsafe { *ctx = context::current() };
    OK
}

#[no_mangle]
pub extern "C" fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult {
    result("cuCtxSetCurrent", context::set_current(ctx))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    out!("cuCtxGetDevice", device);
    if let Err(f) = context::check() {
        return fail(f.code, "cuCtxGetDevice", f.detail);
    }
    // SAFETY: checked non-null.
    unsafe { *device = 0 };
    OK
}

#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    let r = context::check()
        .and_then(|()| stream::invalidate_thread_captures("cuCtxSynchronize"))
        .and_then(|()| stream::drain_all());
    memory::release_above_threshold();
    result("cuCtxSynchronize", r)
}

// ------------------------------------------------------------------------------------------------ streams

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(s: *mut CUstream, _flags: c_uint) -> CUresult {
    out!("cuStreamCreate", s);
    if let Err(f) = context::check() {
        return fail(f.code, "cuStreamCreate", f.detail);
    }
    // SAFETY: checked non-null.
    unsafe { *s = stream::create() };
    OK
}

#[no_mangle]
pub extern "C" fn cuStreamDestroy_v2(s: CUstream) -> CUresult {
    result("cuStreamDestroy", stream::destroy(s))
}

fn synchronize(call: &str, s: CUstream) -> CUresult {
    let r = context::check()
        .and_then(|()| stream::get(s))
        .and_then(|st| {
            if st.capture_state().0 {
                st.invalidate(&format!("{call} on the capturing stream"));
                return Err(Fault::new(
                    CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                    "the stream is capturing (the capture is now invalid)",
                ));
            }
            if st.legacy {
                stream::invalidate_thread_captures(&format!("{call} on the legacy stream"))?;
            }
            st.drain(u64::MAX)
        });
    memory::release_above_threshold();
    result(call, r)
}

#[no_mangle]
pub extern "C" fn cuStreamSynchronize(s: CUstream) -> CUresult {
    synchronize("cuStreamSynchronize", s)
}

/// Work only runs at synchronisation points here, so a query is one: it runs the stream's work and says "done".
#[no_mangle]
pub extern "C" fn cuStreamQuery(s: CUstream) -> CUresult {
    synchronize("cuStreamQuery", s)
}

#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(s: CUstream, event: CUevent, _flags: c_uint) -> CUresult {
    let r = (|| {
        let st = stream::get(s)?;
        let (mark, captured) = stream::with_events(|events| {
            let e = events.get(&from_handle(event)).ok_or_else(|| {
                Fault::new(CUresult::CUDA_ERROR_INVALID_HANDLE, "not a live event")
            })?;
            Ok::<_, Fault>((e.mark.clone(), e.captured))
        })?;
        if st.capture_state().0 {
            st.invalidate("a wait on an event from outside the capture");
            return Err(Fault::new(
                if captured { CUresult::CUDA_ERROR_NOT_SUPPORTED } else { CUresult::CUDA_ERROR_STREAM_CAPTURE_ISOLATION },
                "cross-stream waits inside a capture are not modelled (the engine captures one stream)",
            ));
        }
        let Some(mark) = mark else { return Ok(()) };
        if mark.stream.id == st.id {
            return Ok(());
        }
        st.submit(Work::new("wait for an event", move || {
            mark.stream.drain(mark.seq)
        }))
        .map(|_| ())
    })();
    result("cuStreamWaitEvent", r)
}

#[no_mangle]
pub extern "C" fn cuStreamBeginCapture_v2(s: CUstream, mode: CUstreamCaptureMode) -> CUresult {
    result(
        "cuStreamBeginCapture",
        context::check()
            .and_then(|()| stream::get(s))
            .and_then(|st| st.begin_capture(mode)),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamEndCapture(s: CUstream, graph_out: *mut CUgraph) -> CUresult {
    out!("cuStreamEndCapture", graph_out);
    // SAFETY: checked non-null.
    unsafe { *graph_out = std::ptr::null_mut() };
    match stream::get(s).and_then(|st| st.end_capture()) {
        Ok(g) => {
            // SAFETY: checked non-null.
            unsafe { *graph_out = to_handle(graph::add_graph(g)) };
            OK
        }
        Err(f) => fail(f.code, "cuStreamEndCapture", f.detail),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing(
    s: CUstream,
    status: *mut CUstreamCaptureStatus,
) -> CUresult {
    out!("cuStreamIsCapturing", status);
    match stream::get(s) {
        Ok(st) => {
            let v = match st.capture_state() {
                (false, _) => CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE,
                (true, false) => CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE,
                (true, true) => CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_INVALIDATED,
            };
            // SAFETY: checked non-null.
            unsafe { *status = v };
            OK
        }
        Err(f) => fail(f.code, "cuStreamIsCapturing", f.detail),
    }
}

// ------------------------------------------------------------------------------------------------ events

#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(event: *mut CUevent, flags: c_uint) -> CUresult {
    out!("cuEventCreate", event);
    if let Err(f) = context::check() {
        return fail(f.code, "cuEventCreate", f.detail);
    }
    let id = stream::next_id();
    stream::with_events(|events| {
        events.insert(
            id,
            Event {
                timing: flags & EVENT_DISABLE_TIMING == 0,
                ..Event::default()
            },
        )
    });
    // SAFETY: checked non-null.
    unsafe { *event = to_handle(id) };
    OK
}

#[no_mangle]
pub extern "C" fn cuEventDestroy_v2(event: CUevent) -> CUresult {
    match stream::with_events(|events| events.remove(&from_handle(event))) {
        Some(_) => OK,
        None => fail(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            "cuEventDestroy",
            "not a live event",
        ),
    }
}

#[no_mangle]
pub extern "C" fn cuEventRecord(event: CUevent, s: CUstream) -> CUresult {
    result("cuEventRecord", stream::record_event(from_handle(event), s))
}

#[no_mangle]
pub extern "C" fn cuEventSynchronize(event: CUevent) -> CUresult {
    result("cuEventSynchronize", stream::sync_event(from_handle(event)))
}

#[no_mangle]
pub extern "C" fn cuEventQuery(event: CUevent) -> CUresult {
    result("cuEventQuery", stream::sync_event(from_handle(event)))
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    start: CUevent,
    end: CUevent,
) -> CUresult {
    out!("cuEventElapsedTime", ms);
    let time = |e: CUevent| -> Result<Instant, Fault> {
        stream::sync_event(from_handle(e))?;
        stream::with_events(|events| {
            let ev = events.get(&from_handle(e)).ok_or_else(|| {
                Fault::new(CUresult::CUDA_ERROR_INVALID_HANDLE, "not a live event")
            })?;
            if !ev.timing {
                return Err(Fault::new(
                    CUresult::CUDA_ERROR_INVALID_HANDLE,
                    "the event was created with DISABLE_TIMING",
                ));
            }
            let t = *ev.time.lock().unwrap_or_else(|p| p.into_inner());
            t.ok_or_else(|| {
                Fault::new(
                    CUresult::CUDA_ERROR_INVALID_HANDLE,
                    "the event was never recorded",
                )
            })
        })
    };
    match time(start).and_then(|a| Ok((a, time(end)?))) {
        Ok((a, b)) => {
            let d = if b >= a {
                (b - a).as_secs_f32()
            } else {
                -(a - b).as_secs_f32()
            };
            // SAFETY: checked non-null.
            unsafe { *ms = d * 1e3 };
            OK
        }
        Err(f) => fail(f.code, "cuEventElapsedTime", f.detail),
    }
}

// ------------------------------------------------------------------------------------------------ memory

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    s: CUstream,
) -> CUresult {
    out!("cuMemAllocAsync", dptr);
    let r = (|| {
        context::check()?;
        let st = stream::get(s)?;
        let (capturing, invalid) = st.capture_state();
        if capturing {
            if invalid {
                return Err(Fault::new(
                    CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED,
                    "the capture was invalidated",
                ));
            }
            // A graph allocation node: the address is fixed now, the memory exists from the node's run.
            let p = memory::reserve_graph(bytes)?;
            st.capture_allocation(p);
            st.submit(Work::new(
                format!("graph allocation of {bytes} bytes"),
                move || memory::open_graph(p),
            ))?;
            return Ok(p);
        }
        memory::alloc(bytes, Owner::Pool)
    })();
    match r {
        Ok(p) => {
            // SAFETY: checked non-null.
            unsafe { *dptr = p as CUdeviceptr };
            OK
        }
        Err(f) => fail(f.code, "cuMemAllocAsync", f.detail),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, s: CUstream) -> CUresult {
    let r = (|| {
        context::check()?;
        let st = stream::get(s)?;
        let p = dptr as usize;
        let owner = memory::owner_of(p).ok_or_else(|| {
            Fault::new(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("{dptr:#x} is not the start of an allocation"),
            )
        })?;
        if owner == Owner::Pool && st.capture_state().0 {
            eprintln!(
                "softgpu: warning: a captured cuMemFreeAsync frees {dptr:#x}, allocated outside the graph: every replay \
                 after the first frees it again"
            );
        }
        st.submit(Work::new(format!("free {dptr:#x}"), move || match owner {
            Owner::Graph => memory::free_graph(p),
            _ => memory::free(p, &[Owner::Pool]),
        }))
        .map(|_| ())
    })();
    result("cuMemFreeAsync", r)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    out!("cuMemAlloc", dptr);
    let r = context::check()
        .and_then(|()| stream::invalidate_thread_captures("cuMemAlloc"))
        .and_then(|()| memory::alloc(bytes, Owner::Plain));
    match r {
        Ok(p) => {
            // SAFETY: checked non-null.
            unsafe { *dptr = p as CUdeviceptr };
            OK
        }
        Err(f) => fail(f.code, "cuMemAlloc", f.detail),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    // cuMemFree synchronises with the device first.
    let r = context::check()
        .and_then(|()| stream::invalidate_thread_captures("cuMemFree"))
        .and_then(|()| stream::drain_all())
        .and_then(|()| memory::free(dptr as usize, &[Owner::Plain, Owner::Pool]));
    result("cuMemFree", r)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(
    pp: *mut *mut c_void,
    bytes: usize,
    _flags: c_uint,
) -> CUresult {
    out!("cuMemHostAlloc", pp);
    let r = context::check()
        .and_then(|()| stream::invalidate_thread_captures("cuMemHostAlloc"))
        .and_then(|()| memory::alloc(bytes, Owner::Pinned));
    match r {
        Ok(p) => {
            // SAFETY: checked non-null.
            unsafe { *pp = p as *mut c_void };
            OK
        }
        Err(f) => fail(f.code, "cuMemHostAlloc", f.detail),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    // Freeing pinned memory waits for the device, so no queued copy reads freed memory.
    let r = stream::invalidate_thread_captures("cuMemFreeHost")
        .and_then(|()| stream::drain_all())
        .and_then(|()| memory::free(p as usize, &[Owner::Pinned]));
    result("cuMemFreeHost", r)
}

/// Queues a copy between host memory and device memory. Pinned host memory is read or written when the copy runs;
/// pageable memory is read at the call (the driver stages it before returning) and written when the copy runs —
/// stricter than today's driver, which finishes a pageable download before returning, so that a read before the
/// synchronisation is caught. Until then the destination holds 0xff bytes (NaN), and a destination the host changed
/// meanwhile (read and freed: the allocator reuses it) is a fault instead of a write into someone else's memory.
fn copy_async(
    call: &str,
    dst: usize,
    src: usize,
    bytes: usize,
    s: CUstream,
    to_device: bool,
) -> CUresult {
    let r = (|| {
        context::check()?;
        let st = stream::get(s)?;
        let (device, host) = if to_device { (dst, src) } else { (src, dst) };
        memory::check_device(device as u64, bytes as u64)?;
        let pinned = memory::is_pinned(host, bytes)?;
        if !pinned && st.capture_state().0 {
            eprintln!("softgpu: warning: {call} captured with pageable host memory at {host:#x}: every replay re-reads it");
        }
        let staged: Option<Vec<u8>> = (to_device && !pinned && !st.capture_state().0)
            // SAFETY: the caller's host buffer holds `bytes` bytes at the call.
            .then(|| unsafe { std::slice::from_raw_parts(src as *const u8, bytes) }.to_vec());
        let poisoned = !to_device && !pinned && !st.capture_state().0;
        if poisoned {
            // SAFETY: the caller's destination holds `bytes` bytes.
            unsafe { std::ptr::write_bytes(dst as *mut u8, 0xff, bytes) };
        }
        let label = format!("{call} of {bytes} bytes");
        st.submit(Work::new(label, move || {
            memory::check_device(device as u64, bytes as u64)?;
            if pinned {
                memory::check_pinned(host, bytes)?;
            }
            // SAFETY: the destination the caller promised to keep until the copy has run.
            if poisoned && unsafe { std::slice::from_raw_parts(dst as *const u8, bytes) }.iter().any(|&b| b != 0xff) {
                return Err(Fault::new(
                    CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
                    format!(
                        "the host memory at {dst:#x} changed before this download ran: it was used (or freed) without \
                         synchronising the stream first"
                    ),
                ));
            }
            // SAFETY: both ranges were checked (device now, host at the call or now for pinned memory).
            unsafe {
                match &staged {
                    Some(v) => std::ptr::copy_nonoverlapping(v.as_ptr(), dst as *mut u8, bytes),
                    None => std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes),
                }
            }
            Ok(())
        }))
        .map(|_| ())
    })();
    result(call, r)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    bytes: usize,
    s: CUstream,
) -> CUresult {
    copy_async(
        "cuMemcpyHtoDAsync",
        dst as usize,
        src as usize,
        bytes,
        s,
        true,
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    bytes: usize,
    s: CUstream,
) -> CUresult {
    copy_async(
        "cuMemcpyDtoHAsync",
        dst as usize,
        src as usize,
        bytes,
        s,
        false,
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    bytes: usize,
    s: CUstream,
) -> CUresult {
    let r = (|| {
        context::check()?;
        memory::check_device(dst, bytes as u64)?;
        memory::check_device(src, bytes as u64)?;
        stream::get(s)?
            .submit(Work::new(
                format!("cuMemcpyDtoDAsync of {bytes} bytes"),
                move || {
                    memory::check_device(dst, bytes as u64)?;
                    memory::check_device(src, bytes as u64)?;
                    // SAFETY: both ranges checked just now; device buffers may overlap only if the caller aliased them.
                    unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
                    Ok(())
                },
            ))
            .map(|_| ())
    })();
    result("cuMemcpyDtoDAsync", r)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(
    dst: CUdeviceptr,
    value: u8,
    n: usize,
    s: CUstream,
) -> CUresult {
    let r = (|| {
        context::check()?;
        memory::check_device(dst, n as u64)?;
        stream::get(s)?
            .submit(Work::new(
                format!("cuMemsetD8Async of {n} bytes"),
                move || {
                    memory::check_device(dst, n as u64)?;
                    // SAFETY: checked just now.
                    unsafe { std::ptr::write_bytes(dst as *mut u8, value, n) };
                    Ok(())
                },
            ))
            .map(|_| ())
    })();
    result("cuMemsetD8Async", r)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    out!("cuMemGetInfo", free);
    out!("cuMemGetInfo", total);
    // SAFETY: checked non-null.
    unsafe {
        *free = memory::free_bytes() as usize;
        *total = device::capacity() as usize;
    }
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(
    pool: *mut CUmemoryPool,
    dev: CUdevice,
) -> CUresult {
    out!("cuDeviceGetDefaultMemPool", pool);
    if let Err(e) = check_device("cuDeviceGetDefaultMemPool", dev) {
        return e;
    }
    // SAFETY: checked non-null.
    unsafe { *pool = POOL };
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolGetAttribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> CUresult {
    use CUmemPool_attribute as P;
    out!("cuMemPoolGetAttribute", value);
    if pool != POOL {
        return fail(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            "cuMemPoolGetAttribute",
            "not the device's pool",
        );
    }
    let u = memory::pool_usage();
    let v = match attr {
        P::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => memory::release_threshold(),
        P::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT => u.reserved(),
        P::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH => u.reserved_high,
        P::CU_MEMPOOL_ATTR_USED_MEM_CURRENT => u.used,
        P::CU_MEMPOOL_ATTR_USED_MEM_HIGH => u.used_high,
        other => {
            return fail(
                CUresult::CUDA_ERROR_NOT_SUPPORTED,
                "cuMemPoolGetAttribute",
                format!("{other:?} is not modelled"),
            )
        }
    };
    // SAFETY: these attributes are cuuint64_t; checked non-null.
    unsafe { *value.cast::<u64>() = v };
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolSetAttribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> CUresult {
    use CUmemPool_attribute as P;
    out!("cuMemPoolSetAttribute", value);
    if pool != POOL {
        return fail(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            "cuMemPoolSetAttribute",
            "not the device's pool",
        );
    }
    // SAFETY: these attributes are cuuint64_t; checked non-null.
    let v = unsafe { *value.cast::<u64>() };
    match attr {
        P::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => memory::set_release_threshold(v),
        P::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH | P::CU_MEMPOOL_ATTR_USED_MEM_HIGH if v == 0 => {
            memory::reset_pool_high(attr == P::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)
        }
        other => {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuMemPoolSetAttribute",
                format!("{other:?} cannot be set to {v}"),
            )
        }
    }
    OK
}

#[no_mangle]
pub extern "C" fn cuMemPoolTrimTo(pool: CUmemoryPool, keep: usize) -> CUresult {
    if pool != POOL {
        return fail(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            "cuMemPoolTrimTo",
            "not the device's pool",
        );
    }
    memory::trim_pool(keep as u64);
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetGraphMemAttribute(
    dev: CUdevice,
    attr: CUgraphMem_attribute,
    value: *mut c_void,
) -> CUresult {
    use CUgraphMem_attribute as G;
    out!("cuDeviceGetGraphMemAttribute", value);
    if let Err(e) = check_device("cuDeviceGetGraphMemAttribute", dev) {
        return e;
    }
    let u = memory::graph_usage();
    let v = match attr {
        G::CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT => u.used,
        G::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH => u.used_high,
        G::CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT => u.reserved(),
        G::CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH => u.reserved_high,
    };
    // SAFETY: graph memory attributes are cuuint64_t; checked non-null.
    unsafe { *value.cast::<u64>() = v };
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceSetGraphMemAttribute(
    dev: CUdevice,
    attr: CUgraphMem_attribute,
    value: *mut c_void,
) -> CUresult {
    use CUgraphMem_attribute as G;
    out!("cuDeviceSetGraphMemAttribute", value);
    if let Err(e) = check_device("cuDeviceSetGraphMemAttribute", dev) {
        return e;
    }
    // SAFETY: cuuint64_t; checked non-null.
    let v = unsafe { *value.cast::<u64>() };
    match attr {
        G::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH | G::CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH if v == 0 => {
            memory::reset_graph_high(attr == G::CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH);
            OK
        }
        other => fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            "cuDeviceSetGraphMemAttribute",
            format!("{other:?} cannot be set to {v}"),
        ),
    }
}

#[no_mangle]
pub extern "C" fn cuDeviceGraphMemTrim(dev: CUdevice) -> CUresult {
    if let Err(e) = check_device("cuDeviceGraphMemTrim", dev) {
        return e;
    }
    memory::trim_graph();
    OK
}

// ------------------------------------------------------------------------------------------------ modules, launches

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(m: *mut CUmodule, image: *const c_void) -> CUresult {
    out!("cuModuleLoadData", m);
    // SAFETY: the caller passes a whole image.
    match context::check().and_then(|()| unsafe { module::load(image) }) {
        Ok(id) => {
            // SAFETY: checked non-null.
            unsafe { *m = to_handle(id) };
            OK
        }
        Err(f) => fail(f.code, "cuModuleLoadData", f.detail),
    }
}

#[no_mangle]
pub extern "C" fn cuModuleUnload(m: CUmodule) -> CUresult {
    result("cuModuleUnload", module::unload(from_handle(m)))
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    f: *mut CUfunction,
    m: CUmodule,
    name: *const c_char,
) -> CUresult {
    out!("cuModuleGetFunction", f);
    out!("cuModuleGetFunction", name);
    // SAFETY: a NUL-terminated name, checked non-null.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    match module::function(from_handle(m), &name) {
        Ok(id) => {
            // SAFETY: checked non-null.
            unsafe { *f = to_handle(id) };
            OK
        }
        Err(e) => fail(e.code, "cuModuleGetFunction", e.detail),
    }
}

#[no_mangle]
pub extern "C" fn cuFuncSetAttribute(
    f: CUfunction,
    attr: CUfunction_attribute,
    value: c_int,
) -> CUresult {
    match attr {
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => result(
            "cuFuncSetAttribute",
            module::set_max_dynamic_smem(from_handle(f), value),
        ),
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT => OK,
        other => fail(
            CUresult::CUDA_ERROR_NOT_SUPPORTED,
            "cuFuncSetAttribute",
            format!("{other:?} is not modelled"),
        ),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(
    pi: *mut c_int,
    attr: CUfunction_attribute,
    f: CUfunction,
) -> CUresult {
    out!("cuFuncGetAttribute", pi);
    match module::attribute(from_handle(f), attr) {
        Ok(v) => {
            // SAFETY: checked non-null.
            unsafe { *pi = v };
            OK
        }
        Err(e) => fail(e.code, "cuFuncGetAttribute", e.detail),
    }
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    smem: c_uint,
    s: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    let l = module::Launch {
        grid: [gx, gy, gz],
        block: [bx, by, bz],
        shared_mem_bytes: smem,
    };
    // SAFETY: the driver's contract for kernelParams, forwarded.
    result(
        "cuLaunchKernel",
        context::check()
            .and_then(|()| unsafe { module::launch(from_handle(f), l, s, params, extra) }),
    )
}

// ------------------------------------------------------------------------------------------------ graphs

#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(
    exec: *mut CUgraphExec,
    g: CUgraph,
    _flags: c_ulonglong,
) -> CUresult {
    out!("cuGraphInstantiateWithFlags", exec);
    match graph::instantiate(from_handle(g)) {
        Ok(id) => {
            // SAFETY: checked non-null.
            unsafe { *exec = to_handle(id) };
            OK
        }
        Err(f) => fail(f.code, "cuGraphInstantiateWithFlags", f.detail),
    }
}

#[no_mangle]
pub extern "C" fn cuGraphUpload(exec: CUgraphExec, s: CUstream) -> CUresult {
    result(
        "cuGraphUpload",
        stream::get(s).and_then(|_| graph::check_exec(from_handle(exec))),
    )
}

#[no_mangle]
pub extern "C" fn cuGraphLaunch(exec: CUgraphExec, s: CUstream) -> CUresult {
    result(
        "cuGraphLaunch",
        context::check()
            .and_then(|()| stream::get(s))
            .and_then(|st| graph::launch(from_handle(exec), &st)),
    )
}

#[no_mangle]
pub extern "C" fn cuGraphExecDestroy(exec: CUgraphExec) -> CUresult {
    result("cuGraphExecDestroy", graph::destroy_exec(from_handle(exec)))
}

#[no_mangle]
pub extern "C" fn cuGraphDestroy(g: CUgraph) -> CUresult {
    result("cuGraphDestroy", graph::destroy_graph(from_handle(g)))
}

// ------------------------------------------------------------------------------------------------ errors

/// Static C strings per error code (the driver hands out pointers that stay valid).
fn error_text(e: CUresult, describe: bool) -> *const c_char {
    static TEXTS: OnceLock<Mutex<HashMap<(i64, bool), &'static CStr>>> = OnceLock::new();
    let mut texts = TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    texts
        .entry((e as i64, describe))
        .or_insert_with(|| {
            let name = format!("{e:?}");
            let text = if describe {
                format!(
                    "{} (softgpu)",
                    name.trim_start_matches("CUDA_ERROR_")
                        .replace('_', " ")
                        .to_lowercase()
                )
            } else {
                name
            };
            Box::leak(
                CString::new(text)
                    .expect("no NUL in an enum name")
                    .into_boxed_c_str(),
            )
        })
        .as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(e: CUresult, text: *mut *const c_char) -> CUresult {
    out!("cuGetErrorString", text);
    // SAFETY: checked non-null.
    unsafe { *text = error_text(e, true) };
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(e: CUresult, text: *mut *const c_char) -> CUresult {
    out!("cuGetErrorName", text);
    // SAFETY: checked non-null.
    unsafe { *text = error_text(e, false) };
    OK
}
