//! Code shared by the examples, their tests and the benchmarks.

pub mod airports;
pub mod download;
pub mod queue;
pub mod scraping;
pub mod site;
pub mod tickets;
