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
//! Reads are cached (TTLs and tags of the spec) with a typed ETag, so that
//! the host answers `If-None-Match` with 304; an install invalidates every tag a read of the changed data
//! carries.

mod agents;
mod install;

use guest::{Handler, Request, Response, method_not_allowed, not_found};

struct Marketplace;

impl Handler for Marketplace {
    fn handle(req: Request) -> Response {
        let Some(rest) = req.path().strip_prefix("/api/marketplace") else {
            return not_found("no such resource");
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let Some((segments, n)) = segments(rest) else {
            return not_found("no such resource");
        };
        let get = req.method() == "GET";
        match &segments[..n] {
            [] if get => agents::browse(&req),
            ["trending"] if get => agents::trending(&req),
            ["featured"] if get => agents::featured(&req),
            ["categories"] if get => agents::categories(&req),
            ["agents", id] if get => match guest::path_segment(id) {
                Some(id) => agents::details(&req, &id),
                None => not_found("no such agent"),
            },
            ["agents", id, "install"] if req.method() == "POST" => match guest::path_segment(id) {
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

/// The segments of `rest`, the path after `/api/marketplace` (empty, or
/// `/`-separated segments after a `/`), and how many there are; none
/// past three, which is more than any resource has, or when `rest` does
/// not start a new segment (`/api/marketplacex`). Gathered without
/// allocating, and with `find_byte`: `split` cost a component some 20
/// instructions a byte, and this runs on every request.
fn segments(rest: &str) -> Option<([&str; 3], usize)> {
    let mut segments = [""; 3];
    let Some(mut rest) = rest.strip_prefix('/') else {
        return rest.is_empty().then_some((segments, 0));
    };
    let mut n = 0;
    loop {
        let end = guest::find_byte(rest.as_bytes(), b'/');
        *segments.get_mut(n)? = &rest[..end.unwrap_or(rest.len())];
        n += 1;
        match end {
            Some(end) => rest = &rest[end + 1..],
            None => return Some((segments, n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn segments_split_as_the_routes_need() {
        let of = |rest| segments(rest).map(|(s, n)| s[..n].to_vec());
        assert_eq!(of(""), Some(vec![]));
        assert_eq!(of("/"), Some(vec![""]));
        assert_eq!(of("/trending"), Some(vec!["trending"]));
        assert_eq!(of("/agents/a-1"), Some(vec!["agents", "a-1"]));
        assert_eq!(
            of("/agents/a-1/install"),
            Some(vec!["agents", "a-1", "install"])
        );
        assert_eq!(of("/agents//install"), Some(vec!["agents", "", "install"]));
        assert_eq!(of("/a/b/c/d"), None);
        assert_eq!(of("x"), None);
    }
}
