//! Cache-aside with ETags, mirroring the original service's
//! `withCache(key, ttl, tags, compute)`.
//!
//! The entry format (body, newline, ETag) and the ETag comparison are the
//! `cache-entry` crate's, shared with the host's native baseline. An entry
//! in any other shape (from an older component version) reads as a miss and
//! is overwritten.

use crate::{Body, CacheStatus, EntrySlice, Response, cache, headers, raw_json};
use cache_entry::{ETAG_LEN, entry as stored_entry, if_none_match_names, split_entry};

pub use cache_entry::etag_of;

/// The entry under `key` if cached (`X-Cache: HIT`); otherwise `compute`
/// runs, and a 200 result is stored under `key` for `ttl` seconds with
/// `tags` before being returned (`X-Cache: MISS`). Both carry an `ETag`.
/// Responses other than 200 are returned as they are and never cached,
/// and so is a 200 whose body is already a cache entry.
///
/// A hit reads only the entry's ETag (its tail) into the component: the
/// body is sent from the host's copy.
pub fn with_cache(
    key: &str,
    ttl: u32,
    tags: &[&str],
    compute: impl FnOnce() -> Response,
) -> Response {
    cache_hit(key).unwrap_or_else(|| cache_fill(key, ttl, tags, compute()))
}

/// `with_cache`'s hit: the entry under `key`, if cached, as its response
/// (`X-Cache: HIT`, its ETag, the body sent from the host's copy). With
/// [`cache_fill`] for a miss, for a handler whose tags cost work to make
/// that a hit need not do.
pub fn cache_hit(key: &str) -> Option<Response> {
    // The newline before the ETag, and the ETag.
    let found = cache::get_entry(key, ETAG_LEN as u32 + 1)?;
    // Some(0): the tail is the newline and a well-formed ETag, and
    // nothing else; any other shape is a miss.
    split_entry(&found.tail).filter(|&newline| newline == 0)?;
    let length = found.size - found.tail.len() as u64;
    // The tail's buffer becomes the ETag, the newline moved out through
    // an array of the ETag's length: a copy of a constant length is a few
    // loads and stores in a component, where `remove(0)` is a call out of
    // it (`memory.copy`).
    let mut tail = found.tail;
    let etag = <[u8; ETAG_LEN]>::try_from(&tail[1..]).ok()?;
    tail[..ETAG_LEN].copy_from_slice(&etag);
    tail.truncate(ETAG_LEN);
    // SAFETY: `split_entry` found a quote, 16 hex digits and a quote after
    // the newline, which are all `tail` holds now: ASCII, so UTF-8.
    // (`String::from_utf8` looked at every byte again: 240 instructions of
    // a hit.)
    let etag = unsafe { String::from_utf8_unchecked(tail) };
    let mut r = raw_json(200, Vec::new());
    r.etag = Some(etag);
    r.cache = Some(CacheStatus::Hit);
    r.body = Body::Entry(EntrySlice {
        length,
        entry: found.entry,
        offset: 0,
    });
    Some(r)
}

/// `with_cache`'s miss: `r`, computed for `key`, stored under `key` for
/// `ttl` seconds with `tags` if it is a 200 (`X-Cache: MISS`, with its
/// ETag); returned as it is otherwise.
pub fn cache_fill(key: &str, ttl: u32, tags: &[&str], mut r: Response) -> Response {
    if let (200, Body::Bytes(body)) = (r.status, &r.body) {
        let etag = etag_of(body);
        let entry = stored_entry(&etag, body);
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        cache::set(key, &entry, ttl, &tags);
        r.etag = Some(etag);
        r.cache = Some(CacheStatus::Miss);
    }
    r
}

/// `response` turned into `304 Not Modified` (no body; ETag and X-Cache
/// kept) when it is a 200 whose ETag, named in its header list, the
/// request's `If-None-Match` names. A typed ETag (`response.etag`, as
/// [`with_cache`] gives it) needs none of this: the host answers
/// conditional requests for it, without a call into the component.
pub fn conditional(mut response: Response) -> Response {
    if response.status != 200 || response.etag.is_some() {
        return response;
    }
    let Some(etag) = response.headers.iter().find(|h| h.name == "etag") else {
        return response;
    };
    let etag = &etag.value;
    if headers::get("if-none-match").is_some_and(|inm| if_none_match_names(&inm, etag)) {
        response.status = 304;
        response.body = Body::Bytes(Vec::new());
        response.headers.retain(|h| h.name != "content-type");
    }
    response
}
