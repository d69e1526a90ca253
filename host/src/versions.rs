//! Component versions in the database: the fleet's truth about what
//! serves. `component_versions` holds each kept version's bytes;
//! `component_history` each component's versions in deploy order, the one
//! with the highest `seq` active. A deploy appends (and keeps the newest
//! six), a rollback deletes the newest; both delete the bytes no history
//! row names, and on PostgreSQL notify `COMPONENTS_CHANNEL` in the same
//! transaction. Every host converges on what is active
//! (`Registry::converge`): on the notification, on a periodic reconcile,
//! and at start.
//!
//! **Invariant:** what is recorded here was compiled and type-checked by
//! the host that recorded it (an upload is validated before anything is
//! written), and a change is one transaction: the history never names a
//! version whose bytes are not stored.

use crate::db::{Database, DbError, Statement, Value};
use crate::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The PostgreSQL channel a deploy or rollback notifies, with the
/// component's name: one per schema, since notifications go to the whole
/// database (an SQL expression).
pub const COMPONENTS_CHANNEL: &str = "'marketplace_components:' || current_schema()";
/// How long a listener waits for a notification before it checks that its
/// host is still there.
const LISTEN_TICK: Duration = Duration::from_secs(1);
/// How long a listener waits before it connects again.
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// Longest a listener may take to connect and listen.
const LISTEN_CONNECT: Duration = Duration::from_secs(5);
/// Longest one convergence may take (it may compile a version) before it
/// is given up, to be tried again.
pub const CONVERGE_BOUND: Duration = Duration::from_secs(60);
/// Versions kept per component: the active one and five before it.
pub const KEPT: i64 = 6;

/// One recorded version, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub digest: String,
    pub size: i64,
    pub uploaded_at: i64,
    pub note: String,
    /// Requests one instance may serve, as its upload said.
    pub instance_reuse: Option<u32>,
}

/// A host of the fleet, as its last heartbeat left it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetHost {
    pub id: String,
    pub started_at: i64,
    pub seen_at: i64,
    /// Component name to `{"digest": …, "since": epoch ms}`.
    pub serving: serde_json::Value,
}

/// A component's canary, as recorded: running, or how it ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryRecord {
    pub digest: String,
    /// Percent of requests it is (or was) served.
    pub share: i64,
    pub started_at: i64,
    /// `running`, `promoted`, `aborted` or `superseded`.
    pub state: String,
    /// Why it ended; empty while it runs.
    pub reason: String,
    pub ended_at: Option<i64>,
}

impl CanaryRecord {
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// The record a convergence reads: the active digest and the running
/// canary of every component.
#[derive(Debug, Default)]
pub struct Record {
    pub active: HashMap<String, String>,
    pub canaries: HashMap<String, CanaryRun>,
}

/// One run of a canary: a canary started again, even of the same
/// version, is another run (counted and judged afresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryRun {
    pub digest: String,
    /// Percent of requests, 1 to 99.
    pub share: u8,
    /// When it started (epoch ms): with the digest, names the run.
    pub started_at: i64,
}

/// A version to record: what a host validated.
pub struct Upload<'a> {
    pub digest: &'a str,
    pub bytes: &'a [u8],
    pub note: &'a str,
    /// Requests one instance may serve, if the upload said.
    pub instance_reuse: Option<u32>,
}

/// The versions table and history, through the host's view of the
/// database.
#[derive(Clone)]
pub struct VersionStore {
    db: Arc<dyn Database>,
    /// Whether the database is PostgreSQL: changes then take a lock per
    /// component and notify.
    postgres: bool,
}

const ACTIVE: &str = "SELECT h.component, h.digest FROM component_history h \
     JOIN (SELECT component, MAX(seq) AS seq FROM component_history GROUP BY component) m \
     ON h.component = m.component AND h.seq = m.seq";
const HISTORY: &str = "SELECT v.digest, v.size, v.uploaded_at, v.note, v.instance_reuse FROM component_history h \
     JOIN component_versions v ON v.component = h.component AND v.digest = h.digest \
     WHERE h.component = $1 ORDER BY h.seq";
const BYTES: &str =
    "SELECT bytes, instance_reuse FROM component_versions WHERE component = $1 AND digest = $2";
