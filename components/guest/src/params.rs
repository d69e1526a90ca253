//! Query-parameter parsing and validation.
//!
//! Every accessor returns either the parameter's value, with the default
//! applied, or a 400 `invalid_parameter` response whose message names the
//! parameter. An empty free-text value counts as absent; an empty integer,
//! boolean or choice is an error (as the OpenAPI document says: `limit=`
//! is not an integer). A parameter given twice is an error, and
//! [`Query::params`] (or [`Query::only`]) rejects parameters the endpoint
//! does not know, so that a typo is an error rather than a silently ignored
//! filter.
//!
//! [`Query::params`] finds every known parameter in one pass over the
//! query, and its [`Param`]s are read without looking again: a listing
//! reads six, and looking each up by name cost a component more than
//! splitting the query (BENCHMARKS.md, "a tenth run").

use crate::{Response, error};
use cache_entry::{has_control, longer_than};
use std::borrow::Cow;

/// The query parameters of a request, split and percent-decoded from its
/// raw query string (`+` is a space, as in a form) when made.
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// One parameter an endpoint knows, as [`Query::params`] found it: absent,
/// given once, or given more than once (an error its accessors report).
pub struct Param<'a, 'n> {
    name: &'n str,
    value: Option<Cow<'a, str>>,
    repeated: bool,
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

    /// The parameters named `known`, in its order; 400 on a parameter with
    /// any other name (as [`Query::only`]). A repeated one is reported by
    /// its accessor, so that errors come in the order the endpoint reads
    /// its parameters, as they do when read one by one by name.
    pub fn params<'n, const N: usize>(
        &self,
        known: [&'n str; N],
    ) -> Result<[Param<'a, 'n>; N], Response> {
        let mut params = known.map(Param::absent);
        let mut unknown = None;
        for (name, value) in &self.pairs {
            match known.iter().position(|k| same(name, k)) {
                Some(i) => params[i].given(value.clone()),
                None => {
                    unknown.get_or_insert(name);
                }
            }
        }
        match unknown {
            None => Ok(params),
            Some(name) => Err(unknown_parameter(name, &known)),
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
            Some((k, _)) => Err(unknown_parameter(k, known)),
        }
    }

    /// The parameter `name`, looked up by it.
    fn param<'n>(&self, name: &'n str) -> Param<'a, 'n> {
        let mut param = Param::absent(name);
        for (k, v) in &self.pairs {
            if same(k, name) {
                param.given(v.clone());
            }
        }
        param
    }

    /// The raw value of `name`: none when absent, 400 when repeated.
    pub fn raw(&self, name: &str) -> Result<Option<Cow<'a, str>>, Response> {
        self.param(name).raw()
    }

    /// Free text of at most `max_chars` characters; none when absent or
    /// empty.
    pub fn text(&self, name: &str, max_chars: usize) -> Result<Option<Cow<'a, str>>, Response> {
        self.param(name).text(max_chars)
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, Response> {
        self.param(name).int(default, min, max)
    }

    /// `true` or `false`; none when absent.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, Response> {
        self.param(name).boolean()
    }

    /// One of `allowed`; none when absent.
    pub fn choice(
        &self,
        name: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, Response> {
        self.param(name).choice(allowed)
    }
}

impl<'a, 'n> Param<'a, 'n> {
    /// `name`, not (yet) seen in the query.
    fn absent(name: &'n str) -> Self {
        Param {
            name,
            value: None,
            repeated: false,
        }
    }

    /// Notes `value` given for it: a second one makes it repeated.
    fn given(&mut self, value: Cow<'a, str>) {
        self.repeated |= self.value.is_some();
        self.value = Some(value);
    }

