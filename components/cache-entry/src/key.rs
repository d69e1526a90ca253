//! Cache keys built from parameters.
//!
//! A key is a fixed prefix followed by one `:`-separated part per parameter,
//! in a fixed order, built after defaults are applied. Each part is encoded
//! so that different parameter sets never share a key: a present value is
//! percent-encoded (every byte but ASCII letters and digits, so `:` and `-`
//! never appear in it), and an absent value is the single character `-`,
//! which no encoded value can be.

use std::fmt::{self, Display, Write as _};

/// A cache key under construction.
pub struct Key(String);

impl Key {
    /// A key starting with `prefix` (for example `marketplace:agents`),
    /// which is taken as it is: it must be a constant.
    pub fn new(prefix: &str) -> Self {
        // Room for a few parts, so that appending them seldom moves it.
        let mut key = String::with_capacity(prefix.len() + 48);
        key.push_str(prefix);
        Key(key)
    }

    /// Appends a text part; `None` is encoded distinctly from every text.
    pub fn text(mut self, value: Option<&str>) -> Self {
        self.0.push(':');
        match value {
            None => self.0.push('-'),
            Some(v) => encode(&mut self.0, v),
        }
        self
    }

    /// Appends a part that is a number or a word of letters and digits,
    /// encoded as `text` encodes it. Written through the encoding, so that
    /// no text of it is made first.
    pub fn value(mut self, value: impl Display) -> Self {
        self.0.push(':');
        // Writing into a `String` cannot fail.
        let _ = write!(Encoded(&mut self.0), "{value}");
        self
    }

    /// Appends an integer part, as `value` would, without the formatting
    /// machinery (a component's hottest path builds keys).
    pub fn int(mut self, value: i64) -> Self {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = value.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.0.push(':');
        if value < 0 {
            // `-` is encoded, as `text` encodes it.
            self.0.push_str("%2D");
        }
        // One by one: a few digits, where `from_utf8` and a copy of a
        // length not known before cost a component more.
        for &digit in &digits[at..] {
            self.0.push(char::from(digit));
        }
        self
    }

    /// Appends an optional number or word.
    pub fn optional(self, value: Option<impl Display>) -> Self {
        match value {
            None => self.text(None),
            Some(v) => self.value(v),
        }
    }

    pub fn build(self) -> String {
        self.0
    }
}

/// A `fmt::Write` that percent-encodes what is written into the string:
/// byte by byte, so that a value written in pieces is encoded as it would
/// be whole.
struct Encoded<'a>(&'a mut String);

impl fmt::Write for Encoded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        encode(self.0, s);
        Ok(())
    }
}

/// Appends `text` to `key` percent-encoded: every byte but ASCII letters
/// and digits as `%XX` (upper-case hex), as `percent_encoding`'s
/// `NON_ALPHANUMERIC` set does. A loop over bytes: that crate's iterator
/// cost a component several times as much on every cached read
/// (BENCHMARKS.md, "a ninth run").
fn encode(key: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    key.reserve(text.len());
    // Runs of letters and digits are copied whole.
    let mut run = 0;
    for (i, &b) in text.as_bytes().iter().enumerate() {
        if b.is_ascii_alphanumeric() {
            continue;
        }
        // All ASCII when not empty, so on character boundaries.
        key.push_str(text.get(run..i).unwrap_or_default());
        let escaped = [b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
        // ASCII, so always UTF-8.
        key.push_str(std::str::from_utf8(&escaped).unwrap_or_default());
        run = i + 1;
    }
    key.push_str(text.get(run..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::Key;

    fn agents(query: Option<&str>, category: Option<&str>) -> String {
        Key::new("marketplace:agents")
            .text(query)
            .text(category)
            .build()
    }

    #[test]
    fn parts_never_run_into_each_other() {
        assert_ne!(agents(Some("a:b"), None), agents(Some("a"), Some("b")));
        assert_ne!(agents(Some("a"), Some("b")), agents(Some("a:b"), Some("")));
        assert_ne!(agents(Some("-"), None), agents(None, None));
        assert_ne!(agents(Some(""), None), agents(None, None));
        assert_ne!(agents(Some("%3A"), None), agents(Some(":"), None));
        assert_eq!(agents(Some("a b"), None), "marketplace:agents:a%20b:-");
    }

    #[test]
    fn a_value_is_encoded_as_its_text_is() {
        struct Pieces;
        impl std::fmt::Display for Pieces {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a:")?;
                f.write_str("b c")
            }
        }
        for (value, text) in [
            (Key::new("p").value(-42), "-42"),
            (Key::new("p").value("popular"), "popular"),
            (Key::new("p").value(Pieces), "a:b c"),
            (Key::new("p").value(""), ""),
        ] {
            assert_eq!(value.build(), Key::new("p").text(Some(text)).build());
        }
        assert_eq!(Key::new("p").value(Pieces).build(), "p:a%3Ab%20c");
    }

    #[test]
    fn text_is_encoded_as_percent_encoding_encodes_it() {
        let texts = [
            "",
            "abcXYZ019",
            "a-b_c.d~e",
            "a b/c?d=e&f",
            "caf\u{e9} \u{2713}",
            "\0\x7f%",
        ];
        for text in texts {
            let expected =
                percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            assert_eq!(
                Key::new("p").text(Some(text)).build(),
                format!("p:{expected}")
            );
        }
    }

    #[test]
    fn an_int_is_encoded_as_its_value_is() {
        for n in [0, 7, 20, -1, 1_000_000, i64::MAX, i64::MIN] {
            assert_eq!(Key::new("p").int(n).build(), Key::new("p").value(n).build());
        }
    }

    #[test]
    fn optional_values_are_distinct_from_absent() {
        let k = |v: Option<bool>| Key::new("p").optional(v).build();
        assert_eq!(k(None), "p:-");
        assert_eq!(k(Some(true)), "p:true");
        assert_ne!(k(Some(false)), k(None));
    }
}
