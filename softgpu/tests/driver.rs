//! The software device's driver rules, called as cudarc calls them (the exported functions, in process): launch
//! limits, the shared-memory opt-in, register limits, stream order (nothing runs before a synchronisation), pinned
//! copies read at run time, capture rules, graph replay with graph memory, the canary past every buffer, the PTX
//! and cubin checks, and out-of-memory. Each test holds the context alone (a fault makes its error sticky until the
//! last release), so the tests take one lock.

use std::ffi::{c_void, CString};
use std::sync::{Mutex, MutexGuard};

use cudarc::driver::sys::{
    CUcontext, CUdeviceptr, CUevent, CUfunction, CUfunction_attribute, CUgraph, CUgraphExec,
    CUmodule, CUresult, CUstream, CUstreamCaptureMode,
};
use softgpu::driver::*;

const OK: CUresult = CUresult::CUDA_SUCCESS;
const ELEMENTWISE_PTX: &str = include_str!(concat!(
    env!("OUT_DIR"),
    "/keep-elementwise/elementwise.ptx"
));
const CONV3X3_CUBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/conv3x3.sm_90.cubin"));

static SERIAL: Mutex<()> = Mutex::new(());

/// The context, current on this thread, released (and its sticky error cleared) at the end of a test.
struct Device {
    _serial: MutexGuard<'static, ()>,
    stream: CUstream,
}

impl Device {
    fn open() -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut ctx: CUcontext = std::ptr::null_mut();
        let mut stream: CUstream = std::ptr::null_mut();
        unsafe {
            assert_eq!(cuInit(0), OK);
            assert_eq!(cuDevicePrimaryCtxRetain(&mut ctx, 0), OK);
            assert_eq!(cuCtxSetCurrent(ctx), OK);
            assert_eq!(cuStreamCreate(&mut stream, 1), OK);
        }
        Self {
            _serial: serial,
            stream,
        }
    }

    fn module(&self, ptx: &str) -> Result<CUmodule, CUresult> {
        let text = CString::new(ptx).unwrap();
        let mut m: CUmodule = std::ptr::null_mut();
        match unsafe { cuModuleLoadData(&mut m, text.as_ptr().cast()) } {
            OK => Ok(m),
            e => Err(e),
        }
    }

    fn function(&self, m: CUmodule, name: &str) -> CUfunction {
        let name = CString::new(name).unwrap();
        let mut f: CUfunction = std::ptr::null_mut();
        assert_eq!(unsafe { cuModuleGetFunction(&mut f, m, name.as_ptr()) }, OK);
        f
    }

    fn alloc(&self, bytes: usize) -> CUdeviceptr {
        let mut p: CUdeviceptr = 0;
        assert_eq!(unsafe { cuMemAllocAsync(&mut p, bytes, self.stream) }, OK);
        p
    }

    fn upload(&self, v: &[f32]) -> CUdeviceptr {
        let p = self.alloc(4 * v.len());
        assert_eq!(
            unsafe { cuMemcpyHtoDAsync_v2(p, v.as_ptr().cast(), 4 * v.len(), self.stream) },
            OK
        );
        p
    }

    /// Queues a download into `out` (runs at the next synchronisation).
    fn download(&self, p: CUdeviceptr, out: &mut [f32]) {
        assert_eq!(
            unsafe { cuMemcpyDtoHAsync_v2(out.as_mut_ptr().cast(), p, 4 * out.len(), self.stream) },
            OK
        );
    }

    fn sync(&self) -> CUresult {
        cuStreamSynchronize(self.stream)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        cuStreamDestroy_v2(self.stream);
        cuDevicePrimaryCtxRelease_v2(0);
    }
}

/// Mirrors PointwiseParams of kernels/elementwise.cu.
#[repr(C)]
struct Pointwise {
    y: CUdeviceptr,
    a: CUdeviceptr,
    b: CUdeviceptr,
    len: u64,
    act: u32,
    aligned: u32,
}

