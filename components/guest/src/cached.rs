//! Cache-aside with ETags, mirroring the original service's
//! `withCache(key, ttl, tags, compute)`.
//!
//! The entry format (body, newline, ETag) and the ETag comparison are the
//! `cache-entry` crate's, shared with the host's native baseline. An entry
//! in any other shape (from an older component version) reads as a miss and
//! is overwritten.

use crate::{Header, Request, Response, cache, header, raw_json};
use cache_entry::{entry as stored_entry, if_none_match_names, split_entry};

pub use cache_entry::etag_of;

/// The bytes under `key` if cached (`X-Cache: HIT`); otherwise `compute`
/// runs, and a 200 result is stored under `key` for `ttl` seconds with
/// `tags` before being returned (`X-Cache: MISS`). Both carry an `ETag`.
/// Responses other than 200 are returned as they are and never cached.
pub fn with_cache(
    key: &str,
    ttl: u32,
    tags: &[&str],
    compute: impl FnOnce() -> Response,
) -> Response {
    if let Some(mut entry) = cache::get(key)
        && let Some(newline) = split_entry(&entry)
        // ASCII (`split_entry` checked it), so always UTF-8.
        && let Ok(etag) = std::str::from_utf8(&entry[newline + 1..])
    {
        // The body is the entry cut short: no copy, no second buffer.
        let etag = etag.to_owned();
        entry.truncate(newline);
        let mut r = raw_json(200, entry);
        r.headers.push(Header {
            name: "etag".into(),
            value: etag,
        });
        r.headers.push(header("x-cache", "HIT"));
        return r;
    }
    let mut r = compute();
    if r.status == 200 {
        let etag = etag_of(&r.body);
        let entry = stored_entry(&etag, &r.body);
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        cache::set(key, &entry, ttl, &tags);
        r.headers.push(header("etag", &etag));
        r.headers.push(header("x-cache", "MISS"));
    }
    r
}

/// `response` turned into `304 Not Modified` (no body; ETag and X-Cache
/// kept) when it is a 200 whose ETag the request's `If-None-Match` names.
pub fn conditional(req: &Request, mut response: Response) -> Response {
    if response.status != 200 {
        return response;
    }
    let etag = response.headers.iter().find(|h| h.name == "etag");
    let inm = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("if-none-match"));
    if let (Some(etag), Some(inm)) = (etag, inm)
        && if_none_match_names(&inm.value, &etag.value)
    {
        response.status = 304;
        response.body.clear();
        response.headers.retain(|h| h.name != "content-type");
    }
    response
}
