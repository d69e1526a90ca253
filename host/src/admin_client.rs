//! The deploy CLI's side of the admin API (`marketplace-host deploy`,
//! `list`, `rollback`, `activate`, `promote`, `abort`): one HTTP request each to any host of
//! the fleet, its answer written out for a person to read. Errors are the
//! API's own message (`error.message`), or why the API could not be
//! reached.
//!
//! Plain HTTP only (the host has no TLS stack): run it on the host's
//! machine, or through an SSH tunnel across a network you do not trust;
//! an `https://` URL is refused with that advice.

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use std::fmt::Write as _;
use std::time::Duration;

/// How long one admin request may take (an upload compiles the component).
const TIMEOUT: Duration = Duration::from_secs(120);
/// How long connecting to the admin API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin API is, and its token.
#[derive(Clone)]
pub struct AdminApi {
    /// `http://host:port`.
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a command failed, as the person running it should read it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the admin API answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("the request was sent to {url}, but no answer came within {} s: it may have been carried out; check with `list`", .timeout.as_secs())]
    NoAnswer { url: String, timeout: Duration },
    #[error("{url} answered something other than the admin API: {reason}")]
    Unexpected { url: String, reason: String },
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
        let base = self.url.trim_end_matches('/');
        if base.starts_with("https://") {
            return Err(CliError::Usage(format!(
                "{base}: the CLI speaks plain HTTP only; run it on the host's machine or through an SSH tunnel (ssh -L 8080:127.0.0.1:8080 host)"
            )));
        }
        let url = format!("{base}{path}");
        let unreachable = |reason: String| CliError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let mut authorization =
            header::HeaderValue::try_from(format!("Bearer {}", self.token.trim())).map_err(
                |_| {
                    CliError::Usage("the admin token holds characters a header cannot carry".into())
                },
            )?;
        authorization.set_sensitive(true);
        let request = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, authorization)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CliError::Usage(format!("not a usable admin URL {url:?}: {e}")))?;
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<Bytes>>(connector);
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
            .map_err(|_| CliError::NoAnswer {
                url: self.url.clone(),
                timeout: TIMEOUT,
            })??;
        let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let message = json
                .as_ref()
                .and_then(|j| j["error"]["message"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CliError::Refused { status, message });
        }
        match json {
            Some(json @ serde_json::Value::Object(_)) => Ok(json),
            _ => Err(CliError::Unexpected {
                url: self.url.clone(),
                reason: "the answer is not a JSON object".into(),
            }),
        }
    }

    /// The digest `info` (a component as the API answers a change) says
    /// is active fleet-wide.
    fn active<'a>(&self, info: &'a serde_json::Value) -> Result<&'a str, CliError> {
        info["active"]
            .as_str()
            .or_else(|| info["current"]["digest"].as_str())
            .ok_or_else(|| CliError::Unexpected {
                url: self.url.clone(),
                reason: "the answer names no version".into(),
            })
    }

    /// A line on this host, when it does not serve `active` yet.
    fn lagging(info: &serde_json::Value, active: &str) -> String {
        match info["current"]["digest"].as_str() {
            Some(here) if here != active => format!(
                "(the host asked still serves {}; it follows at its next convergence)\n",
                short(here)
            ),
            _ => String::new(),
        }
    }

    /// Uploads `bytes` as `component`, with `note`: the active version, or
    /// with `canary`, the canary served to that percentage of requests.
    pub async fn deploy(
        &self,
        component: &str,
        bytes: Vec<u8>,
        note: &str,
        canary: Option<u8>,
        instance_reuse: Option<u32>,
    ) -> Result<String, CliError> {
        let size = bytes.len();
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("note", note);
        if let Some(n) = instance_reuse {
            query.append_pair("instance_reuse", &n.to_string());
        }
        if let Some(share) = canary {
            if !(1..=99).contains(&share) {
                return Err(CliError::Usage(format!(
                    "--canary {share}: the canary's share is a percentage from 1 to 99"
                )));
            }
            query.append_pair("canary", &share.to_string());
        }
        let info = self
            .call(
                Method::PUT,
                &format!(
                    "/admin/components/{}?{}",
                    segment(component)?,
                    query.finish()
                ),
                bytes,
            )
            .await?;
        if canary.is_some() {
            let digest = info["canary"]["digest"]
                .as_str()
                .ok_or_else(|| CliError::Unexpected {
                    url: self.url.clone(),
                    reason: "the answer names no canary".into(),
                })?;
            return Ok(format!(
                "canary of {component}: {digest} ({size} bytes) serves {}% of requests beside {}, fleet-wide; `promote {component}` makes it active, `abort {component}` ends it (a host ends it by itself if it fails clearly more than the active version)\n",
                info["canary"]["share"],
                info["active"].as_str().unwrap_or("the active version")
            ));
        }
        let active = self.active(&info)?;
        Ok(format!(
            "deployed {component}: {active} ({size} bytes); every host of the fleet serves it within about a second\n{}",
            Self::lagging(&info, active)
        ))
    }

    /// Makes the canary of `component` its active version.
    pub async fn promote(&self, component: &str) -> Result<String, CliError> {
        let path = format!("/admin/components/{}/promote", segment(component)?);
        let info = self.call(Method::POST, &path, Vec::new()).await?;
        let active = self.active(&info)?;
        Ok(format!(
            "promoted {component}: {active} serves every request, fleet-wide\n{}",
            Self::lagging(&info, active)
        ))
    }

    /// Ends the canary of `component`.
    pub async fn abort(&self, component: &str) -> Result<String, CliError> {
        let path = format!("/admin/components/{}/abort", segment(component)?);
        let info = self.call(Method::POST, &path, Vec::new()).await?;
        let here = info["current"]["digest"].as_str().unwrap_or("?");
        Ok(format!(
            "aborted the canary of {component}: every request goes to {here} again, fleet-wide\n"
        ))
    }

    /// Rolls `component` back.
    pub async fn rollback(&self, component: &str) -> Result<String, CliError> {
        let path = format!("/admin/components/{}/rollback", segment(component)?);
        let info = self.call(Method::POST, &path, Vec::new()).await?;
        let active = self.active(&info)?;
        Ok(format!(
            "rolled back {component}: {active} serves again, fleet-wide\n{}",
            Self::lagging(&info, active)
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
        let active = self.active(&info)?;
        Ok(format!(
            "activated {component}: {active} serves, fleet-wide\n{}",
            Self::lagging(&info, active)
        ))
    }

    /// Every component: the active version, the kept ones, and what each
    /// live host serves.
    pub async fn list(&self) -> Result<String, CliError> {
        let answer = self
            .call(Method::GET, "/admin/components", Vec::new())
            .await?;
        render_list(&answer, crate::now_ms()).ok_or_else(|| CliError::Unexpected {
            url: self.url.clone(),
            reason: "the answer lists no components".into(),
        })
    }
}

/// `GET /admin/components`'s answer for a person, at `now` (epoch ms);
/// `None` if it lists no components.
fn render_list(answer: &serde_json::Value, now: i64) -> Option<String> {
    let mut out = String::new();
    if let Some(error) = answer["fleetError"].as_str() {
        let _ = writeln!(out, "the fleet's record could not be read: {error}\n");
    }
    for c in answer["components"].as_array()? {
        let name = c["name"].as_str().unwrap_or("?");
        let fleet = &c["fleet"];
        if fleet.is_null() {
            let here = c["current"]["digest"].as_str().unwrap_or("?");
            let _ = writeln!(
                out,
                "{name}  the host asked serves {here} (the fleet's record is unavailable)"
            );
            continue;
        }
        let active = fleet["active"]
            .as_str()
            .unwrap_or("(never deployed: each host serves its manifest's file)");
        let _ = writeln!(out, "{name}  active {active}");
        let canary = &fleet["canary"];
        match (canary["digest"].as_str(), canary["state"].as_str()) {
            (Some(digest), Some("running")) => {
                let _ = writeln!(
                    out,
                    "  canary {digest} on {}% of requests, since {}",
                    canary["share"],
                    ago(now, canary["startedAt"].as_i64())
                );
            }
            (Some(digest), Some(state)) => {
                let _ = writeln!(
                    out,
                    "  last canary {} {state} {}: {}",
                    short(digest),
                    ago(now, canary["endedAt"].as_i64()),
                    canary["reason"].as_str().unwrap_or("")
                );
            }
            _ => {}
        }
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
            let canary = match h["canary"].as_str() {
                Some(digest) => format!(", canary {}", short(digest)),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "    host {}  serves {} since {}{canary}",
                h["host"].as_str().unwrap_or("?"),
                short(h["digest"].as_str().unwrap_or("?")),
                ago(now, h["since"].as_i64())
            );
        }
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_the_active_version_first_and_each_host() {
        let answer = serde_json::json!({ "components": [{
            "name": "templates",
            "current": { "digest": "b".repeat(64) },
            "fleet": {
                "active": "b".repeat(64),
                "versions": [
                    { "digest": "a".repeat(64), "size": 10, "uploadedAt": 0, "note": "old" },
                    { "digest": "b".repeat(64), "size": 20, "uploadedAt": 3_540_000, "note": "new" },
                ],
                "hosts": [{ "host": "web-1", "digest": "b".repeat(64), "since": 3_595_000, "seenAt": 3_599_000 }],
            },
        }]});
        let text = render_list(&answer, 3_600_000).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("templates  active {}", "b".repeat(64)));
        assert_eq!(
            lines[1],
            format!("  * {}         20 bytes  1 min ago  new", "b".repeat(12))
        );
        assert_eq!(
            lines[2],
            format!("    {}         10 bytes  1 h ago  old", "a".repeat(12))
        );
        assert_eq!(
            lines[3],
            format!("    host web-1  serves {} since 5 s ago", "b".repeat(12))
        );
    }

    #[test]
    fn the_list_shows_a_running_canary_and_how_the_last_one_ended() {
        let entry = |canary: serde_json::Value| {
            serde_json::json!({ "components": [{
                "name": "greeter",
                "current": { "digest": "a".repeat(64) },
                "fleet": {
                    "active": "a".repeat(64),
                    "canary": canary,
                    "versions": [],
                    "hosts": [{ "host": "web-2", "digest": "a".repeat(64), "since": 0, "canary": "c".repeat(64) }],
                },
            }]})
        };
        let running = serde_json::json!({
            "digest": "c".repeat(64), "share": 20, "startedAt": 0, "state": "running", "reason": "", "endedAt": null,
        });
        let text = render_list(&entry(running), 120_000).unwrap();
        assert!(
            text.contains(&format!(
                "  canary {} on 20% of requests, since 2 min ago",
                "c".repeat(64)
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "host web-2  serves {} since 2 min ago, canary {}",
                "a".repeat(12),
                "c".repeat(12)
            )),
            "{text}"
        );
        let aborted = serde_json::json!({
            "digest": "c".repeat(64), "share": 20, "startedAt": 0, "state": "aborted",
            "reason": "aborted by an operator", "endedAt": 60_000,
        });
        let text = render_list(&entry(aborted), 120_000).unwrap();
        assert!(
            text.contains(&format!(
                "  last canary {} aborted 1 min ago: aborted by an operator",
                "c".repeat(12)
            )),
            "{text}"
        );
    }

    #[test]
    fn without_the_record_the_list_says_so_rather_than_never_deployed() {
        let answer = serde_json::json!({
            "components": [{ "name": "templates", "current": { "digest": "c".repeat(64) }, "fleet": null }],
            "fleetError": "database unavailable: refused",
        });
        let text = render_list(&answer, 0).unwrap();
        assert!(text.starts_with("the fleet's record could not be read: database unavailable"));
        assert!(text.contains(&format!(
            "templates  the host asked serves {}",
            "c".repeat(64)
        )));
        assert!(!text.contains("never deployed"), "{text}");
        assert!(render_list(&serde_json::json!({ "status": "ok" }), 0).is_none());
    }

    #[test]
    fn names_that_would_change_the_path_are_refused() {
        for bad in ["", "../admin", "a/b", "a?b", "a b", "é"] {
            assert!(matches!(segment(bad), Err(CliError::Usage(_))), "{bad:?}");
        }
        assert_eq!(segment("greeter_v2-x").unwrap(), "greeter_v2-x");
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let api = AdminApi {
            url: "http://127.0.0.1:8080".into(),
            token: "s3cret".into(),
        };
        assert!(!format!("{api:?}").contains("s3cret"));
    }
}
