//! Authentication: a bearer token becomes a principal (user and workspace
//! memberships). Tokens are stored as their hex SHA-256, never in clear.
//! The host authenticates; components authorize.

use crate::db::{Database, DbError, Statement, Value};
use crate::request::Principal;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of a bearer token, as stored in `api_tokens.token_hash`.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a request could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("unknown or revoked token")]
    UnknownToken,
    #[error(transparent)]
    Database(#[from] DbError),
}

/// The token in an `Authorization` header value (`Bearer <token>`, scheme
/// case-insensitive).
pub fn bearer_token(header: &[u8]) -> Result<&str, AuthError> {
    let value = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// The principal `token` stands for, in one query: the token's user and
/// that user's workspaces (none: a row with a null workspace).
pub async fn principal(db: &dyn Database, token: &str) -> Result<Principal, AuthError> {
    let rows = db
        .query(
            "SELECT t.user_id, m.workspace_id FROM api_tokens t \
             LEFT JOIN workspace_members m ON m.user_id = t.user_id \
             WHERE t.token_hash = $1 ORDER BY m.workspace_id",
            &[Value::Text(token_hash(token))],
        )
        .await?;
    let user_id = match rows.rows.first().and_then(|r| r.first()) {
        Some(Value::Text(user)) => user.clone(),
        _ => return Err(AuthError::UnknownToken),
    };
    let workspace_ids = rows
        .rows
        .into_iter()
        .filter_map(|r| match r.into_iter().nth(1) {
            Some(Value::Text(ws)) => Some(ws),
            _ => None,
        })
        .collect();
    Ok(Principal {
        user_id,
        workspace_ids,
    })
}

/// A new bearer token: 256 random bits, in hex.
pub fn new_token() -> Result<String, DbError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| DbError::Other(format!("no randomness for a token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates a token for `user` (created if new, with `email`), making the
/// user a member of `workspace` (created if new) when one is given, all in
/// one transaction. Returns the token, which is stored only as its hash:
/// it cannot be shown again.
pub async fn create_token(
    db: &dyn Database,
    user: &str,
    email: &str,
    workspace: Option<&str>,
    label: &str,
    now_ms: i64,
) -> Result<String, DbError> {
    let token = new_token()?;
    let text = |s: &str| Value::Text(s.to_string());
    let mut statements = vec![Statement {
        sql: "INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $1, $3) \
              ON CONFLICT (id) DO NOTHING"
            .into(),
        params: vec![text(user), text(email), Value::Int(now_ms)],
    }];
    if let Some(ws) = workspace {
        statements.push(Statement {
            sql: "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $1, $2) \
                  ON CONFLICT (id) DO NOTHING"
                .into(),
            params: vec![text(ws), Value::Int(now_ms)],
        });
        statements.push(Statement {
            sql: "INSERT INTO workspace_members (workspace_id, user_id, role) \
                  VALUES ($1, $2, 'owner') ON CONFLICT (workspace_id, user_id) DO NOTHING"
                .into(),
            params: vec![text(ws), text(user)],
        });
    }
    statements.push(Statement {
        sql: "INSERT INTO api_tokens (token_hash, user_id, name, created_at) \
              VALUES ($1, $2, $3, $4)"
            .into(),
        params: vec![
            text(&token_hash(&token)),
            text(user),
            text(label),
            Value::Int(now_ms),
        ],
    });
    db.transaction(&statements).await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_scheme_with_a_token_is_accepted() {
        assert_eq!(bearer_token(b"Bearer abc").unwrap(), "abc");
        assert_eq!(bearer_token(b"bearer   abc ").unwrap(), "abc");
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer  ",
            b"abc",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(bearer_token(bad), Err(AuthError::Malformed)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_token_hash_is_hex_sha256() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
