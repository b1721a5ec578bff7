//! Splits output rows over the machine's cores on rayon's pool (threads kept for the process, not spawned per op): the
//! reference stays simple loops, and the heavy ops (GEMM, attention) still use every core.

/// Calls `f(row_index, row)` for every `row_len`-sized row of `out`, rows spread over all available cores.
pub fn for_each_row<F>(out: &mut [f32], row_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    for_each_block(out, row_len, |first, block| {
        for (i, row) in block.chunks_exact_mut(row_len).enumerate() {
            f(first + i, row);
        }
    });
}

/// Below this many elements an elementwise op runs on the calling thread: a thread costs more than it saves.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// Calls `f(first, chunk)` over `out` split into one contiguous chunk per core (`first` is the chunk's offset), or
/// once over all of it when it is small: for elementwise ops, which have no rows of their own.
pub fn for_each_chunk<F>(out: &mut [f32], f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if out.len() < PARALLEL_ELEMENTS {
        return f(0, out);
    }
    for_each_block(out, 1, f);
}

/// Calls `f(first_row, rows)` once per core with that core's contiguous block of `row_len`-sized rows of `out`:
/// for ops that tile their rows themselves (attention runs its GEMMs on tiles of a block).
pub fn for_each_block<F>(out: &mut [f32], row_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if row_len == 0 || out.is_empty() {
        return;
    }
    let rows = out.len() / row_len;
    let threads = rayon::current_num_threads().min(rows);
    if threads <= 1 {
        return f(0, out);
    }
    let rows_per_thread = rows.div_ceil(threads);
    rayon::scope(|s| {
        for (t, block) in out.chunks_mut(rows_per_thread * row_len).enumerate() {
            let f = &f;
            s.spawn(move |_| f(t * rows_per_thread, block));
        }
    });
}

/// The tiles of a core's block of rows `first..first + rows` of a `[B, seq_len]` sequence batch: `(offset, len)` in
/// the block, at most `tile` rows each and never crossing into the next batch element's sequence.
pub fn sequence_tiles(
    first: usize,
    rows: usize,
    seq_len: usize,
    tile: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let mut r = 0;
    std::iter::from_fn(move || {
        if r >= rows || seq_len == 0 || tile == 0 {
            return None;
        }
        let t = tile.min(rows - r).min(seq_len - (first + r) % seq_len);
        r += t;
        Some((r - t, t))
    })
}

/// Runs `part(first, len)` for `0..parts` in pieces of `per` over the cores (`len` short for the last piece): for a
/// GEMM split by rows or columns of its output.
pub fn for_each_part(parts: usize, per: usize, part: impl Fn(usize, usize) + Sync) {
    rayon::scope(|scope| {
        for first in (0..parts).step_by(per) {
            let part = &part;
            scope.spawn(move |_| part(first, per.min(parts - first)));
        }
    });
}

/// The output of a split GEMM, shared by its parts ([`for_each_part`]), each writing its own rows or columns.
pub struct SharedOut(pub *mut f32);

// SAFETY: the parts of one GEMM write disjoint elements through it, and its scope ends before the borrow it came from
// does.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `offset` places in (a method, so that closures capture the `Sync` wrapper, not its pointer).
    ///
    /// # Safety
    /// `offset` lies inside the allocation the pointer came from.
    pub unsafe fn at(&self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}
