//! The cache capability on its own and through hosts: its promises on the
//! memory tier and on real Redis (`behaviour`), what happens when Redis
//! fails, comes back or loses its data (`faults`), what is served stale
//! when the database cannot answer (`stale`), and what is warmed on start
//! and after a deploy (`warm`).

mod behaviour;
mod faults;
mod stale;
mod warm;
