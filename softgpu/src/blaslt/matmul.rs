//! Submitting a checked matmul as stream work. Its operands are checked twice: when `cublasLtMatmul` is called
//! (refused with CUBLAS_STATUS_INVALID_VALUE), and again each time the work runs, since memory may be freed between
//! the call and the run (or between replays of a captured graph).

use crate::memory::check_device;
use crate::status::{CUresult, Fault};
use crate::work::Work;

use super::problem::{Elem, Problem};
use super::reference::{self, Operands};
use super::LtError;

/// Checks the operands of `p` and queues the matmul on `stream`. `alpha` and `beta` are values: with
/// POINTER_MODE_HOST, cuBLASLt reads them at the call (and a captured graph keeps them).
pub fn submit(
    p: Problem,
    alpha: f32,
    beta: f32,
    at: Operands,
    workspace: (u64, usize),
    stream: cudarc::driver::sys::CUstream,
) -> Result<(), LtError> {
    check_operands(&p, beta, &at, workspace)?;
    let label = format!(
        "cublasLtMatmul {}×{}×{} ×{} {}→{}",
        p.m, p.n, p.k, p.batch, p.a.elem, p.d.elem
    );
    let work = Work::new(label, move || {
        check_memory(&p, beta, &at)?;
        // SAFETY: every operand lies in live memory (just checked), and was checked at the call for alignment and
        // for D not overlapping what it is computed from.
        unsafe { reference::execute(&p, alpha, beta, &at) };
        Ok(())
    });
    match crate::stream::submit(stream, work) {
        CUresult::CUDA_SUCCESS => Ok(()),
        code => Err(LtError::new(
            cudarc::cublaslt::sys::cublasStatus_t::CUBLAS_STATUS_EXECUTION_FAILED,
            format!("the stream refused the work ({code:?})"),
        )),
    }
}

/// One memory range the matmul touches.
struct Region {
    name: &'static str,
    address: u64,
    elem: Elem,
    bytes: u64,
}

impl Region {
    fn overlaps(&self, other: &Region) -> bool {
        self.bytes > 0
            && other.bytes > 0
            && self.address < other.address.saturating_add(other.bytes)
            && other.address < self.address.saturating_add(self.bytes)
    }
}

/// What the matmul reads and writes: A, B, C (only when beta ≠ 0: otherwise it is not read), the bias, D (last).
fn regions(p: &Problem, beta: f32, at: &Operands) -> Vec<Region> {
    let mut regions = vec![
        Region {
            name: "A",
            address: at.a,
            elem: p.a.elem,
            bytes: p.a.extent(p.batch),
        },
        Region {
            name: "B",
            address: at.b,
            elem: p.b.elem,
            bytes: p.b.extent(p.batch),
        },
    ];
    if beta != 0.0 {
        regions.push(Region {
            name: "C",
            address: at.c,
            elem: p.c.elem,
            bytes: p.c.extent(p.batch),
        });
    }
    if let Some(bias) = p.bias {
        regions.push(Region {
            name: "bias",
            address: at.bias,
            elem: bias.elem,
            bytes: bias.vector(p.m).extent(p.batch),
        });
    }
    regions.push(Region {
        name: "D",
        address: at.d,
        elem: p.d.elem,
        bytes: p.d.extent(p.batch),
    });
    regions
}

/// Checks that every range the matmul touches lies in one live allocation.
fn check_memory(p: &Problem, beta: f32, at: &Operands) -> Result<(), Fault> {
    for r in regions(p, beta, at).iter().filter(|r| r.bytes > 0) {
        check_device(r.address, r.bytes)
            .map_err(|f| Fault::new(f.code, format!("{}: {}", r.name, f.detail)))?;
    }
    Ok(())
}

/// The checks at the call: where the operands are ([`check_placement`]), and that they are in live memory.
fn check_operands(
    p: &Problem,
    beta: f32,
    at: &Operands,
    workspace: (u64, usize),
) -> Result<(), LtError> {
    check_placement(p, beta, at, workspace)?;
    check_memory(p, beta, at).map_err(|f| LtError::invalid(f.detail))?;
    let (address, bytes) = workspace;
    if bytes > 0 {
        check_device(address, bytes as u64)
            .map_err(|f| LtError::invalid(format!("workspace: {}", f.detail)))?;
    }
    Ok(())
}

