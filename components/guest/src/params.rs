//! Query-parameter parsing and validation.
//!
//! Every accessor takes the parameter's name and returns either its value,
//! with the default applied, or a 400 `invalid_parameter` response whose
//! message names the parameter. An empty free-text value counts as absent;
//! an empty integer, boolean or choice is an error (as the OpenAPI document
//! says: `limit=` is not an integer). A parameter given twice is an error, and [`Query::only`] rejects parameters the
//! endpoint does not know, so that a typo is an error rather than a silently
//! ignored filter.

use crate::{Response, error};
use std::borrow::Cow;

/// The query parameters of a request, split and percent-decoded from its
/// raw query string (`+` is a space, as in a form) when made.
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// How much of a bad value is quoted back in an error message.
const QUOTE_MAX: usize = 40;

impl<'a> Query<'a> {
    /// The parameters of `raw`, a query string as the host hands it over
    /// ([`Request::query`](crate::Request::query): `a=1&b=x%20y`, no `?`). A value is borrowed from
    /// `raw` unless it needs decoding; bytes that do not decode to UTF-8
    /// become U+FFFD.
    pub fn new(raw: &'a str) -> Self {
        Query {
            pairs: cache_entry::query_pairs(raw),
        }
    }

    /// Fails with 400 on a parameter whose name is not in `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), Response> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.iter().any(|name| same(k, name)))
        {
            None => Ok(()),
            Some((k, _)) if known.is_empty() => Err(invalid(&format!(
                "unknown parameter `{}`: this endpoint takes none",
                quote(k)
            ))),
            Some((k, _)) => Err(invalid(&format!(
                "unknown parameter `{}`; expected one of: {}",
                quote(k),
                known.join(", ")
            ))),
        }
    }

    /// The raw value of `name`: none when absent, 400 when repeated.
    pub fn raw(&self, name: &str) -> Result<Option<Cow<'a, str>>, Response> {
        let mut found = None;
        for (k, v) in &self.pairs {
            if same(k, name) {
                if found.is_some() {
                    return Err(invalid(&format!("`{name}` is given more than once")));
                }
                found = Some(v);
            }
        }
        Ok(found.cloned())
    }

    /// The raw value of a typed parameter: none when absent, 400 when empty
    /// or repeated.
    fn typed(&self, name: &str) -> Result<Option<Cow<'a, str>>, Response> {
        match self.raw(name)? {
            Some(v) if v.is_empty() => Err(invalid(&format!(
                "`{name}` is empty: give it a value or leave it out"
            ))),
            other => Ok(other),
        }
    }

    /// Free text of at most `max_chars` characters; none when absent or
    /// empty.
    pub fn text(&self, name: &str, max_chars: usize) -> Result<Option<Cow<'a, str>>, Response> {
        let value = self.raw(name)?.filter(|v| !v.is_empty());
        match value {
            Some(v) if v.chars().count() > max_chars => Err(invalid(&format!(
                "`{name}` must be at most {max_chars} characters long"
            ))),
            Some(v) if v.chars().any(char::is_control) => Err(invalid(&format!(
                "`{name}` must not contain control characters"
            ))),
            _ => Ok(value),
        }
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, Response> {
        let Some(v) = self.typed(name)? else {
            return Ok(default);
        };
        match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(invalid(&format!(
                "`{name}` must be an integer from {min} to {max}, not \"{}\"",
                quote(&v)
            ))),
        }
    }

    /// `true` or `false`; none when absent.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, Response> {
        match self.typed(name)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(invalid(&format!(
                "`{name}` must be true or false, not \"{}\"",
                quote(v)
            ))),
        }
    }

    /// One of `allowed`; none when absent.
    pub fn choice(
        &self,
        name: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, Response> {
        match self.typed(name)?.as_deref() {
            None => Ok(None),
            Some(v) => allowed
                .iter()
                .find(|a| **a == v)
                .map(|a| Some(*a))
                .ok_or_else(|| {
                    invalid(&format!(
                        "`{name}` must be one of {}, not \"{}\"",
                        allowed.join(", "),
                        quote(v)
                    ))
                }),
        }
    }
}

/// Whether two names are the same, the first byte compared before the
/// rest: most names differ there, and comparing the rest is a call to
/// `memcmp`, which a component pays for dearly.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// The 400 response for a bad parameter.
fn invalid(message: &str) -> Response {
    error(400, "invalid_parameter", message)
}

/// `s`, cut to a length fit for quoting in a message.
fn quote(s: &str) -> String {
    let mut out: String = s.chars().take(QUOTE_MAX).collect();
    if s.chars().count() > QUOTE_MAX {
        out.push('…');
    }
    out.escape_debug().to_string()
}