/// Launches `add_f32` (y = a + b over `len` elements; 4 per thread, 256 threads a block) with `grid_y` and `smem`.
fn add(d: &Device, f: CUfunction, p: &Pointwise, grid_y: u32, smem: u32) -> CUresult {
    let threads = p.len.div_ceil(4) as u32;
    let mut params = [p as *const Pointwise as *mut c_void];
    unsafe {
        cuLaunchKernel(
            f,
            threads.div_ceil(256),
            grid_y,
            1,
            256,
            1,
            1,
            smem,
            d.stream,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
}

fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
    (a, b)
}

#[test]
fn a_kernel_runs_only_when_the_stream_is_synchronised() {
    let d = Device::open();
    let m = d.module(ELEMENTWISE_PTX).unwrap();
    let f = d.function(m, "add_f32");
    let n = 1001;
    let (a, b) = inputs(n);
    let (pa, pb, py) = (d.upload(&a), d.upload(&b), d.alloc(4 * n));
    let p = Pointwise {
        y: py,
        a: pa,
        b: pb,
        len: n as u64,
        act: 0,
        aligned: 0,
    };
    assert_eq!(add(&d, f, &p, 1, 0), OK);
    let mut y = vec![7.0f32; n];
    d.download(py, &mut y);
    assert!(
        y.iter().all(|v| v.is_nan()),
        "nothing runs before a synchronisation: the destination holds NaN until then"
    );
    assert_eq!(d.sync(), OK);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, z)| x + z).collect();
    assert_eq!(y, want);
}

