//! Launch plans: shapes → grid, block, shared memory and the packed kernel arguments, shared by `cuda` and `emu`.
