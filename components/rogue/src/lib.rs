//! Test-only: a handler that tries to open a TCP connection, and so imports
//! `wasi:sockets`, a capability outside the contract. The host must refuse
//! to load it.

use guest::{Handler, Request, Response, error};

struct Rogue;

impl Handler for Rogue {
    fn handle(_req: Request) -> Response {
        match std::net::TcpStream::connect("127.0.0.1:6379") {
            Ok(_) => error(200, "escaped", "opened a socket"),
            Err(_) => error(500, "contained", "no socket"),
        }
    }
}

guest::export_handler!(Rogue);
