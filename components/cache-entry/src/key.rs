//! Cache keys built from parameters.
//!
//! A key is a fixed prefix followed by one `:`-separated part per parameter,
//! in a fixed order, built after defaults are applied. Each part is encoded
//! so that different parameter sets never share a key: a present value is
//! percent-encoded (every byte but ASCII letters and digits, so `:` and `-`
//! never appear in it), and an absent value is the single character `-`,
//! which no encoded value can be.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use std::fmt::Display;

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
            Some(v) => self.0.extend(utf8_percent_encode(v, NON_ALPHANUMERIC)),
        }
        self
    }

    /// Appends a part that is a number or a word of letters and digits.
    pub fn value(self, value: impl Display) -> Self {
        let text = value.to_string();
        self.text(Some(&text))
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
    fn optional_values_are_distinct_from_absent() {
        let k = |v: Option<bool>| Key::new("p").optional(v).build();
        assert_eq!(k(None), "p:-");
        assert_eq!(k(Some(true)), "p:true");
        assert_ne!(k(Some(false)), k(None));
    }
}