    /// Its raw value: none when absent, 400 when repeated.
    pub fn raw(self) -> Result<Option<Cow<'a, str>>, Response> {
        if self.repeated {
            return Err(invalid(&format!("`{}` is given more than once", self.name)));
        }
        Ok(self.value)
    }

    /// The raw value of a typed parameter: none when absent, 400 when empty
    /// or repeated.
    fn typed(self) -> Result<Option<Cow<'a, str>>, Response> {
        let name = self.name;
        match self.raw()? {
            Some(v) if v.is_empty() => Err(invalid(&format!(
                "`{name}` is empty: give it a value or leave it out"
            ))),
            other => Ok(other),
        }
    }

    /// Free text of at most `max_chars` characters; none when absent or
    /// empty.
    pub fn text(self, max_chars: usize) -> Result<Option<Cow<'a, str>>, Response> {
        let name = self.name;
        let value = self.raw()?.filter(|v| !v.is_empty());
        // The characters are counted, and looked at, only when the bytes
        // cannot tell (the native baseline runs the same checks).
        match value {
            Some(v) if longer_than(&v, max_chars) => Err(invalid(&format!(
                "`{name}` must be at most {max_chars} characters long"
            ))),
            Some(v) if has_control(&v) => Err(invalid(&format!(
                "`{name}` must not contain control characters"
            ))),
            _ => Ok(value),
        }
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(self, default: i64, min: i64, max: i64) -> Result<i64, Response> {
        let name = self.name;
        let Some(v) = self.typed()? else {
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
    pub fn boolean(self) -> Result<Option<bool>, Response> {
        let name = self.name;
        match self.typed()?.as_deref() {
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
    pub fn choice(self, allowed: &[&'static str]) -> Result<Option<&'static str>, Response> {
        let name = self.name;
        match self.typed()?.as_deref() {
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

/// The 400 for a parameter `name` not among `known`.
fn unknown_parameter(name: &str, known: &[&str]) -> Response {
    if known.is_empty() {
        return invalid(&format!(
            "unknown parameter `{}`: this endpoint takes none",
            quote(name)
        ));
    }
    invalid(&format!(
        "unknown parameter `{}`; expected one of: {}",
        quote(name),
        known.join(", ")
    ))
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

#[cfg(test)]
mod tests {
    use super::Query;

    #[test]
    fn text_is_refused_past_its_length_in_characters_or_with_a_control_character() {
        fn text(raw: &str) -> Result<Option<String>, u16> {
            let text = Query::new(raw).text("q", 5).map_err(|r| r.status)?;
            Ok(text.map(|t| t.into_owned()))
        }
        assert_eq!(text("q=coding").unwrap_err(), 400, "6 characters");
        assert_eq!(text("q=codes").unwrap().as_deref(), Some("codes"));
        // Ten bytes but five characters: within the limit.
        assert_eq!(
            text("q=%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9").unwrap().as_deref(),
            Some("ééééé")
        );
        assert_eq!(
            text("q=%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9").unwrap_err(),
            400
        );
        // ASCII controls, DEL, and a control that is not ASCII (U+0085).
        for raw in ["q=a%01b", "q=a%0Ab", "q=a%7Fb", "q=a%C2%85b"] {
            assert_eq!(text(raw).unwrap_err(), 400, "{raw}");
        }
        // Not ASCII, not a control.
        assert_eq!(text("q=%C2%A0x").unwrap().as_deref(), Some("\u{a0}x"));
        assert_eq!(text("q=").unwrap(), None, "empty is absent");
    }

    #[test]
    fn params_are_found_in_one_pass_and_report_as_lookups_by_name_did() {
        let status = |r: Result<_, crate::Response>| r.map_err(|r| r.status);
        let q = Query::new("limit=20&category=coding");
        let [category, limit, offset] = q.params(["category", "limit", "offset"]).ok().unwrap();
        assert_eq!(category.text(10).ok().unwrap().as_deref(), Some("coding"));
        assert_eq!(limit.int(50, 1, 100).ok(), Some(20));
        assert_eq!(offset.int(0, 0, 10).ok(), Some(0), "absent: the default");

        // An unknown name is reported before a repeated one, wherever it is.
        let q = Query::new("limit=1&limit=2&bogus=1");
        let err = q.params(["limit"]).err().unwrap();
        assert_eq!(err.status, 400);
        assert!(
            String::from_utf8_lossy(match &err.body {
                crate::Body::Bytes(b) => b,
                _ => unreachable!(),
            })
            .contains("unknown parameter `bogus`")
        );

        // A repeated one is reported by its accessor, as `Query::int` does.
        let q = Query::new("limit=1&limit=2");
        let [limit] = q.params(["limit"]).ok().unwrap();
        assert_eq!(status(limit.int(50, 1, 100)), Err(400));
        assert_eq!(status(q.int("limit", 50, 1, 100)), Err(400));
        let [limit] = Query::new("limit=1").params(["limit"]).ok().unwrap();
        assert_eq!(limit.raw().ok().unwrap().as_deref(), Some("1"));
    }
}
