//! The `clickpulse` command.
fn main() {}
