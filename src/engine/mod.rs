//! The `Engine` trait.

pub mod emu;
