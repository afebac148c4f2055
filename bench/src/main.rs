//! corecast-bench (being written).
fn main() {}
