//! A host that dies right after a commit: its request never invalidates,
//! its relay never delivers, and the other hosts must still stop serving
//! the old answer.

use super::{Fleet, details, eventually, install};
use async_trait::async_trait;
use host::db::{Database, Databases, DbError, Invalidation, Rows, Statement, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// The moment of death: the first transaction that records an
/// invalidation and commits.
#[derive(Default)]
struct Death {
    dead: AtomicBool,
    committed: Notify,
}

/// A view of the database that delegates until `Death`, and from then on
/// never answers: its host is dead from that commit on, as a process
/// killed right after it would be, before it could tell anyone.
struct DiesAfterCommit {
    inner: Arc<dyn Database>,
    death: Arc<Death>,
}

impl DiesAfterCommit {
    /// Never returns once the host is dead.
    async fn alive(&self) {
        if self.death.dead.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Database for DiesAfterCommit {
    async fn migrate(&self) -> Result<(), DbError> {
        self.alive().await;
        self.inner.migrate().await
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        self.alive().await;
        self.inner.query(sql, params).await
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        self.alive().await;
        self.inner.execute(sql, params).await
    }

    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError> {
        self.alive().await;
        self.inner.transaction(statements).await
    }

    async fn transaction_invalidating(
        &self,
        statements: &[Statement],
        invalidation: &Invalidation,
    ) -> Result<Vec<Rows>, DbError> {
        self.alive().await;
        let committed = self
            .inner
            .transaction_invalidating(statements, invalidation)
            .await?;
        self.death.dead.store(true, Ordering::SeqCst);
        self.death.committed.notify_one();
        std::future::pending::<()>().await;
        Ok(committed)
    }
}

// A commits an install and dies at once: neither its request nor its relay
// tells Redis, and A does nothing more. B and C, which cached the old
// details in Redis (and their near caches), must stop serving them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_between_commit_and_delivery_leaves_no_old_answer_on_the_others() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let death = Arc::new(Death::default());
    let a = {
        let death = death.clone();
        fleet
            .host_wrapping(move |databases| Databases {
                host: Arc::new(DiesAfterCommit {
                    inner: databases.host,
                    death: death.clone(),
                }),
                components: Arc::new(DiesAfterCommit {
                    inner: databases.components,
                    death,
                }),
            })
            .await
    };
    let b = fleet.host().await;
    let c = fleet.host().await;
    let id = "agent-000015";
    let (_, before) = details(&b.app, id).await;
    assert_eq!(details(&b.app, id).await, ("HIT".into(), before));
    assert_eq!(details(&c.app, id).await, ("HIT".into(), before));

    let writing = tokio::spawn({
        let app = a.app.clone();
        async move { install(&app, id).await }
    });
    death.committed.notified().await;
    writing.abort();
    drop(a);

    for (name, host) in [("B", &b), ("C", &c)] {
        eventually(&format!("host {name} sees the install"), || async {
            details(&host.app, id).await.1 == before + 1
        })
        .await;
    }
}