/// The instance reuse every version that has one was uploaded with.
const REUSE: &str = "SELECT component, digest, instance_reuse FROM component_versions \
     WHERE instance_reuse IS NOT NULL";
const HAS_HISTORY: &str = "SELECT COUNT(*) FROM component_history WHERE component = $1";
/// A version's bytes: stored, or stored again over what was there (the
/// digest names validated bytes, so this repairs a corrupted copy).
const ADD_VERSION: &str = "INSERT INTO component_versions (component, digest, bytes, size, note, uploaded_at, instance_reuse) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (component, digest) DO UPDATE \
     SET bytes = excluded.bytes, size = excluded.size, note = excluded.note, uploaded_at = excluded.uploaded_at, \
     instance_reuse = excluded.instance_reuse";
/// `ADD_VERSION` for a component without history only.
const SEED_VERSION: &str = "INSERT INTO component_versions (component, digest, bytes, size, note, uploaded_at, instance_reuse) \
     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM component_history WHERE component = $8) \
     ON CONFLICT (component, digest) DO NOTHING";
/// The first history row of a component without history only.
const SEED: &str = "INSERT INTO component_history (component, seq, digest) \
     SELECT $1, 1, $2 WHERE NOT EXISTS (SELECT 1 FROM component_history WHERE component = $3)";
const IMPORT: &str = "INSERT INTO component_history (component, seq, digest) VALUES ($1, $2, $3)";
/// The history names each digest once: a version deployed (or activated)
/// again moves to the top rather than pushing the others out.
const UNLIST: &str = "DELETE FROM component_history WHERE component = $1 AND digest = $2";
/// A new active row, if the version's bytes are kept (`RETURNING` says).
const PUSH: &str = "INSERT INTO component_history (component, seq, digest) \
     SELECT $1, COALESCE(MAX(seq), 0) + 1, $2 FROM component_history WHERE component = $3 \
     HAVING EXISTS (SELECT 1 FROM component_versions WHERE component = $4 AND digest = $5) \
     RETURNING digest";
/// Serializes the changes of one component on PostgreSQL, for the rest
/// of the transaction (SQLite serializes every writing transaction).
const LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || $1, 0))";
const NEWEST: &str =
    "SELECT digest FROM component_history WHERE component = $1 ORDER BY seq DESC LIMIT 1";
const TRIM: &str = "DELETE FROM component_history WHERE component = $1 AND seq NOT IN \
     (SELECT seq FROM component_history WHERE component = $2 ORDER BY seq DESC LIMIT $3)";
const POP: &str = "DELETE FROM component_history WHERE component = $1 \
     AND seq = (SELECT MAX(seq) FROM component_history WHERE component = $2) \
     AND (SELECT COUNT(*) FROM component_history WHERE component = $3) > 1 RETURNING digest";
/// Bytes neither a history row nor a running canary names.
const COLLECT: &str = "DELETE FROM component_versions WHERE component = $1 \
     AND digest NOT IN (SELECT digest FROM component_history WHERE component = $2) \
     AND digest NOT IN (SELECT digest FROM component_canary WHERE component = $3 AND state = 'running')";
/// A running canary, replacing whatever canary row there was, unless its
/// version is the active one (`RETURNING` says).
const START_CANARY: &str = "INSERT INTO component_canary (component, digest, share, started_at, state, reason, ended_at) \
     SELECT $1, $2, $3, $4, 'running', '', NULL \
     WHERE COALESCE((SELECT digest FROM component_history WHERE component = $5 ORDER BY seq DESC LIMIT 1), '') <> $6 \
     ON CONFLICT (component) DO UPDATE SET digest = excluded.digest, share = excluded.share, \
     started_at = excluded.started_at, state = 'running', reason = '', ended_at = NULL \
     RETURNING digest";
/// Ends the running canary (only the run of that digest and start, if
/// one is given: `$5` not empty), if the guard that follows holds.
const END_CANARY: &str = "UPDATE component_canary SET state = $1, reason = $2, ended_at = $3 \
     WHERE component = $4 AND state = 'running' AND ($5 = '' OR (digest = $6 AND started_at = $7))";
/// `END_CANARY`'s guard: none.
const ALWAYS: &str = "";
/// `END_CANARY`'s guard, before the change: `$9` is not the active
/// version (`$8` the component), so making it active changes something.
const IF_NOT_ACTIVE: &str = " AND COALESCE((SELECT digest FROM component_history \
     WHERE component = $8 ORDER BY seq DESC LIMIT 1), '') <> $9";
