//! Authentication: a bearer token becomes a principal (user and workspace
//! memberships). Tokens are stored as their hex SHA-256, never in clear.
//! The host authenticates; components authorize.

use crate::db::{Database, DbError, Value};
use crate::runtime::Principal;
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

/// The principal `token` stands for.
pub async fn principal(db: &dyn Database, token: &str) -> Result<Principal, AuthError> {
    let rows = db
        .query(
            "SELECT user_id FROM api_tokens WHERE token_hash = $1",
            &[Value::Text(token_hash(token))],
        )
        .await?;
    let user_id = match rows.rows.first().and_then(|r| r.first()) {
        Some(Value::Text(user)) => user.clone(),
        _ => return Err(AuthError::UnknownToken),
    };
    let memberships = db
        .query(
            "SELECT workspace_id FROM workspace_members WHERE user_id = $1 ORDER BY workspace_id",
            &[Value::Text(user_id.clone())],
        )
        .await?;
    let workspace_ids = memberships
        .rows
        .into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(Value::Text(ws)) => Some(ws),
            _ => None,
        })
        .collect();
    Ok(Principal {
        user_id,
        workspace_ids,
    })
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
