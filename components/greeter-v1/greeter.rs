// The body shared by greeter-v1 and greeter-v2; each defines `VERSION`.
//
// - any path: `{"version": VERSION}`;
// - `…/slow?ms=N`: the same, after N milliseconds of work (a request that
//   is in flight across a swap).

use guest::{Handler, Request, Response, json};

struct Greeter;

impl Handler for Greeter {
    fn handle(req: Request) -> Response {
        if req.path().ends_with("/slow") {
            let ms: u64 = guest::Query::new(req.query())
                .raw("ms")
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(500);
            let start = std::time::Instant::now();
            while start.elapsed().as_millis() < u128::from(ms) {
                std::hint::black_box(());
            }
        }
        json(200, &serde_json::json!({ "version": VERSION }))
    }
}

guest::export_handler!(Greeter);