/// `IF_NOT_ACTIVE`, and `$11`'s bytes are kept (`$10` the component), so
/// an activation of it is recorded.
const IF_ACTIVATES: &str = " AND COALESCE((SELECT digest FROM component_history \
     WHERE component = $8 ORDER BY seq DESC LIMIT 1), '') <> $9 \
     AND EXISTS (SELECT 1 FROM component_versions WHERE component = $10 AND digest = $11)";
/// `END_CANARY`'s guard: the history holds a version to roll back to
/// (`POP`'s own condition).
const IF_POPPABLE: &str = " AND (SELECT COUNT(*) FROM component_history WHERE component = $8) > 1";
/// `UNLIST`, if `digest` is the running canary.
const UNLIST_CANARY: &str = "DELETE FROM component_history WHERE component = $1 AND digest = $2 \
     AND EXISTS (SELECT 1 FROM component_canary WHERE component = $3 AND digest = $4 AND state = 'running')";
/// `PUSH`, if `digest` is the running canary.
const PUSH_CANARY: &str = "INSERT INTO component_history (component, seq, digest) \
     SELECT $1, COALESCE(MAX(seq), 0) + 1, $2 FROM component_history WHERE component = $3 \
     HAVING EXISTS (SELECT 1 FROM component_canary WHERE component = $4 AND digest = $5 AND state = 'running') \
     RETURNING digest";
/// The active version (share -1) and the running canary of every
/// component, in one statement: one snapshot of the record.
const RECORD: &str = "SELECT h.component, h.digest, CAST(-1 AS BIGINT), CAST(0 AS BIGINT) \
     FROM component_history h \
     JOIN (SELECT component, MAX(seq) AS seq FROM component_history GROUP BY component) m \
     ON h.component = m.component AND h.seq = m.seq \
     UNION ALL SELECT component, digest, share, started_at FROM component_canary WHERE state = 'running'";
const CANARY: &str = "SELECT digest, share, started_at, state, reason, ended_at \
     FROM component_canary WHERE component = $1";
const CANARIES: &str = "SELECT component, digest, share, started_at, state, reason, ended_at \
     FROM component_canary";
const HEARTBEAT: &str = "INSERT INTO fleet_hosts (id, started_at, seen_at, serving) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, serving = excluded.serving";
const FORGET: &str = "DELETE FROM fleet_hosts WHERE seen_at < $1";
const HOSTS: &str =
    "SELECT id, started_at, seen_at, serving FROM fleet_hosts WHERE seen_at >= $1 ORDER BY id";
/// Hosts not heard of for this long are deleted.
const FORGET_AFTER_MS: i64 = 3_600_000;
const NOTIFY: &str = "SELECT pg_notify('marketplace_components:' || current_schema(), $1)";

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// A recorded instance reuse: a whole number that fits, else none.
fn reuse_of(value: Option<&Value>) -> Option<u32> {
    match value {
        Some(Value::Int(n)) => u32::try_from(*n).ok(),
        _ => None,
    }
}

impl VersionStore {
    /// The store in `db`, PostgreSQL or not.
    pub fn new(db: Arc<dyn Database>, postgres: bool) -> Self {
        Self { db, postgres }
    }

    /// The statements a change of `component` starts with.
    fn begin(&self, component: &str) -> Vec<Statement> {
        if self.postgres {
            vec![Statement {
                sql: LOCK.into(),
                params: vec![text(component)],
            }]
        } else {
            Vec::new()
        }
    }

    /// The active digest of every component ever deployed.
    pub async fn active(&self) -> Result<HashMap<String, String>, DbError> {
        let rows = self.db.query(ACTIVE, &[]).await?;
        Ok(rows
            .rows
            .into_iter()
            .filter_map(|row| match (row.first(), row.get(1)) {
                (Some(Value::Text(c)), Some(Value::Text(d))) => Some((c.clone(), d.clone())),
                _ => None,
            })
            .collect())
    }

