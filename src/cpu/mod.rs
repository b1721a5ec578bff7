//! The CPU reference ops, one file per kernel family (names rhyme with kernels/*.cu and src/launch/*.rs).

pub mod norm;
