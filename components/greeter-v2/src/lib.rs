//! Test-only: version 2 of a small handler, for hot-swap tests. The
//! handler itself is in `greeter.rs`, shared by both versions.

const VERSION: &str = "v2";

include!("../../greeter-v1/greeter.rs");