    /// The recorded versions of `component`, oldest first, the last active.
    pub async fn history(&self, component: &str) -> Result<Vec<Recorded>, DbError> {
        let rows = self.db.query(HISTORY, &[text(component)]).await?;
        Ok(rows
            .rows
            .into_iter()
            .filter_map(
                |row| match (row.first(), row.get(1), row.get(2), row.get(3)) {
                    (
                        Some(Value::Text(digest)),
                        Some(Value::Int(size)),
                        Some(Value::Int(uploaded_at)),
                        Some(Value::Text(note)),
                    ) => Some(Recorded {
                        digest: digest.clone(),
                        size: *size,
                        uploaded_at: *uploaded_at,
                        note: note.clone(),
                        instance_reuse: reuse_of(row.get(4)),
                    }),
                    _ => None,
                },
            )
            .collect())
    }

    /// The bytes of `component` at `digest`, if kept, and the instance
    /// reuse it was uploaded with.
    pub async fn bytes(
        &self,
        component: &str,
        digest: &str,
    ) -> Result<Option<(Vec<u8>, Option<u32>)>, DbError> {
        let rows = self
            .db
            .query(BYTES, &[text(component), text(digest)])
            .await?;
        Ok(rows.rows.into_iter().next().and_then(|row| {
            let reuse = reuse_of(row.get(1));
            match row.into_iter().next() {
                Some(Value::Bytes(b)) => Some((b, reuse)),
                _ => None,
            }
        }))
    }

    /// The instance reuse of every version uploaded with one, by
    /// (component, digest).
    pub async fn instance_reuse(&self) -> Result<HashMap<(String, String), u32>, DbError> {
        let rows = self.db.query(REUSE, &[]).await?;
        Ok(rows
            .rows
            .into_iter()
            .filter_map(
                |row| match (row.first(), row.get(1), reuse_of(row.get(2))) {
                    (Some(Value::Text(c)), Some(Value::Text(d)), Some(n)) => {
                        Some(((c.clone(), d.clone()), n))
                    }
                    _ => None,
                },
            )
            .collect())
    }

    /// Whether `component` has a recorded history.
    async fn has_history(&self, component: &str) -> Result<bool, DbError> {
        let rows = self.db.query(HAS_HISTORY, &[text(component)]).await?;
        Ok(!matches!(
            rows.rows.first().and_then(|r| r.first()),
            Some(Value::Int(0)) | None
        ))
    }

    fn add_version(component: &str, version: &Upload<'_>) -> Statement {
        Statement {
            sql: ADD_VERSION.into(),
            params: vec![
                text(component),
                text(version.digest),
                Value::Bytes(version.bytes.to_vec()),
                Value::Int(version.bytes.len() as i64),
                text(version.note),
                Value::Int(crate::now_ms()),
                version
                    .instance_reuse
                    .map_or(Value::Null, |n| Value::Int(i64::from(n))),
            ],
        }
    }

    /// The statements that make `digest` the newest row of the history.
    fn push(component: &str, digest: &str) -> [Statement; 2] {
        [
            Statement {
                sql: UNLIST.into(),
                params: vec![text(component), text(digest)],
            },
            Statement {
                sql: PUSH.into(),
                params: vec![
                    text(component),
                    text(digest),
                    text(component),
                    text(component),
                    text(digest),
                ],
            },
        ]
    }

    /// The statement that ends the running canary of `component` (only
    /// if it is the run `run`, when one is given) as `state`, for
    /// `reason`, if `guard` (`ALWAYS`, `IF_NOT_ACTIVE`, `IF_ACTIVATES` or
    /// `IF_POPPABLE`, with its parameters) holds; it returns the digest it
    /// ended.
    fn end_canary(
        component: &str,
        run: Option<&CanaryRun>,
        (state, reason): (&str, &str),
        (guard, guard_params): (&str, Vec<Value>),
    ) -> Statement {
        let (digest, started_at) = run.map_or(("", 0), |r| (r.digest.as_str(), r.started_at));
        let mut params = vec![
            text(state),
            text(reason),
            Value::Int(crate::now_ms()),
            text(component),
            text(digest),
            text(digest),
            Value::Int(started_at),
        ];
        params.extend(guard_params);
        Statement {
            sql: format!("{END_CANARY}{guard} RETURNING digest"),
            params,
        }
    }

    /// The statement that keeps the `KEPT` newest history rows.
    fn trim(component: &str) -> Statement {
        Statement {
            sql: TRIM.into(),
            params: vec![text(component), text(component), Value::Int(KEPT)],
        }
    }

