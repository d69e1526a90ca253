//! The cache-key encoding and the cache-entry format the components use,
//! with no WIT dependency, so that the guest kit (`guest`) and the host's
//! native baseline (`host/src/http/native.rs`) run exactly the same code.
//!
//! - [`Key`]: keys whose parts are encoded so that different parameter sets
//!   never share one.
//! - An entry is the response body preceded by its ETag and a newline
//!   ([`entry`], [`split_entry`]): the ETag is computed once, when the entry
//!   is stored ([`etag_of`]), and a hit answers with it without hashing the
//!   body again. An entry in any other shape reads as a miss.
//! - [`if_none_match_names`]: the weak comparison of RFC 9110.

mod key;

pub use key::Key;

use xxhash_rust::xxh3::xxh3_64;

/// The strong ETag of `body`: a quoted 64-bit xxh3 digest in hex.
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{:016x}\"", xxh3_64(body))
}

/// The entry stored for `body` with its `etag`: `{etag}\n{body}`.
pub fn entry(etag: &str, body: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(etag.len() + 1 + body.len());
    entry.extend_from_slice(etag.as_bytes());
    entry.push(b'\n');
    entry.extend_from_slice(body);
    entry
}

/// Where the newline after a well-formed ETag is in `entry`: the ETag is
/// `entry[..newline]` and the body `entry[newline + 1..]`. `None` for an
/// entry in any other shape.
pub fn split_entry(entry: &[u8]) -> Option<usize> {
    let newline = entry.iter().position(|b| *b == b'\n')?;
    let etag = &entry[..newline];
    let well_formed = etag.len() == 18
        && etag[0] == b'"'
        && etag[17] == b'"'
        && etag[1..17].iter().all(u8::is_ascii_hexdigit);
    well_formed.then_some(newline)
}

/// Whether an `If-None-Match` value names `etag`, by the weak comparison of
/// RFC 9110 (a `W/` prefix is ignored); `*` names every representation.
pub fn if_none_match_names(value: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    value
        .split(',')
        .map(strip)
        .any(|candidate| candidate == "*" || candidate == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_other_shapes_are_misses() {
        let etag = etag_of(b"{}");
        let stored = entry(&etag, b"{}");
        let newline = split_entry(&stored).expect("a well-formed entry");
        assert_eq!(&stored[..newline], etag.as_bytes());
        assert_eq!(&stored[newline + 1..], b"{}");
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
