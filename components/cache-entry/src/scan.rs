//! Scanning request text the way a component can afford to.
//!
//! Compiled to WebAssembly, a loop pays for an interruption check on every
//! turn (the host's deadline) and keeps little in registers, so that
//! `split`, `split_once` or `position` over a request's path cost a
//! component some 20 instructions a byte (BENCHMARKS.md, "a ninth run").
//! [`find_byte`] looks at eight bytes a turn, and [`query_pairs`] splits a
//! query string with it, decoding only what needs decoding.

use std::borrow::Cow;

/// Where `needle` first is in `haystack`, eight bytes at a time.
pub fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    find_either(haystack, needle, needle)
}

/// Where `a` or `b` first is in `haystack`, eight bytes at a time (the
/// last few one by one).
pub fn find_either(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // The bytes of `word` equal to `byte` are zero in `word ^ byte…`; the
    // lowest byte flagged is the first zero byte (those above it may be
    // false alarms).
    let zeros = |word: u64, byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let mut chunks = haystack.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        // Of a constant length, so a load: a copy of any other length is
        // a call out of the component (`memory.copy`).
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let found = zeros(word, a) | zeros(word, b);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let rest = chunks.remainder();
    rest.iter().position(|&c| c == a || c == b).map(|i| at + i)
}

/// The name and value pairs of `raw`, a query string without its `?`,
/// exactly as `form_urlencoded::parse` gives them (split at `&`, empty
/// pieces skipped, name and value split at the first `=`, `+` a space,
/// percent-decoded, bytes that do not decode to UTF-8 as U+FFFD), but
/// borrowed from `raw` where there is nothing to decode: `raw` is UTF-8
/// already, so that the common case neither copies nor validates.
pub fn query_pairs(raw: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    let mut pairs = Vec::new();
    // Nothing to decode anywhere (the common case): one look at the whole
    // string rather than one at each name and value.
    let plain = find_either(raw.as_bytes(), b'%', b'+').is_none();
    let decode = |text| {
        if plain {
            Cow::Borrowed(text)
        } else {
            decode(text)
        }
    };
    let mut rest = raw;
    while !rest.is_empty() {
        let end = find_byte(rest.as_bytes(), b'&').unwrap_or(rest.len());
        let piece = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match find_byte(piece.as_bytes(), b'=') {
            Some(eq) => (&piece[..eq], &piece[eq + 1..]),
            None => (piece, ""),
        };
        pairs.push((decode(name), decode(value)));
    }
    pairs
}

/// Whether `text` has more than `max_chars` characters. A text has no
/// more characters than bytes, so they are counted (a loop a component
/// pays for by the byte) only when its bytes cannot tell.
pub fn longer_than(text: &str, max_chars: usize) -> bool {
    text.len() > max_chars && text.chars().count() > max_chars
}

/// Whether `text` holds a control character (`char::is_control`). One is
/// either an ASCII control (below 0x20, or DEL) or not ASCII, so the
/// characters are looked at only when some byte is one of those.
pub fn has_control(text: &str) -> bool {
    text.bytes().any(|b| !(0x20..0x7f).contains(&b)) && text.chars().any(char::is_control)
}

/// One name or value of a query string, decoded as a form's is.
fn decode(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    if find_either(bytes, b'%', b'+').is_none() {
        return Cow::Borrowed(text);
    }
    let spaced: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let decoded: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    Cow::Owned(String::from_utf8_lossy(&decoded).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_finds_the_first_one_wherever_it_is() {
        for len in 0..40 {
            for at in 0..=len {
                // Bytes near the needle's value, which a careless bit trick
                // takes for it, everywhere else.
                let mut hay: Vec<u8> = (0..len)
                    .map(|i| [b'>', b'@', 0xbf, b'a', 0xff][i % 5])
                    .collect();
                if at < len {
                    hay[at] = b'?';
                    if at + 1 < len {
                        hay[at + 1] = b'?';
                    }
                }
                assert_eq!(
                    find_byte(&hay, b'?'),
                    (at < len).then_some(at),
                    "{len} {at}"
                );
                assert_eq!(find_either(&hay, b'?', b'#'), (at < len).then_some(at));
                assert_eq!(find_either(&hay, b'#', b'?'), (at < len).then_some(at));
                assert_eq!(find_either(&hay, 0, 1), None);
                if at < len {
                    hay[at] = b'#';
                    assert_eq!(find_either(&hay, b'?', b'#'), Some(at));
                    hay[at] = 0;
                    assert_eq!(find_byte(&hay, 0), Some(at));
                    assert_eq!(find_either(&hay, 1, 0), Some(at));
                }
            }
        }
    }

    #[test]
    fn query_pairs_are_form_urlencoded_pairs() {
        let queries = [
            "",
            "a",
            "a=",
            "=b",
            "&&a=1&&b=2&",
            "category=coding&sortBy=popular&limit=20",
            "a=b=c",
            "q=x+y%20z&q=%E2%9C%93",
            "bad=%FF%FE&half=%4&end=%",
            "plus+name=1&%61=%62",
            "caf\u{e9}=\u{2713}",
        ];
        for raw in queries {
            let ours = query_pairs(raw);
            let theirs: Vec<_> = form_urlencoded::parse(raw.as_bytes()).collect();
            assert_eq!(ours, theirs, "{raw}");
        }
        let pairs = query_pairs("limit=20&q=a+b");
        assert!(matches!(pairs[0].1, Cow::Borrowed("20")));
        assert!(matches!(pairs[1].1, Cow::Owned(_)));
    }

    #[test]
    fn text_checks_agree_with_counting_and_looking_at_every_character() {
        let texts = [
            "",
            "coding",
            "ééééé",
            "éééééé",
            "a\u{1}b",
            "a\nb",
            "a\u{7f}b",
            "a\u{85}b",
            "\u{a0}x",
            "✓✓✓",
            "日本語テキスト",
        ];
        for text in texts {
            for max in 0..8 {
                assert_eq!(
                    longer_than(text, max),
                    text.chars().count() > max,
                    "{text:?} {max}"
                );
            }
            assert_eq!(
                has_control(text),
                text.chars().any(char::is_control),
                "{text:?}"
            );
        }
    }
}