    fn collect_and_notify(&self, component: &str, statements: &mut Vec<Statement>) {
        statements.push(Statement {
            sql: COLLECT.into(),
            params: vec![text(component), text(component), text(component)],
        });
        if self.postgres {
            statements.push(Statement {
                sql: NOTIFY.into(),
                params: vec![text(component)],
            });
        }
    }

    /// For a component never deployed before, the statements that record
    /// `serving` (what its hosts serve, the manifest's file) as its first
    /// version, so that a rollback returns to it.
    async fn seed(
        &self,
        component: &str,
        serving: &Upload<'_>,
        statements: &mut Vec<Statement>,
    ) -> Result<(), DbError> {
        // Once a history exists it is never empty again, so the seed is
        // needed only while there is none (and checked again in the
        // transaction, under the lock).
        if !self.has_history(component).await? {
            let mut seed = Self::add_version(component, serving);
            seed.sql = SEED_VERSION.into();
            seed.params.push(text(component));
            statements.push(seed);
            statements.push(Statement {
                sql: SEED.into(),
                params: vec![text(component), text(serving.digest), text(component)],
            });
        }
        Ok(())
    }

    /// Records `version` as the active version of `component`. A component
    /// never deployed before first records `serving` (what its hosts
    /// serve, the manifest's file), so that a rollback returns to it.
    pub async fn deploy(
        &self,
        component: &str,
        serving: Upload<'_>,
        version: Upload<'_>,
    ) -> Result<(), DbError> {
        let mut statements = self.begin(component);
        self.seed(component, &serving, &mut statements).await?;
        statements.push(Self::add_version(component, &version));
        // Before the push: only a deploy that changes the active version
        // ends a canary.
        statements.push(Self::end_canary(
            component,
            None,
            ("superseded", "a deploy changed the active version"),
            (IF_NOT_ACTIVE, vec![text(component), text(version.digest)]),
        ));
        statements.extend(Self::push(component, version.digest));
        statements.push(Self::trim(component));
        self.collect_and_notify(component, &mut statements);
        self.db.transaction(&statements).await.map(drop)
    }

    /// Records `version` as the canary of `component`, served to `share`
    /// percent of requests beside the active version (replacing a running
    /// canary), and returns the run; `None` if it is the active version
    /// (nothing changed). A component never deployed before first records
    /// `serving`, as `deploy` does.
    pub async fn canary(
        &self,
        component: &str,
        serving: Upload<'_>,
        version: Upload<'_>,
        share: u8,
    ) -> Result<Option<CanaryRun>, DbError> {
        // Checked first, so that a refusal writes nothing, and again in
        // the transaction, under the lock.
        let active = self.active().await?;
        let active_digest = active.get(component).map_or(serving.digest, String::as_str);
        if active_digest == version.digest {
            return Ok(None);
        }
        let started_at = crate::now_ms();
        let mut statements = self.begin(component);
        self.seed(component, &serving, &mut statements).await?;
        statements.push(Self::add_version(component, &version));
        let started = statements.len();
        statements.push(Statement {
            sql: START_CANARY.into(),
            params: vec![
                text(component),
                text(version.digest),
                Value::Int(i64::from(share)),
                Value::Int(started_at),
                text(component),
                text(version.digest),
            ],
        });
        self.collect_and_notify(component, &mut statements);
        let results = self.db.transaction(&statements).await?;
        Ok(results
            .get(started)
            .is_some_and(|rows| !rows.rows.is_empty())
            .then(|| CanaryRun {
                digest: version.digest.to_string(),
                share,
                started_at,
            }))
    }

