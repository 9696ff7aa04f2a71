//! Code shared by the examples, their tests and the benchmarks.

pub mod airports;
pub mod download;
