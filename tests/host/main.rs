//! The host as a whole, through its router: the runtime and sandbox
//! (`sandbox`), instance reuse (`reuse`), hot swaps (`hot_swap`), and
//! authentication and availability (`auth_and_availability`); and the `db`
//! capability on both engines (`db_conformance`). One binary, so that the
//! tree is linked once for all five.

mod auth_and_availability;
mod db_conformance;
mod hot_swap;
mod reuse;
mod sandbox;