    /// Makes the running canary of `component` its active version, and
    /// returns its digest; `None` if none runs (nothing changed).
    pub async fn promote(&self, component: &str) -> Result<Option<String>, DbError> {
        let Some(canary) = self.canary_of(component).await?.filter(|c| c.running()) else {
            return Ok(None);
        };
        let run = CanaryRun {
            digest: canary.digest.clone(),
            share: u8::try_from(canary.share).unwrap_or(0),
            started_at: canary.started_at,
        };
        let digest = canary.digest.as_str();
        // Each statement checks, under the lock, that `digest` is still
        // the running canary: one that ended meanwhile is not promoted.
        let mut statements = self.begin(component);
        statements.push(Statement {
            sql: UNLIST_CANARY.into(),
            params: vec![text(component), text(digest), text(component), text(digest)],
        });
        let pushed = statements.len();
        statements.push(Statement {
            sql: PUSH_CANARY.into(),
            params: vec![
                text(component),
                text(digest),
                text(component),
                text(component),
                text(digest),
            ],
        });
        statements.push(Self::end_canary(
            component,
            Some(&run),
            ("promoted", "promoted to the active version"),
            (ALWAYS, Vec::new()),
        ));
        statements.push(Self::trim(component));
        self.collect_and_notify(component, &mut statements);
        let results = self.db.transaction(&statements).await?;
        Ok(results
            .get(pushed)
            .is_some_and(|rows| !rows.rows.is_empty())
            .then(|| digest.to_string()))
    }

    /// Ends the running canary of `component` (only if it is the run
    /// `run`, when one is given) as aborted, for `reason`; its share
    /// returns to the active version. The digest aborted, or `None` if
    /// none ran.
    pub async fn abort(
        &self,
        component: &str,
        run: Option<&CanaryRun>,
        reason: &str,
    ) -> Result<Option<String>, DbError> {
        let mut statements = self.begin(component);
        let ended = statements.len();
        statements.push(Self::end_canary(
            component,
            run,
            ("aborted", reason),
            (ALWAYS, Vec::new()),
        ));
        self.collect_and_notify(component, &mut statements);
        let results = self.db.transaction(&statements).await?;
        Ok(results
            .get(ended)
            .and_then(|rows| rows.rows.first())
            .and_then(|row| match row.first() {
                Some(Value::Text(digest)) => Some(digest.clone()),
                _ => None,
            }))
    }

    /// The active digest and the running canary of every component, as
    /// one snapshot, in one statement (what a convergence reads: a
    /// promote is seen whole or not at all).
    pub async fn record(&self) -> Result<Record, DbError> {
        let rows = self.db.query(RECORD, &[]).await?;
        let (active, canaries): (Vec<_>, Vec<_>) = rows
            .rows
            .into_iter()
            .partition(|row| matches!(row.get(2), Some(Value::Int(-1))));
        Ok(Record {
            active: Self::canary_runs(active)
                .map(|(c, run)| (c, run.digest))
                .collect(),
            canaries: Self::canary_runs(canaries).collect(),
        })
    }

    /// Rows of (component, digest, share, started_at) as canary runs (an
    /// active row's share, -1, as 0).
    fn canary_runs(rows: Vec<Vec<Value>>) -> impl Iterator<Item = (String, CanaryRun)> {
        rows.into_iter().filter_map(|row| {
            let mut row = row.into_iter();
            match (row.next(), row.next(), row.next(), row.next()) {
                (
                    Some(Value::Text(component)),
                    Some(Value::Text(digest)),
                    Some(Value::Int(share)),
                    Some(Value::Int(started_at)),
                ) => Some((
                    component,
                    CanaryRun {
                        digest,
                        share: u8::try_from(share).unwrap_or(0),
                        started_at,
                    },
                )),
                _ => None,
            }
        })
    }

    /// The canary record of `component`: running, or how the last one
    /// ended; `None` if it never had one.
    pub async fn canary_of(&self, component: &str) -> Result<Option<CanaryRecord>, DbError> {
        let rows = self.db.query(CANARY, &[text(component)]).await?;
        Ok(rows
            .rows
            .into_iter()
            .next()
            .and_then(|row| Self::canary_record(row.into_iter())))
    }

    /// `canary_of` every component that ever had a canary, in one query.
    pub async fn canary_records(&self) -> Result<HashMap<String, CanaryRecord>, DbError> {
        let rows = self.db.query(CANARIES, &[]).await?;
        Ok(rows
            .rows
            .into_iter()
            .filter_map(|row| {
                let mut row = row.into_iter();
                match row.next() {
                    Some(Value::Text(component)) => Some((component, Self::canary_record(row)?)),
                    _ => None,
                }
            })
            .collect())
    }

