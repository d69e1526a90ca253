//! The marketplace endpoints, under `/api/marketplace`:
//!
//! | route | what |
//! |---|---|
//! | `GET /api/marketplace` | browse: search, filter, sort, page |
//! | `GET /api/marketplace/trending` | most installs in the last 7 days |
//! | `GET /api/marketplace/featured` | featured agents, most installed first |
//! | `GET /api/marketplace/categories` | every category with its counts |
//! | `GET /api/marketplace/agents/{id}` | one agent |
//! | `POST /api/marketplace/agents/{id}/install` | install into a workspace |
//!
//! Reads are cached (TTLs and tags of the spec) and answer `If-None-Match`
//! with 304; an install invalidates every tag a read of the changed data
//! carries.

mod agents;
mod install;

use guest::{Handler, Request, Response, conditional, method_not_allowed, not_found};

struct Marketplace;

impl Handler for Marketplace {
    fn handle(req: Request) -> Response {
        let Some(rest) = req.path.strip_prefix("/api/marketplace") else {
            return not_found("no such resource");
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // At most three segments name a resource; gathered without
        // allocating, as this runs for every request.
        let mut segments = [""; 3];
        let mut n = 0;
        for segment in rest.split('/').skip(1) {
            if n == segments.len() {
                return not_found("no such resource");
            }
            segments[n] = segment;
            n += 1;
        }
        let get = req.method == "GET";
        match &segments[..n] {
            [] if get => conditional(agents::browse(&req)),
            ["trending"] if get => conditional(agents::trending(&req)),
            ["featured"] if get => conditional(agents::featured(&req)),
            ["categories"] if get => conditional(agents::categories(&req)),
            ["agents", id] if get => match guest::path_segment(id) {
                Some(id) => conditional(agents::details(&req, &id)),
                None => not_found("no such agent"),
            },
            ["agents", id, "install"] if req.method == "POST" => match guest::path_segment(id) {
                Some(id) => install::install(&req, &id),
                None => not_found("no such agent"),
            },
            [] | ["trending" | "featured" | "categories"] | ["agents", _] => {
                method_not_allowed(&["GET"])
            }
            ["agents", _, "install"] => method_not_allowed(&["POST"]),
            _ => not_found("no such resource"),
        }
    }
}

guest::export_handler!(Marketplace);
