//! Cache-aside with ETags, mirroring the original service's
//! `withCache(key, ttl, tags, compute)`.
//!
//! A cached entry is the response body preceded by its ETag and a newline:
//! the ETag is computed once, when the entry is stored, and a hit answers
//! with it without hashing the body again. An entry in any other shape (from
//! an older component version) reads as a miss and is overwritten.

use crate::{Request, Response, cache, header, raw_json};
use xxhash_rust::xxh3::xxh3_64;

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
    {
        // The body moves out of the entry in place: no second buffer.
        let etag: String = String::from_utf8_lossy(&entry[..newline]).into_owned();
        entry.drain(..=newline);
        let mut r = raw_json(200, entry);
        r.headers.push(header("etag", &etag));
        r.headers.push(header("x-cache", "HIT"));
        return r;
    }
    let mut r = compute();
    if r.status == 200 {
        let etag = etag_of(&r.body);
        let mut entry = Vec::with_capacity(etag.len() + 1 + r.body.len());
        entry.extend_from_slice(etag.as_bytes());
        entry.push(b'\n');
        entry.extend_from_slice(&r.body);
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        cache::set(key, &entry, ttl, &tags);
        r.headers.push(header("etag", &etag));
        r.headers.push(header("x-cache", "MISS"));
    }
    r
}

/// The strong ETag of `body`: a quoted 64-bit xxh3 digest in hex.
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{:016x}\"", xxh3_64(body))
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

/// Whether an `If-None-Match` value names `etag`, by the weak comparison of
/// RFC 9110 (a `W/` prefix is ignored); `*` names every representation.
fn if_none_match_names(value: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    value
        .split(',')
        .map(strip)
        .any(|candidate| candidate == "*" || candidate == etag)
}

/// Where the newline after a well-formed ETag is in `entry`: the ETag is
/// `entry[..newline]` and the body `entry[newline + 1..]`.
fn split_entry(entry: &[u8]) -> Option<usize> {
    let newline = entry.iter().position(|b| *b == b'\n')?;
    let etag = &entry[..newline];
    let well_formed = etag.len() == 18
        && etag[0] == b'"'
        && etag[17] == b'"'
        && etag[1..17].iter().all(u8::is_ascii_hexdigit);
    well_formed.then_some(newline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_other_shapes_are_misses() {
        let etag = etag_of(b"{}");
        let entry = format!("{etag}\n{{}}");
        let newline = split_entry(entry.as_bytes()).expect("a well-formed entry");
        assert_eq!(&entry.as_bytes()[..newline], etag.as_bytes());
        assert_eq!(&entry.as_bytes()[newline + 1..], b"{}");
        assert_eq!(split_entry(b"{\"categories\":[]}"), None);
        assert_eq!(split_entry(b"\"short\"\n{}"), None);
        assert_eq!(split_entry(b"\"00000000000000zz\"\n{}"), None);
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let etag = "\"00000000000000ab\"";
        assert!(if_none_match_names(etag, etag));
        assert!(if_none_match_names("W/\"00000000000000ab\"", etag));
        assert!(if_none_match_names("\"x\", \"00000000000000ab\"", etag));
        assert!(if_none_match_names("*", etag));
        assert!(!if_none_match_names("\"00000000000000ac\"", etag));
        assert!(!if_none_match_names("", etag));
    }
}
