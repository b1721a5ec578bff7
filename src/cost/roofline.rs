//! The physical floor of a stage on a named device: it cannot run faster than its FLOPs at the peak dense
//! tensor rate, nor than its bytes at the peak memory bandwidth (the roofline), whichever is slower.

use crate::cost::stages::StageCosts;
use crate::cost::Cost;

/// Peak rates of one device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roofline {
    pub name: &'static str,
    /// Dense (no sparsity) bf16 tensor-core FLOP/s.
    pub flops_per_s: f64,
    /// Memory bandwidth, bytes/s.
    pub bytes_per_s: f64,
}

/// NVIDIA's data-sheet figures for the SXM parts.
pub const H100_SXM: Roofline = Roofline {
    name: "H100 SXM",
    flops_per_s: 989e12,
    bytes_per_s: 3.35e12,
};

pub const H200: Roofline = Roofline {
    name: "H200",
    flops_per_s: 989e12,
    bytes_per_s: 4.8e12,
};

/// The devices `sana-run bench` and docs/PERFORMANCE.md report floors for.
pub const DEVICES: [Roofline; 2] = [H100_SXM, H200];

/// bf16 storage: the dtype the GPU engine keeps activations and weights in.
pub const BF16_BYTES: u64 = 2;

impl Roofline {
    /// A roofline for a measured rate (e.g. the CPU engine's sustained GEMM throughput).
    pub fn measured(name: &'static str, flops_per_s: f64, bytes_per_s: f64) -> Self {
        Self {
            name,
            flops_per_s,
            bytes_per_s,
        }
    }

    /// Seconds the work takes at best: `max(flops / peak, bytes / bandwidth)`.
    pub fn floor_s(&self, cost: &Cost, bytes_per_element: u64) -> f64 {
        let compute = cost.flops() as f64 / self.flops_per_s;
        let memory = cost.bytes(bytes_per_element) as f64 / self.bytes_per_s;
        compute.max(memory)
    }

    /// Whether the work is bound by bandwidth rather than compute on this device.
    pub fn memory_bound(&self, cost: &Cost, bytes_per_element: u64) -> bool {
        cost.bytes(bytes_per_element) as f64 / self.bytes_per_s
            > cost.flops() as f64 / self.flops_per_s
    }

    /// Floors of every stage of a generation; the stages run one after another, so the denoise floor is the
    /// conditioning's plus `steps` step floors and the total is the sum of the stages'.
    pub fn stage_floors(&self, c: &StageCosts, bytes_per_element: u64) -> StageFloors {
        let floor = |cost: &Cost| self.floor_s(cost, bytes_per_element);
        let step = floor(&c.step);
        let denoise = floor(&c.conditioning) + c.steps as f64 * step;
        let (text_encode, decode) = (floor(&c.text_encode), floor(&c.decode));
        StageFloors {
            text_encode,
            step,
            denoise,
            decode,
            total: text_encode + denoise + decode,
        }
    }
}

/// Seconds per stage at best on one device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageFloors {
    pub text_encode: f64,
    pub step: f64,
    pub denoise: f64,
    pub decode: f64,
    pub total: f64,
}
