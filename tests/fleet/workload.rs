//! The invalidation invariant under a concurrent workload: writes and reads
//! across three hosts at once, then a check of every read against every
//! write that finished before it started.

use super::{Fleet, details, install_as};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A read that starts this long after a write returned must see it, on
/// every host (generous: the goal is 100 ms at p99).
const BOUND: Duration = Duration::from_secs(2);

const AGENTS: [&str; 4] = [
    "agent-000020",
    "agent-000021",
    "agent-000022",
    "agent-000023",
];
const WORKSPACES: usize = 6;

/// A write that returned: the agent's install count after it, on which
/// host, and when it returned.
struct Write {
    agent: &'static str,
    count: i64,
    host: usize,
    returned: Instant,
}

/// A read: when it started, on which host, what it saw.
struct Read {
    agent: &'static str,
    count: i64,
    host: usize,
    started: Instant,
}

// After a write returns, no read that starts after the propagation bound
// returns data from before it, on any host; on the writer's host, no read
// that starts after it returns. B reads with its Redis cut, so it serves
// from its memory tier and hears of writes from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_a_write_returns_data_from_before_it_on_any_host() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = fleet.host().await;
    let (b, b_redis) = fleet.host_behind_proxy().await;
    let c = fleet.host().await;
    b_redis.cut().await;
    let apps = Arc::new([a.app.clone(), b.app.clone(), c.app.clone()]);

    // Workspaces of their own, each with a token, so that every install
    // counts once.
    let db = host::db::connect(&fleet.schema.url, &host::db::DbOptions::default())
        .await
        .unwrap()
        .host;
    let mut members = Vec::new();
    for w in 0..WORKSPACES {
        let workspace = format!("ws-load-{w}");
        let token = host::auth::create_token(
            db.as_ref(),
            &format!("user-load-{w}"),
            &format!("load{w}@example.com"),
            Some(&workspace),
            "load test",
            host::now_ms(),
        )
        .await
        .unwrap();
        members.push((workspace, token));
    }

    let writes = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for host in 0..3 {
        let (apps, reads, done) = (apps.clone(), reads.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut i = host;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let agent = AGENTS[i % AGENTS.len()];
                i += 1;
                let started = Instant::now();
                let (_, count) = details(&apps[host], agent).await;
                reads.lock().await.push(Read {
                    agent,
                    count,
                    host,
                    started,
                });
            }
        }));
    }
    let mut writers = Vec::new();
    for (w, (workspace, token)) in members.into_iter().enumerate() {
        let (apps, writes) = (apps.clone(), writes.clone());
        writers.push(tokio::spawn(async move {
            for (i, agent) in AGENTS.iter().enumerate() {
                let host = (w + i) % 3;
                let (status, count) = install_as(&apps[host], agent, &token, &workspace).await;
                assert_eq!(status, 201, "install of {agent} in {workspace}");
                writes.lock().await.push(Write {
                    agent,
                    count: count.expect("an install count"),
                    host,
                    returned: Instant::now(),
                });
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    // Reads go on past the bound after the last write.
    tokio::time::sleep(BOUND + Duration::from_millis(500)).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }

    let writes = writes.lock().await;
    let reads = reads.lock().await;
    assert_eq!(writes.len(), WORKSPACES * AGENTS.len());
    let mut checked = 0;
    for w in writes.iter() {
        for r in reads.iter().filter(|r| r.agent == w.agent) {
            let bound = if r.host == w.host {
                Duration::ZERO
            } else {
                BOUND
            };
            if r.started > w.returned + bound {
                checked += 1;
                assert!(
                    r.count >= w.count,
                    "host {} read {} installs of {} {:?} after a write on host {} returned {}",
                    r.host,
                    r.count,
                    w.agent,
                    r.started - w.returned,
                    w.host,
                    w.count
                );
            }
        }
    }
    assert!(checked > 100, "only {checked} read/write pairs checked");
}
