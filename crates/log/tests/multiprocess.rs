//! Multi-process tests (placeholder).
fn main() {}
