//! `c = a · b` for a `b` the caller packs once and multiplies many times, in panels of [`PANEL`] columns
//! (`[panel][k][PANEL]`, zeros past the last column): a Winograd convolution's transformed weight. On a CPU with
//! AVX-512 it runs as outer products (src/cpu/panel_kernel.rs), which never reduce across lanes and so keep their
//! speed at the short depths these products have; elsewhere as the same loops, which the compiler vectorises.

use crate::cpu::gemm::MatrixLayout;

/// Columns of `b` per packed panel.
pub const PANEL: usize = 32;

#[cfg(target_arch = "x86_64")]
const _: () = assert!(
    PANEL == crate::cpu::panel_kernel::PANEL,
    "the kernel reads the panels packed here"
);

/// Values a `k × n` matrix takes packed in panels.
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

/// Where `b[row][col]` of a matrix of depth `k` lies in its packed panels.
pub fn packed_index(k: usize, row: usize, col: usize) -> usize {
    (col / PANEL * k + row) * PANEL + col % PANEL
}

/// `c = a · b` for `a` `m × k`, `b` `k × n` packed ([`packed_index`]) and `c` `m × n` (unit column strides), on the
/// calling thread. Each output is summed in `k` order.
///
/// # Panics
/// When the shapes do not chain or a view reaches past its slice (a programming error: callers size their own
/// buffers).
pub fn panel_gemm_serial(a: (&[f32], MatrixLayout), packed: &[f32], c: (&mut [f32], MatrixLayout)) {
    let ((a, la), (c, lc)) = (a, c);
    let (m, k, n) = (la.rows, la.cols, lc.cols);
    let fits =
        |len: usize, l: &MatrixLayout| l.rows == 0 || (l.rows - 1) * l.row_stride + l.cols <= len;
    assert!(
        lc.rows == m
            && la.col_stride == 1
            && lc.col_stride == 1
            && packed.len() >= packed_len(k, n)
            && fits(a.len(), &la)
            && fits(c.len(), &lc),
        "panel_gemm shapes do not chain: {la:?} · ({} packed values) → {lc:?}",
        packed.len()
    );
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::panel_kernel::available() {
        use crate::cpu::dot_kernel::Rows;
        // SAFETY: the assert above bounds every view the kernel reads or writes, and the CPU has AVX-512 F.
        unsafe {
            crate::cpu::panel_kernel::gemm(
                (m, k, n),
                Rows {
                    at: a.as_ptr(),
                    stride: la.row_stride,
                },
                packed.as_ptr(),
                Rows {
                    at: c.as_mut_ptr(),
                    stride: lc.row_stride,
                },
            );
        }
        return;
    }
    for i in 0..m {
        let (a, c) = (
            &a[i * la.row_stride..][..k],
            &mut c[i * lc.row_stride..][..n],
        );
        for (p, c) in c.chunks_mut(PANEL).enumerate() {
            let panel = &packed[p * k * PANEL..][..k * PANEL];
            let mut sums = [0.0f32; PANEL];
            for (&x, b) in a.iter().zip(panel.chunks_exact(PANEL)) {
                for (s, &b) in sums.iter_mut().zip(b) {
                    *s += x * b;
                }
            }
            c.copy_from_slice(&sums[..c.len()]);
        }
    }
}
