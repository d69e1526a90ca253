//! The deploy CLI's side of the admin API (`marketplace-host deploy`,
//! `list`, `rollback`, `activate`): one HTTP request each to any host of
//! the fleet, its answer written out for a person to read. Errors are the
//! API's own message (`error.message`), or why the API could not be
//! reached.
//!
//! Plain HTTP: put the admin API behind TLS (a proxy) when it crosses a
//! network you do not trust.

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use std::fmt::Write as _;
use std::time::Duration;

/// How long one admin request may take (an upload compiles the component).
const TIMEOUT: Duration = Duration::from_secs(120);

/// Where the admin API is, and its token.
#[derive(Debug, Clone)]
pub struct AdminApi {
    /// `http://host:port`, without a trailing slash.
    pub url: String,
    pub token: String,
}

/// Why a command failed, as the person running it should read it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the admin API answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("{0}")]
    Usage(String),
}

impl AdminApi {
    /// `method path` with `body`: the status and the JSON answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<serde_json::Value, CliError> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let unreachable = |reason: String| CliError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let request = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CliError::Usage(format!("not a usable admin URL {url:?}: {e}")))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| unreachable(chain(&e)))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("the answer broke off: {e}")))?
                .to_bytes();
            Ok::<_, CliError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))??;
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            let message = json["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CliError::Refused { status, message });
        }
        Ok(json)
    }

    /// Uploads `bytes` as `component`, with `note`.
    pub async fn deploy(
        &self,
        component: &str,
        bytes: Vec<u8>,
        note: &str,
    ) -> Result<String, CliError> {
        let size = bytes.len();
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("note", note)
            .finish();
        let info = self
            .call(
                Method::PUT,
                &format!("/admin/components/{}?{query}", segment(component)?),
                bytes,
            )
            .await?;
        Ok(format!(
            "deployed {component}: {} ({size} bytes); every host of the fleet serves it within about a second\n",
            info["current"]["digest"].as_str().unwrap_or("?")
        ))
    }

    /// Rolls `component` back.
    pub async fn rollback(&self, component: &str) -> Result<String, CliError> {
        let path = format!("/admin/components/{}/rollback", segment(component)?);
        let info = self.call(Method::POST, &path, Vec::new()).await?;
        Ok(format!(
            "rolled back {component}: {} serves again, fleet-wide\n",
            info["current"]["digest"].as_str().unwrap_or("?")
        ))
    }

    /// Makes the kept version `digest` of `component` active.
    pub async fn activate(&self, component: &str, digest: &str) -> Result<String, CliError> {
        let path = format!(
            "/admin/components/{}/activate/{}",
            segment(component)?,
            segment(digest)?
        );
        let info = self.call(Method::POST, &path, Vec::new()).await?;
        Ok(format!(
            "activated {component}: {} serves, fleet-wide\n",
            info["current"]["digest"].as_str().unwrap_or("?")
        ))
    }

    /// Every component: the active version, the kept ones, and what each
    /// live host serves.
    pub async fn list(&self) -> Result<String, CliError> {
        let answer = self
            .call(Method::GET, "/admin/components", Vec::new())
            .await?;
        let now = crate::now_ms();
        let mut out = String::new();
        if let Some(error) = answer["fleetError"].as_str() {
            let _ = writeln!(out, "the fleet's record could not be read: {error}\n");
        }
        for c in answer["components"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("?");
            let fleet = &c["fleet"];
            let active = fleet["active"]
                .as_str()
                .unwrap_or("(never deployed: each host serves its manifest's file)");
            let _ = writeln!(out, "{name}  active {active}");
            // Newest first; the first is the active one.
            let versions = fleet["versions"].as_array().cloned().unwrap_or_default();
            for (i, v) in versions.iter().rev().enumerate() {
                let digest = v["digest"].as_str().unwrap_or("?");
                let mark = if i == 0 { "*" } else { " " };
                let _ = writeln!(
                    out,
                    "  {mark} {}  {:>9} bytes  {}  {}",
                    short(digest),
                    v["size"].as_i64().unwrap_or(0),
                    ago(now, v["uploadedAt"].as_i64()),
                    v["note"].as_str().unwrap_or("")
                );
            }
            for h in fleet["hosts"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "    host {}  serves {} since {}",
                    h["host"].as_str().unwrap_or("?"),
                    short(h["digest"].as_str().unwrap_or("?")),
                    ago(now, h["since"].as_i64())
                );
            }
        }
        Ok(out)
    }
}

/// `value` as one path segment, refused if it would change the path.
fn segment(value: &str) -> Result<&str, CliError> {
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(CliError::Usage(format!(
            "{value:?} is not a component name or digest (letters, digits, '-' and '_')"
        )));
    }
    Ok(value)
}

/// An error and its sources, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

/// The first 12 characters of a digest.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// `at` (epoch ms) as a time ago.
fn ago(now: i64, at: Option<i64>) -> String {
    let Some(at) = at else {
        return "?".into();
    };
    let s = (now - at).max(0) / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}
