//! Request bodies: JSON parsed into a type, with errors that name the field.

use crate::{Principal, Query, Request, Response, error};
use serde::de::DeserializeOwned;

/// The body parsed as `T`. Fails with 400 `invalid_body` when the body is
/// empty, not JSON, or does not match `T`; the message names the field at
/// fault (for example `workspaceId: invalid type: integer, expected a
/// string`).
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("the request body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    match parsed {
        Ok(value) => match de.end() {
            Ok(()) => Ok(value),
            Err(_) => Err(invalid("the request body must hold a single JSON value")),
        },
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let reason = strip_position(&inner.to_string());
            Err(invalid(&if inner.is_syntax() || inner.is_eof() {
                format!("the request body is not valid JSON: {reason}")
            } else if path == "." {
                format!("body: {reason}")
            } else {
                format!("{path}: {reason}")
            }))
        }
    }
}

/// What every write needs: the caller (401 without a token), no query
/// parameters (400), and the body parsed as `T` (400 naming the field).
pub fn write_request<T: DeserializeOwned>(req: &Request) -> Result<(&Principal, T), Response> {
    let principal = crate::require_principal(req)?;
    Query::new(req.query()).only(&[])?;
    Ok((principal, json_body(req.body())?))
}

/// A 400 for a body field: `{field}: {message}`.
pub fn invalid_field(field: &str, message: &str) -> Response {
    invalid(&format!("{field}: {message}"))
}

fn invalid(message: &str) -> Response {
    error(400, "invalid_body", message)
}

/// serde_json's message without its " at line 1 column 7" suffix.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