#[test]
fn launch_limits_are_the_drivers() {
    let d = Device::open();
    let m = d.module(ELEMENTWISE_PTX).unwrap();
    let f = d.function(m, "add_f32");
    let (a, b) = inputs(64);
    let (pa, pb, py) = (d.upload(&a), d.upload(&b), d.alloc(256));
    let p = Pointwise {
        y: py,
        a: pa,
        b: pb,
        len: 64,
        act: 0,
        aligned: 0,
    };
    assert_eq!(
        add(&d, f, &p, 65_536, 0),
        CUresult::CUDA_ERROR_INVALID_VALUE,
        "grid.y ≤ 65535"
    );
    // Above 48 KiB of dynamic shared memory only after opting in, and never above sm_90's 227 KiB.
    assert_eq!(
        add(&d, f, &p, 1, 64 << 10),
        CUresult::CUDA_ERROR_INVALID_VALUE,
        "no opt-in"
    );
    let attr = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
    assert_eq!(
        cuFuncSetAttribute(f, attr, 300 << 10),
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    assert_eq!(cuFuncSetAttribute(f, attr, 64 << 10), OK);
    assert_eq!(add(&d, f, &p, 1, 64 << 10), OK);
    let mut params = [&p as *const Pointwise as *mut c_void];
    let block_too_big = unsafe {
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            1025,
            1,
            1,
            0,
            d.stream,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(block_too_big, CUresult::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(d.sync(), OK);
}

#[test]
fn registers_times_threads_must_fit_the_register_file() {
    let d = Device::open();
    let mut m: CUmodule = std::ptr::null_mut();
    assert_eq!(
        unsafe { cuModuleLoadData(&mut m, CONV3X3_CUBIN.as_ptr().cast()) },
        OK,
        "the sm_90 cubin loads"
    );
    let f = d.function(m, "conv3x3_f32");
    let mut regs = 0;
    assert_eq!(
        unsafe {
            cuFuncGetAttribute(
                &mut regs,
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS,
                f,
            )
        },
        OK
    );
    let per_warp = (regs as u32 * 32).div_ceil(256) * 256;
    let warps = 65_536 / per_warp + 1;
    assert!(
        warps * 32 <= 1024,
        "conv3x3_f32 ({regs} registers) can exceed the register file within 1024 threads"
    );
    let mut dummy = [0u8; 256];
    let mut params = [dummy.as_mut_ptr().cast::<c_void>()];
    let r = unsafe {
        cuLaunchKernel(
            f,
            1,
            1,
            1,
            warps * 32,
            1,
            1,
            0,
            d.stream,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
}

#[test]
fn pinned_memory_is_read_when_the_copy_runs() {
    let d = Device::open();
    let mut host: *mut c_void = std::ptr::null_mut();
    assert_eq!(unsafe { cuMemHostAlloc(&mut host, 16, 0) }, OK);
    let pinned = unsafe { std::slice::from_raw_parts_mut(host.cast::<f32>(), 4) };
    pinned.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
    let p = d.alloc(16);
    assert_eq!(unsafe { cuMemcpyHtoDAsync_v2(p, host, 16, d.stream) }, OK);
    // Refilled while the copy is queued: the device gets the new contents, as DMA from pinned memory would.
    pinned.copy_from_slice(&[9.0; 4]);
    let mut out = [0.0f32; 4];
    d.download(p, &mut out);
    assert_eq!(d.sync(), OK);
    assert_eq!(out, [9.0; 4]);
    // Pageable memory is staged at the call.
    let mut pageable = [5.0f32; 4];
    assert_eq!(
        unsafe { cuMemcpyHtoDAsync_v2(p, pageable.as_ptr().cast(), 16, d.stream) },
        OK
    );
    pageable[0] = -1.0;
    std::hint::black_box(&pageable);
    d.download(p, &mut out);
    assert_eq!(d.sync(), OK);
    assert_eq!(out, [5.0; 4]);
    assert_eq!(unsafe { cuMemFreeHost(host) }, OK);
}

#[test]
fn illegal_calls_during_capture_invalidate_it() {
    let d = Device::open();
    let m = d.module(ELEMENTWISE_PTX).unwrap();
    let f = d.function(m, "add_f32");
    let (a, b) = inputs(64);
    let (pa, pb, py) = (d.upload(&a), d.upload(&b), d.alloc(256));
    assert_eq!(d.sync(), OK);
    let p = Pointwise {
        y: py,
        a: pa,
        b: pb,
        len: 64,
        act: 0,
        aligned: 0,
    };
    let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
    let mut graph: CUgraph = std::ptr::null_mut();

    assert_eq!(cuStreamBeginCapture_v2(d.stream, mode), OK);
    assert_eq!(add(&d, f, &p, 1, 0), OK);
    assert_eq!(
        d.sync(),
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
        "synchronising a capturing stream"
    );
    assert_eq!(
        add(&d, f, &p, 1, 0),
        CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
    );
    assert_eq!(
        unsafe { cuStreamEndCapture(d.stream, &mut graph) },
        CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
    );
    assert!(graph.is_null());

    // A synchronous allocation from the capturing thread is "potentially unsafe".
    assert_eq!(cuStreamBeginCapture_v2(d.stream, mode), OK);
    let mut plain: CUdeviceptr = 0;
    assert_eq!(
        unsafe { cuMemAlloc_v2(&mut plain, 64) },
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    );
    assert_eq!(
        unsafe { cuStreamEndCapture(d.stream, &mut graph) },
        CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
    );

    // An event recorded in a capture cannot be waited on.
    let mut event: CUevent = std::ptr::null_mut();
    assert_eq!(unsafe { cuEventCreate(&mut event, 0) }, OK);
    assert_eq!(cuStreamBeginCapture_v2(d.stream, mode), OK);
    assert_eq!(cuEventRecord(event, d.stream), OK);
    assert_eq!(
        cuEventSynchronize(event),
        CUresult::CUDA_ERROR_CAPTURED_EVENT
    );
    assert_eq!(unsafe { cuStreamEndCapture(d.stream, &mut graph) }, OK);
    assert_eq!(cuGraphDestroy(graph), OK);

    // The stream works again after the failed captures.
    assert_eq!(add(&d, f, &p, 1, 0), OK);
    assert_eq!(d.sync(), OK);
}

#[test]
fn a_captured_graph_replays_with_its_own_memory() {
    let d = Device::open();
    let m = d.module(ELEMENTWISE_PTX).unwrap();
    let f = d.function(m, "add_f32");
    let n = 300;
    let (a, b) = inputs(n);
    let (pa, pb, py) = (d.upload(&a), d.upload(&b), d.alloc(4 * n));
    assert_eq!(d.sync(), OK);
    let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
    assert_eq!(cuStreamBeginCapture_v2(d.stream, mode), OK);
    // tmp = a + b (graph memory); y = tmp + b; free tmp.
    let tmp = d.alloc(4 * n);
    let first = Pointwise {
        y: tmp,
        a: pa,
        b: pb,
        len: n as u64,
        act: 0,
        aligned: 0,
    };
    assert_eq!(add(&d, f, &first, 1, 0), OK);
    let second = Pointwise {
        y: py,
        a: tmp,
        b: pb,
        len: n as u64,
        act: 0,
        aligned: 0,
    };
    assert_eq!(add(&d, f, &second, 1, 0), OK);
    assert_eq!(unsafe { cuMemFreeAsync(tmp, d.stream) }, OK);
    let mut graph: CUgraph = std::ptr::null_mut();
    assert_eq!(unsafe { cuStreamEndCapture(d.stream, &mut graph) }, OK);
    let mut exec: CUgraphExec = std::ptr::null_mut();
    assert_eq!(
        unsafe { cuGraphInstantiateWithFlags(&mut exec, graph, 0) },
        OK
    );
    let mut y = vec![0.0f32; n];
    d.download(py, &mut y);
    assert_eq!(d.sync(), OK);
    assert!(
        y.iter().all(|v| v.is_nan()),
        "capture runs nothing: y is still fresh (NaN) memory"
    );
    for _ in 0..3 {
        assert_eq!(cuGraphLaunch(exec, d.stream), OK);
    }
    d.download(py, &mut y);
    assert_eq!(d.sync(), OK);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, z)| (x + z) + z).collect();
    assert_eq!(y, want);
    let mut high = 0u64;
    let attr = cudarc::driver::sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH;
    assert_eq!(
        unsafe { cuDeviceGetGraphMemAttribute(0, attr, (&mut high as *mut u64).cast()) },
        OK
    );
    assert!(high >= 4 * n as u64, "graph memory high-water mark {high}");
    assert_eq!(cuGraphExecDestroy(exec), OK);
    assert_eq!(cuGraphDestroy(graph), OK);
}

#[test]
fn a_write_one_element_past_a_buffer_is_an_illegal_address() {
    let d = Device::open();
    let m = d.module(ELEMENTWISE_PTX).unwrap();
    let f = d.function(m, "add_f32");
    let n = 30;
    let (a, b) = inputs(n + 1);
    let (pa, pb, py) = (d.upload(&a), d.upload(&b), d.alloc(4 * n));
    let p = Pointwise {
        y: py,
        a: pa,
        b: pb,
        len: n as u64 + 1,
        act: 0,
        aligned: 0,
    };
    assert_eq!(add(&d, f, &p, 1, 0), OK);
    assert_eq!(d.sync(), CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
    assert_eq!(
        d.sync(),
        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
        "the error is sticky"
    );
}

#[test]
fn modules_are_checked_as_the_driver_checks_them() {
    let d = Device::open();
    let newer: String = ELEMENTWISE_PTX
        .lines()
        .map(|l| {
            if l.starts_with(".version") {
                ".version 9.9\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_eq!(
        d.module(&newer).unwrap_err(),
        CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
    );
    let unknown = format!(
        "{ELEMENTWISE_PTX}\n.visible .entry not_a_kernel(\n .param .u64 p\n)\n{{\n ret;\n}}\n"
    );
    assert_eq!(
        d.module(&unknown).unwrap_err(),
        CUresult::CUDA_ERROR_INVALID_IMAGE
    );
    let m = d.module(ELEMENTWISE_PTX).unwrap();
    let name = CString::new("missing_f32").unwrap();
    let mut f: CUfunction = std::ptr::null_mut();
    assert_eq!(
        unsafe { cuModuleGetFunction(&mut f, m, name.as_ptr()) },
        CUresult::CUDA_ERROR_NOT_FOUND
    );
}

#[test]
fn memory_beyond_the_capacity_is_out_of_memory() {
    let d = Device::open();
    let (mut free, mut total) = (0usize, 0usize);
    assert_eq!(unsafe { cuMemGetInfo_v2(&mut free, &mut total) }, OK);
    let mut p: CUdeviceptr = 0;
    assert_eq!(
        unsafe { cuMemAllocAsync(&mut p, total + 1, d.stream) },
        CUresult::CUDA_ERROR_OUT_OF_MEMORY
    );
    assert_eq!(
        unsafe { cuMemFreeAsync(0x1234, d.stream) },
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
}

#[test]
fn a_download_destination_reused_before_the_copy_ran_is_a_fault() {
    let d = Device::open();
    let p = d.upload(&[1.0, 2.0, 3.0, 4.0]);
    let mut out = [0.0f32; 4];
    d.download(p, &mut out);
    // The host uses the buffer without synchronising (as if it had been read, freed and reused).
    out[0] = 0.5;
    std::hint::black_box(&mut out);
    assert_eq!(d.sync(), CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
}
