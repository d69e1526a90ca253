//! Test-only: version 1 of a small handler, for hot-swap tests. The
//! handler itself is in `greeter.rs`, shared by both versions.

const VERSION: &str = "v1";

include!("../../greeter-v1/greeter.rs");
