//! The cache-key encoding and the cache-entry format the components use,
//! with no WIT dependency, so that the guest kit (`guest`) and the host's
//! native baseline (`host/src/http/native.rs`) run exactly the same code.
//!
//! - [`Key`]: keys whose parts are encoded so that different parameter sets
//!   never share one.
//! - An entry is the response body followed by a newline and its ETag
//!   ([`entry`], [`split_entry`]): the ETag is computed once, when the entry
//!   is stored ([`etag_of`]), and a hit answers with it without hashing the
//!   body again. The body comes first so that a hit gets it by cutting the
//!   entry short, where a leading ETag had to be moved out of its way (a
//!   copy of the whole body), and the ETag is found at a fixed place, not
//!   by a scan. An entry in any other shape (the ETag first, as stored
//!   before) reads as a miss.
//! - [`if_none_match_names`]: the weak comparison of RFC 9110.
//! - [`query_pairs`] and [`find_byte`]: a query string split, and a byte
//!   found, at a cost a component can afford on every request;
//!   [`longer_than`] and [`has_control`], a text parameter's checks.

mod key;
mod scan;

pub use key::Key;
pub use scan::{find_byte, find_either, has_control, longer_than, query_pairs};

use xxhash_rust::xxh3::xxh3_64;

/// The strong ETag of `body`: a quoted 64-bit xxh3 digest in hex.
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{:016x}\"", xxh3_64(body))
}

/// How long an ETag of `etag_of` is: 16 hex digits in quotes.
pub const ETAG_LEN: usize = 18;

/// The entry stored for `body` with its `etag`: `{body}\n{etag}`.
pub fn entry(etag: &str, body: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(body.len() + 1 + etag.len());
    entry.extend_from_slice(body);
    entry.push(b'\n');
    entry.extend_from_slice(etag.as_bytes());
    entry
}

/// Where the newline before a well-formed ETag is in `entry`: the body is
/// `entry[..newline]` and the ETag `entry[newline + 1..]`. `None` for an
/// entry in any other shape.
pub fn split_entry(entry: &[u8]) -> Option<usize> {
    let newline = entry.len().checked_sub(ETAG_LEN + 1)?;
    let etag = &entry[newline + 1..];
    let well_formed = entry[newline] == b'\n'
        && etag[0] == b'"'
        && etag[ETAG_LEN - 1] == b'"'
        && etag[1..ETAG_LEN - 1].iter().all(u8::is_ascii_hexdigit);
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
        assert_eq!(&stored[..newline], b"{}");
        assert_eq!(&stored[newline + 1..], etag.as_bytes());
        let empty = entry(&etag, b"");
        assert_eq!(split_entry(&empty), Some(0), "an empty body is a body");
        assert_eq!(split_entry(b"{\"categories\":[]}"), None);
        assert_eq!(split_entry(b"{}\n\"short\""), None);
        assert_eq!(split_entry(b"{}\n\"00000000000000zz\""), None);
        assert_eq!(split_entry(b"{}x\"00000000000000ab\""), None);
        // The shape stored before, ETag first, is a miss.
        assert_eq!(split_entry(b"\"00000000000000ab\"\n{}"), None);
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
