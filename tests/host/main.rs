//! The host as a whole, through its router: the runtime and sandbox
//! (`sandbox`), hot swaps (`hot_swap`), and authentication and availability
//! (`auth_and_availability`). One binary, so that the tree is linked once
//! for all three.

mod auth_and_availability;
mod hot_swap;
mod sandbox;