    /// A row of `CANARY`'s columns as a record.
    fn canary_record(mut row: impl Iterator<Item = Value>) -> Option<CanaryRecord> {
        match (
            row.next(),
            row.next(),
            row.next(),
            row.next(),
            row.next(),
            row.next(),
        ) {
            (
                Some(Value::Text(digest)),
                Some(Value::Int(share)),
                Some(Value::Int(started_at)),
                Some(Value::Text(state)),
                Some(Value::Text(reason)),
                Some(ended_at),
            ) => Some(CanaryRecord {
                digest,
                share,
                started_at,
                state,
                reason,
                ended_at: match ended_at {
                    Value::Int(at) => Some(at),
                    _ => None,
                },
            }),
            _ => None,
        }
    }

    /// Makes the version before the active one of `component` active
    /// again, and returns it; `None` if there is none (nothing changed).
    pub async fn rollback(&self, component: &str) -> Result<Option<String>, DbError> {
        let mut statements = self.begin(component);
        // Before the pop, under the same condition as it.
        statements.push(Self::end_canary(
            component,
            None,
            ("superseded", "a rollback changed the active version"),
            (IF_POPPABLE, vec![text(component)]),
        ));
        let popped = statements.len();
        statements.push(Statement {
            sql: POP.into(),
            params: vec![text(component), text(component), text(component)],
        });
        self.collect_and_notify(component, &mut statements);
        statements.push(Statement {
            sql: NEWEST.into(),
            params: vec![text(component)],
        });
        let results = self.db.transaction(&statements).await?;
        if results.get(popped).is_none_or(|rows| rows.rows.is_empty()) {
            return Ok(None);
        }
        Ok(results
            .last()
            .and_then(|rows| rows.rows.first())
            .and_then(|row| match row.first() {
                Some(Value::Text(digest)) => Some(digest.clone()),
                _ => None,
            }))
    }

    /// Makes the kept version `digest` of `component` active again (a
    /// deploy of bytes already recorded); `false` if no such version is
    /// kept.
    pub async fn activate(&self, component: &str, digest: &str) -> Result<bool, DbError> {
        // Checked in the transaction, under the lock: the push names the
        // version only if its bytes are kept, whatever ran meanwhile.
        let mut statements = self.begin(component);
        // Before the push: only an activation that changes the active
        // version ends a canary.
        statements.push(Self::end_canary(
            component,
            None,
            ("superseded", "an activation changed the active version"),
            (
                IF_ACTIVATES,
                vec![text(component), text(digest), text(component), text(digest)],
            ),
        ));
        statements.extend(Self::push(component, digest));
        let pushed = statements.len() - 1;
        statements.push(Self::trim(component));
        self.collect_and_notify(component, &mut statements);
        let results = self.db.transaction(&statements).await?;
        Ok(results
            .get(pushed)
            .is_some_and(|rows| !rows.rows.is_empty()))
    }

    /// Writes this host's heartbeat, and, if `forget`, deletes the rows
    /// of hosts gone for an hour.
    pub async fn heartbeat(
        &self,
        id: &str,
        started_at: i64,
        serving: &serde_json::Value,
        forget: bool,
    ) -> Result<(), DbError> {
        let now = crate::now_ms();
        self.db
            .execute(
                HEARTBEAT,
                &[
                    text(id),
                    Value::Int(started_at),
                    Value::Int(now),
                    Value::Text(serving.to_string()),
                ],
            )
            .await?;
        if forget {
            self.db
                .execute(FORGET, &[Value::Int(now - FORGET_AFTER_MS)])
                .await?;
        }
        Ok(())
    }

    /// The hosts heard of since `since` (epoch milliseconds).
    pub async fn hosts(&self, since: i64) -> Result<Vec<FleetHost>, DbError> {
        let rows = self.db.query(HOSTS, &[Value::Int(since)]).await?;
        Ok(rows
            .rows
            .into_iter()
            .filter_map(
                |row| match (row.first(), row.get(1), row.get(2), row.get(3)) {
                    (
                        Some(Value::Text(id)),
                        Some(Value::Int(started_at)),
                        Some(Value::Int(seen_at)),
                        Some(Value::Text(serving)),
                    ) => Some(FleetHost {
                        id: id.clone(),
                        started_at: *started_at,
                        seen_at: *seen_at,
                        serving: serde_json::from_str(serving).unwrap_or_default(),
                    }),
                    _ => None,
                },
            )
            .collect())
    }