/// Operands non-NULL and aligned to their elements, D apart from what it is computed from, the workspace aligned
/// as the docs require.
fn check_placement(
    p: &Problem,
    beta: f32,
    at: &Operands,
    (workspace, workspace_size): (u64, usize),
) -> Result<(), LtError> {
    let regions = regions(p, beta, at);
    for r in regions.iter().filter(|r| r.bytes > 0) {
        if r.address == 0 {
            return Err(LtError::invalid(format!("{} is NULL", r.name)));
        }
        if r.address % r.elem.size() as u64 != 0 {
            return Err(LtError::invalid(format!(
                "{} at {:#x} is not aligned to its {}-byte elements",
                r.name,
                r.address,
                r.elem.size()
            )));
        }
    }
    // Other blocks of a GPU kernel read these while D is written: an overlap is a race. C is the exception when
    // it is D itself, with D's layout (the docs' in-place case, "C == D and Cdesc == Ddesc").
    let (d, inputs) = regions.split_last().expect("regions end with D");
    let in_place = at.c == at.d && p.c == p.d;
    for r in inputs.iter().filter(|r| !(r.name == "C" && in_place)) {
        if d.overlaps(r) {
            return Err(LtError::invalid(format!(
                "D [{:#x}, +{}) overlaps {} [{:#x}, +{}): a GPU would read {} while writing D",
                d.address, d.bytes, r.name, r.address, r.bytes, r.name
            )));
        }
    }
    // The docs: the workspace "Must be 256B aligned".
    if workspace_size > 0 && (workspace == 0 || workspace % 256 != 0) {
        return Err(LtError::invalid(format!(
            "workspace at {workspace:#x} ({workspace_size} bytes) is not a 256-byte aligned device buffer"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cudarc::cublaslt::sys;

    use super::*;
    use crate::blaslt::desc::{Layout, MatmulDesc};
    use crate::blaslt::problem::{plan, Activation, Epilogue};

    /// The engine's linear layer in bf16: D (64×7) = Wᵀ·x + bias, W stored 32×64, x 32×7.
    fn linear() -> Problem {
        let bf16 = sys::cudaDataType_t::CUDA_R_16BF as u32;
        let mut desc = MatmulDesc::new(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F as u32,
            sys::cudaDataType_t::CUDA_R_32F as u32,
        );
        desc.trans_a = 1;
        desc.epilogue = Epilogue {
            bias: true,
            activation: Activation::Identity,
        };
        let d = Layout::new(bf16, 64, 7, 64);
        plan(
            &desc,
            &Layout::new(bf16, 32, 64, 32),
            &Layout::new(bf16, 32, 7, 32),
            &d,
            &d,
        )
        .expect("a valid problem")
    }

    const AT: Operands = Operands {
        a: 0x10_0000,
        b: 0x20_0000,
        c: 0x30_0000,
        d: 0x30_0000,
        bias: 0x40_0000,
    };

    #[test]
    fn blaslt_placement_accepts_apart_aligned_operands() {
        let p = linear();
        assert!(check_placement(&p, 0.0, &AT, (0, 0)).is_ok());
        // In place, C is D; with beta 0, C is not read at all.
        assert!(check_placement(&p, 1.0, &AT, (0, 0)).is_ok());
        assert!(check_placement(&p, 0.0, &Operands { c: 0, ..AT }, (0, 0)).is_ok());
        assert!(check_placement(&p, 0.0, &AT, (0x50_0000, 1 << 20)).is_ok());
    }

    #[test]
    fn blaslt_placement_refuses_what_a_gpu_would_fault_or_race_on() {
        let p = linear();
        let refused = |beta: f32, at: Operands, workspace: (u64, usize)| {
            let e = check_placement(&p, beta, &at, workspace).expect_err("refused");
            assert_eq!(e.status, sys::cublasStatus_t::CUBLAS_STATUS_INVALID_VALUE);
        };
        refused(0.0, Operands { a: AT.a + 1, ..AT }, (0, 0));
        refused(0.0, Operands { a: 0, ..AT }, (0, 0));
        refused(0.0, Operands { bias: 0, ..AT }, (0, 0));
        refused(
            0.0,
            Operands {
                d: AT.a + 64,
                c: AT.a + 64,
                ..AT
            },
            (0, 0),
        );
        refused(
            0.0,
            Operands {
                bias: AT.d + 2,
                ..AT
            },
            (0, 0),
        );
        // C read while D is written, two elements further on.
        refused(1.0, Operands { c: AT.d + 4, ..AT }, (0, 0));
        refused(0.0, AT, (0x50_0010, 1024));
        refused(0.0, AT, (0, 1024));
    }
}
