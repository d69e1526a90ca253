//! The SQLite authorizer that component connections run under: SQLite's own
//! check of every statement as it is prepared (`sqlite3_set_authorizer`),
//! the second defence behind `guard`.
//!
//! A component statement may read and write the tables in
//! `COMPONENT_TABLES` of the main database, read the key columns their
//! foreign keys reference (`REFERENCED_KEYS`), call ordinary functions, and
//! nothing else: no other table (API tokens, members, the schema), no
//! `ATTACH`, `PRAGMA`, DDL or transaction control. The host's own
//! transaction around a component's `transaction` call uses a savepoint
//! whose name is a per-process secret, the only transaction control the
//! authorizer lets through.
//!
//! Component connections also get `SQLITE_DBCONFIG_DEFENSIVE` (no writes to
//! the schema, even by a bug elsewhere), a limit of zero attached
//! databases, and a longest string or blob of the result byte cap.

use super::{COMPONENT_TABLES, OUTBOX_TABLE};
use libsqlite3_sys as ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::hash::{BuildHasher, Hasher};
use std::ptr::NonNull;
use std::sync::OnceLock;

/// Key columns of the host's tables that the product's tables reference.
/// SQLite asks the authorizer to read them when it enforces a foreign key
/// (an installation's workspace and user, a template's author), and denying
/// that read would fail the write; reading them reveals ids and nothing
/// else. PostgreSQL checks foreign keys as the tables' owner and needs no
/// such grant.
const REFERENCED_KEYS: &[(&str, &str)] = &[("users", "id"), ("workspaces", "id")];

/// Functions a component statement may not call on SQLite.
const REFUSED_FUNCTIONS: &[&str] = &["load_extension", "readfile", "writefile", "edit"];

/// The name of the host's savepoint on component connections: random per
/// process, so no component can name it.
pub(super) fn savepoint() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        // RandomState is seeded from the OS's randomness, per process.
        let a = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let b = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        format!("host_{a:016x}{b:016x}")
    })
}

/// Puts a component connection under the authorizer and its limits.
///
/// # Safety
/// `db` must be a live connection handle that no other thread uses during
/// the call (sqlx's `lock_handle` guarantees both).
pub(super) unsafe fn install(db: NonNull<ffi::sqlite3>, max_length: c_int) {
    let db = db.as_ptr();
    // SAFETY: `db` is live and exclusively ours (the caller's contract);
    // the callback is a plain function with no user data to outlive.
    unsafe {
        ffi::sqlite3_set_authorizer(db, Some(authorize), std::ptr::null_mut());
        ffi::sqlite3_db_config(
            db,
            ffi::SQLITE_DBCONFIG_DEFENSIVE,
            1 as c_int,
            std::ptr::null_mut::<c_int>(),
        );
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, 0);
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_LENGTH, max_length);
    }
}

/// Whether the connection is inside a transaction (SQLite leaves autocommit
/// mode while one is open).
///
/// # Safety
/// As for `install`.
pub(super) unsafe fn in_transaction(db: NonNull<ffi::sqlite3>) -> bool {
    // SAFETY: the caller's contract.
    unsafe { ffi::sqlite3_get_autocommit(db.as_ptr()) == 0 }
}

/// SQLite's argument as text; absent or not UTF-8 reads as empty.
///
/// # Safety
/// `p` is null or a NUL-terminated string alive for the call.
unsafe fn text<'a>(p: *const c_char) -> &'a str {
    if p.is_null() {
        return "";
    }
    // SAFETY: non-null and NUL-terminated, per SQLite's authorizer contract.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

/// The authorizer callback: `SQLITE_OK` for what a component may do,
/// `SQLITE_DENY` (the statement fails to prepare, "not authorized") for the
/// rest.
unsafe extern "C" fn authorize(
    _user: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    database: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    // SAFETY: SQLite passes null or valid strings for the call's duration.
    let (arg1, arg2, database) = unsafe { (text(arg1), text(arg2), text(database)) };
    // The main database; SQLite names none when it reads a table for
    // `COUNT(*)`. Attached databases are refused, and `temp` is not main.
    let main = database == "main" || database.is_empty();
    let product_table = |table: &str| {
        main && COMPONENT_TABLES
            .iter()
            .any(|t| t.eq_ignore_ascii_case(table))
    };
    let allowed = match action {
        ffi::SQLITE_SELECT | ffi::SQLITE_RECURSIVE => true,
        ffi::SQLITE_READ => {
            product_table(arg1)
                || (main
                    && REFERENCED_KEYS.iter().any(|(table, column)| {
                        table.eq_ignore_ascii_case(arg1) && column.eq_ignore_ascii_case(arg2)
                    }))
        }
        ffi::SQLITE_UPDATE | ffi::SQLITE_DELETE => product_table(arg1),
        // The host records a component transaction's invalidation on the
        // same connection, in the same savepoint. Components cannot: `guard`
        // refuses SQL naming the outbox, and nothing here lets them read it.
        ffi::SQLITE_INSERT => {
            product_table(arg1) || (main && arg1.eq_ignore_ascii_case(OUTBOX_TABLE))
        }
        ffi::SQLITE_FUNCTION => !REFUSED_FUNCTIONS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(arg2)),
        ffi::SQLITE_SAVEPOINT => arg2 == savepoint(),
        // Transactions, PRAGMA, ATTACH/DETACH, every CREATE/DROP/ALTER,
        // REINDEX, ANALYZE, virtual tables: never.
        _ => false,
    };
    if allowed {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_DENY
    }
}
