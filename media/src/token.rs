//! Join tokens: the node API issues one per participant and room; the signaling checks it.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, claims JSON))`. The
//! secret is random per node process, so a token works only on the node that issued it and
//! only until that node restarts (a browser then simply asks for a new one). Claims carry an
//! opaque account id, never a person's name.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::room::Role;

/// Longest token accepted, in bytes; anything larger is garbage.
pub const MAX_TOKEN_LEN: usize = 2048;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Room id.
    pub room: String,
    /// Opaque account or session id of the holder (shown to the room instead of a name).
    pub sub: String,
    /// Role in the room.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused. The messages say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the `claims.signature` form, or not base64url, or not JSON claims.
    #[error("the token is malformed; request a new one from the node")]
    Malformed,
    /// The signature does not match: forged, altered, or issued by another node.
    #[error("the token's signature does not match; it was not issued by this node")]
    BadSignature,
    /// Past its expiry.
    #[error("the token expired at {exp} (now {now}); request a new one")]
    Expired {
        /// Its expiry.
        exp: u64,
        /// The time of the check.
        now: u64,
    },
}

/// Issues and verifies tokens with one secret.
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from 32 random bytes of the system RNG.
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        // The system RNG failing is not recoverable; ring reports it as an opaque error.
        if SystemRandom::new().fill(&mut secret).is_err() {
            tracing::error!("system RNG failed; join tokens use a time-derived secret");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            secret[..16].copy_from_slice(&nanos.to_le_bytes());
        }
        Self::from_secret(&secret)
    }

    /// A key from a given secret (tests, or a secret shared by configuration).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Sign `claims` into a token.
    pub fn issue(&self, claims: &Claims) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let body = serde_json::to_vec(claims).unwrap_or_default();
        let tag = hmac::sign(&self.key, &body);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// Check a token at `now` (seconds since the epoch) and return its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, &body, &tag).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch, for token expiry.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            room: "scenic-1/mediation".into(),
            sub: "caller-42".into(),
            role: Role::Viewer,
            exp,
        }
    }

    #[test]
    fn an_issued_token_verifies_until_it_expires() {
        let key = TokenKey::from_secret(b"secret");
        let token = key.issue(&claims(1_000));
        assert_eq!(key.verify(&token, 999).unwrap(), claims(1_000));
        assert_eq!(
            key.verify(&token, 1_000).unwrap_err(),
            TokenError::Expired {
                exp: 1_000,
                now: 1_000
            }
        );
    }

    #[test]
    fn forged_altered_and_garbage_tokens_are_refused() {
        let key = TokenKey::from_secret(b"secret");
        let other = TokenKey::from_secret(b"another node");
        let token = other.issue(&claims(u64::MAX));
        assert_eq!(key.verify(&token, 0).unwrap_err(), TokenError::BadSignature);

        // Claims swapped for more generous ones, signature kept.
        let good = key.issue(&claims(10));
        let (_, tag) = good.split_once('.').unwrap();
        let mut better = claims(u64::MAX);
        better.role = Role::Owner;
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&better).unwrap());
        let altered = format!("{body}.{tag}");
        assert_eq!(
            key.verify(&altered, 0).unwrap_err(),
            TokenError::BadSignature
        );

        for garbage in ["", "abc", "a.b.c", "!!!.???", &"x".repeat(5000)] {
            assert_eq!(
                key.verify(garbage, 0).unwrap_err(),
                TokenError::Malformed,
                "{garbage}"
            );
        }
    }
}
