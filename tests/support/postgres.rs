//! A fresh PostgreSQL schema per test, on the server named by
//! `DATABASE_URL`. Without it the test is skipped with a printed reason,
//! except under CI (`CI` set), where a skip would hide a gap and fails.

use sqlx::Connection;
use std::sync::atomic::{AtomicU32, Ordering};

/// A schema that is dropped when the value is dropped.
pub struct PgSchema {
    /// The server's base URL.
    base: String,
    /// The schema's name.
    pub name: String,
    /// A URL whose connections use this schema.
    pub url: String,
}

/// The server URL, or `None` (after saying why) when the test should skip.
pub fn server_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("DATABASE_URL must name a PostgreSQL server when CI is set; refusing to skip")
        }
        _ => {
            eprintln!(
                "skipped: set DATABASE_URL=postgres://… to run the PostgreSQL half of this test"
            );
            None
        }
    }
}

/// Creates a fresh schema, or returns `None` when the test should skip.
pub async fn fresh_schema() -> Option<PgSchema> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = server_url()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&mut conn)
        .await
        .expect("schema created");
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{name}");
    Some(PgSchema { base, name, url })
}

impl PgSchema {
    /// The server's address.
    pub fn server(&self) -> std::net::SocketAddr {
        use std::net::ToSocketAddrs;
        authority(&self.url)
            .to_socket_addrs()
            .expect("a PostgreSQL address")
            .next()
            .expect("PostgreSQL resolves")
    }

    /// `url`, through `addr` (a proxy) instead of the server's address.
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        self.url.replace(&authority(&self.url), &addr.to_string())
    }
}

/// `host:port` of a `postgres://user@host:port/db?…` URL.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let base = self.base.clone();
        let name = self.name.clone();
        // Drop runs outside async; use a short-lived runtime on its own
        // thread so this works from within a tokio test too.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&base).await.ok()?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
