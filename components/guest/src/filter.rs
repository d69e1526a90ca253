//! `WHERE` clauses and paging for listings, built from optional filters with
//! numbered placeholders, so that every listing writes its SQL the same way
//! and user text only ever travels as a bound value.

use crate::{DbError, Response};
use crate::{RowView, Value, db, db_error};

/// A `WHERE` clause under construction and the values it binds.
#[derive(Default)]
pub struct Filter {
    /// Bound values, in placeholder order.
    params: Vec<Value>,
    /// The conditions, joined with `AND`.
    conditions: Vec<String>,
}

impl Filter {
    /// A filter whose placeholders come after `params` (values the rest of
    /// the statement binds first).
    pub fn after(params: Vec<Value>) -> Self {
        Filter {
            params,
            conditions: Vec::new(),
        }
    }

    /// Binds `value` and returns its placeholder number.
    fn bind(&mut self, value: Value) -> usize {
        self.params.push(value);
        self.params.len()
    }

    /// `column = $n` when `value` is present.
    pub fn equals(mut self, column: &str, value: Option<Value>) -> Self {
        if let Some(value) = value {
            let n = self.bind(value);
            self.conditions.push(format!("{column} = ${n}"));
        }
        self
    }

    /// A case-insensitive substring match of `text` over any of `columns`
    /// (one bound pattern, LIKE's wildcards in `text` taken literally).
    pub fn contains(mut self, columns: &[&str], text: Option<&str>) -> Self {
        if let Some(text) = text {
            let n = self.bind(Value::Text(crate::contains_pattern(text)));
            let any: Vec<String> = columns
                .iter()
                .map(|c| format!("LOWER({c}) LIKE ${n} ESCAPE '\\'"))
                .collect();
            self.conditions.push(format!("({})", any.join(" OR ")));
        }
        self
    }

    /// The clause: empty, or `WHERE …`.
    pub fn clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }

    /// The values bound so far.
    pub fn params(&self) -> &[Value] {
        &self.params
    }

    /// How many rows `SELECT COUNT(*) AS total {from} {clause}` finds.
    pub fn count(&self, from: &str) -> Result<i64, DbError> {
        let sql = format!("SELECT COUNT(*) AS total {from} {}", self.clause());
        let rows = db::query(&sql, &self.params)?;
        Ok(RowView::all(&rows).next().map_or(0, |r| r.int("total")))
    }

    /// The page's `LIMIT $a OFFSET $b` and every value to bind with it.
    pub fn page(mut self, limit: i64, offset: i64) -> (String, Vec<Value>) {
        let a = self.bind(Value::Int(limit));
        let b = self.bind(Value::Int(offset));
        (format!("LIMIT ${a} OFFSET ${b}"), self.params)
    }
}

/// The JSON shape of one page of a listing: `{field: items, total, limit,
/// offset}`.
pub fn page_json(
    field: &str,
    items: serde_json::Value,
    total: i64,
    limit: i64,
    offset: i64,
) -> Response {
    let mut page = serde_json::Map::new();
    page.insert(field.to_string(), items);
    page.insert("total".into(), total.into());
    page.insert("limit".into(), limit.into());
    page.insert("offset".into(), offset.into());
    crate::json(200, &page)
}

/// `result`'s value, or the response for its database error.
pub fn or_db_error<T>(result: Result<T, DbError>) -> Result<T, Response> {
    result.map_err(|e| db_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_number_their_placeholders_after_the_given_values() {
        let f = Filter::after(vec![Value::Int(7)])
            .contains(&["a.name", "a.tags"], Some("50%"))
            .equals("c.slug", Some(Value::Text("coding".into())))
            .equals("a.featured", None);
        assert_eq!(
            f.clause(),
            "WHERE (LOWER(a.name) LIKE $2 ESCAPE '\\' OR LOWER(a.tags) LIKE $2 ESCAPE '\\') AND c.slug = $3"
        );
        let (page, params) = f.page(10, 20);
        assert_eq!(page, "LIMIT $4 OFFSET $5");
        assert_eq!(params.len(), 5);
        assert!(matches!(&params[1], Value::Text(p) if p == "%50\\%%"));
    }

    #[test]
    fn no_condition_is_no_clause() {
        assert_eq!(Filter::default().equals("x", None).clause(), "");
    }
}
