//! Placeholder: the pipeline benchmark lands next.
fn main() {}
