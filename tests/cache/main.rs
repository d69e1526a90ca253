//! The cache capability on its own and through hosts: its promises on the
//! memory tier and on real Redis (`behaviour`), and what happens when Redis
//! fails, comes back or loses its data (`faults`).

mod behaviour;
mod faults;
