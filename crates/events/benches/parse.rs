//! Parse benchmarks (placeholder).
fn main() {}
