//! The request types every layer shares: an HTTP request as a component
//! sees it, its authenticated principal, and a component's response. They
//! belong to no layer: `http` builds them, `auth` makes principals, and
//! `runtime` hands them to components (it re-exports them).

/// A principal resolved by the host from a bearer token.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub user_id: String,
    pub workspace_ids: Vec<String>,
}

/// An HTTP request as handed to a component.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The raw query string, without the `?` and not percent-decoded;
    /// empty when there is none.
    pub query: String,
    /// Its headers, in the order received. The runtime never shows a
    /// component `authorization` (the host authenticates).
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub principal: Option<Principal>,
}

/// A component's response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}