    /// Records `versions` (oldest first, the last active) as the history of
    /// `component` if it has none: the one-time import of a host's local
    /// deployments. `false` if it had one (another host imported first).
    pub async fn import(&self, component: &str, versions: &[Upload<'_>]) -> Result<bool, DbError> {
        if versions.is_empty() || self.has_history(component).await? {
            return Ok(false);
        }
        // Another host importing or deploying meanwhile: its first
        // history row (seq 1) and this one's collide on the primary key,
        // so one history stands whole.
        // Each digest once, where it last appears.
        let versions: Vec<&Upload<'_>> = versions
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                !versions[i + 1..]
                    .iter()
                    .any(|later| later.digest == v.digest)
            })
            .map(|(_, v)| v)
            .collect();
        let mut statements = self.begin(component);
        for (seq, version) in (1..).zip(versions) {
            statements.push(Self::add_version(component, version));
            statements.push(Statement {
                sql: IMPORT.into(),
                params: vec![text(component), Value::Int(seq), text(version.digest)],
            });
        }
        statements.push(Self::trim(component));
        self.collect_and_notify(component, &mut statements);
        match self.db.transaction(&statements).await {
            Ok(_) => Ok(true),
            // Another host imported at the same time: its history stands.
            Err(DbError::Constraint(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Listens on PostgreSQL for deploys and rollbacks and converges
/// `registry` on each, and after each (re)connection, since notifications
/// may have been missed meanwhile; ends when the registry is dropped.
pub fn listen(database_url: String, registry: &Arc<Registry>) {
    let registry = Arc::downgrade(registry);
    tokio::spawn(async move {
        loop {
            match listen_once(&database_url, &registry).await {
                Ok(()) => return,
                Err(e) => {
                    if registry.strong_count() == 0 {
                        return;
                    }
                    tracing::debug!(error = %e, "deploy listener: no connection; retrying");
                    tokio::time::sleep(LISTEN_RETRY).await;
                }
            }
        }
    });
}

/// One listening connection: `Ok` when the registry is gone, `Err` when
/// the connection is (or could not be made).
async fn listen_once(database_url: &str, registry: &Weak<Registry>) -> Result<(), sqlx::Error> {
    let timed_out = || sqlx::Error::Io(std::io::ErrorKind::TimedOut.into());
    let connect = async {
        let mut listener = sqlx::postgres::PgListener::connect(database_url).await?;
        let channel: String = sqlx::query_scalar(&format!("SELECT {COMPONENTS_CHANNEL}"))
            .fetch_one(&mut listener)
            .await?;
        listener.listen(&channel).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    let mut listener = tokio::time::timeout(LISTEN_CONNECT, connect)
        .await
        .map_err(|_| timed_out())??;
    // Listening now: what was missed before is read once (a missed deploy
    // may have stored repaired bytes, so versions that did not load are
    // tried again), then each notification converges again.
    if let Some(live) = registry.upgrade() {
        live.forget_unloadable();
    }
    let mut heard = true;
    loop {
        if heard {
            let Some(live) = registry.upgrade() else {
                return Ok(());
            };
            live.converge_within(CONVERGE_BOUND).await;
        }
        match tokio::time::timeout(LISTEN_TICK, listener.try_recv()).await {
            Ok(Ok(Some(_))) => {
                heard = true;
                if let Some(live) = registry.upgrade() {
                    live.forget_unloadable();
                }
            }
            // The connection was lost: connect (and read) again.
            Ok(Ok(None)) => {
                return Err(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                if registry.strong_count() == 0 {
                    return Ok(());
                }
                heard = false;
            }
        }
    }
}

/// Writes `registry`'s heartbeat as host `id` every `every`, until the
/// registry is dropped.
pub fn spawn_heartbeat(registry: &Arc<Registry>, id: String, every: Duration) {
    let weak = Arc::downgrade(registry);
    let started_at = crate::now_ms();
    tokio::spawn(async move {
        for beat in 0u64.. {
            let Some(registry) = weak.upgrade() else {
                return;
            };
            if let Some(fleet) = registry.fleet() {
                let serving = registry.serving();
                // Gone hosts are forgotten now and then, not every beat.
                let beat = fleet.heartbeat(&id, started_at, &serving, beat % 30 == 0);
                match tokio::time::timeout(every.max(Duration::from_secs(1)), beat).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat not written"),
                    Err(_) => tracing::debug!("heartbeat not written in time"),
                }
            }
            drop(registry);
            tokio::time::sleep(every).await;
        }
    });
}
