//! qgpt's fuzz target bodies (see tests/fuzz/run.sh).

#[path = "../targets.rs"]
pub mod targets;
