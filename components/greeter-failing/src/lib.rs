//! Test-only: a version of the greeter that answers every request with a
//! 500, as a broken release would: the canary that must be aborted.

use guest::{Handler, Request, Response, json};

struct Failing;

impl Handler for Failing {
    fn handle(_req: Request) -> Response {
        json(500, &serde_json::json!({ "version": "failing" }))
    }
}

guest::export_handler!(Failing);
