//! Sign-in sessions and the principal of a request.
//!
//! A session is node-local (it never travels the mesh): a random token handed to the browser in
//! an HttpOnly cookie (and in the sign-in answer, for API clients that send
//! `Authorization: Bearer`). The store keeps only the token's SHA-256, so a copy of the data dir
//! does not hold usable sessions. A session ends after [`IDLE`] without use, [`LIFETIME`] after
//! sign-in, on sign-out, or as soon as its account is disabled.
//!
//! Sign-in attempts are limited per client address ([`SignInLimiter`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use huiyan_mesh::replica::wall_ms;
use huiyan_mesh::store::Store;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::{Account, Role};
use crate::api::problem::Problem;
use crate::node::Node;

/// The session cookie's name.
pub const COOKIE: &str = "huiyan_session";
/// A session unused this long ends: two hours, a long mediation session with a break.
pub const IDLE: Duration = Duration::from_secs(2 * 3600);
/// A session ends this long after sign-in whatever its use: one working day and a half.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How often a session's last use is written to disk (not on every request).
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Local store tree of sessions.
const TREE: &str = "sessions";

/// What the store keeps of a session (under the token's hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub username: String,
    pub created_ms: u64,
    pub seen_ms: u64,
}

impl Session {
    fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.seen_ms) > IDLE.as_millis() as u64
            || now_ms.saturating_sub(self.created_ms) > LIFETIME.as_millis() as u64
    }

    /// When the session ends if it is not used again (ms since the Unix epoch).
    pub fn expires_ms(&self) -> u64 {
        (self.seen_ms + IDLE.as_millis() as u64).min(self.created_ms + LIFETIME.as_millis() as u64)
    }
}

/// The node's sessions, in its store.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
}

fn key_of(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Sessions {
    pub fn new(store: Store) -> Sessions {
        Sessions { store }
    }

    /// Starts a session for `username`; returns its token and record once it is durable.
    pub fn create(&self, username: &str) -> Result<(String, Session), huiyan_mesh::Error> {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = wall_ms();
        let session = Session {
            username: username.to_owned(),
            created_ms: now,
            seen_ms: now,
        };
        self.put(&token, &session)?;
        Ok((token, session))
    }

    fn put(&self, token: &str, s: &Session) -> Result<(), huiyan_mesh::Error> {
        let value = serde_json::to_vec(s).unwrap_or_default();
        self.store.local_put(TREE, &key_of(token), &value)
    }

    /// The live session of `token`, its last use refreshed; expired sessions are removed.
    pub fn lookup(&self, token: &str) -> Option<Session> {
        let key = key_of(token);
        let value = self.store.local_get(TREE, &key).ok().flatten()?;
        let mut s: Session = serde_json::from_slice(&value).ok()?;
        let now = wall_ms();
        if s.expired(now) {
            let _ = self.store.local_remove(TREE, &key);
            return None;
        }
        if now.saturating_sub(s.seen_ms) > TOUCH_EVERY.as_millis() as u64 {
            s.seen_ms = now;
            let _ = self.put(token, &s);
        }
        Some(s)
    }

    /// Ends the session of `token`.
    pub fn remove(&self, token: &str) -> Result<(), huiyan_mesh::Error> {
        self.store.local_remove(TREE, &key_of(token))
    }

    /// Removes expired sessions; returns how many are left.
    pub fn sweep(&self) -> usize {
        let now = wall_ms();
        let Ok(all) = self.store.local_scan(TREE) else {
            return 0;
        };
        let mut left = 0;
        for (key, value) in all {
            match serde_json::from_slice::<Session>(&value) {
                Ok(s) if !s.expired(now) => left += 1,
                _ => {
                    let _ = self.store.local_remove(TREE, &key);
                }
            }
        }
        left
    }
}

/// Limits failed sign-ins per client address: at most [`SignInLimiter::MAX_FAILURES`] in a
/// window of [`SignInLimiter::WINDOW`]; then 429 until the window passes.
#[derive(Debug, Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl SignInLimiter {
    /// Failed attempts allowed per address and window: enough for typos, too few for guessing.
    pub const MAX_FAILURES: u32 = 10;
    /// The window: five minutes.
    pub const WINDOW: Duration = Duration::from_secs(300);
    /// Addresses tracked at most; the oldest windows go first (bounded memory under a flood).
    const MAX_ADDRESSES: usize = 10_000;

    /// Whether `ip` may try now.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip) {
            Some((since, _)) if since.elapsed() > Self::WINDOW => {
                map.remove(&ip);
                true
            }
            Some((_, n)) => *n < Self::MAX_FAILURES,
            None => true,
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, (since, _)| since.elapsed() <= Self::WINDOW);
            if map.len() >= Self::MAX_ADDRESSES {
                return;
            }
        }
        map.entry(ip).or_insert((Instant::now(), 0)).1 += 1;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&ip);
    }
}

/// The signed-in staff member making a request. Extracting it answers 401 when there is no
/// live session, or the account is gone or disabled.
#[derive(Debug, Clone)]
pub struct Staff {
    pub account: Account,
    pub session: Session,
    pub token: String,
}

impl Staff {
    /// 403 unless the account holds `role` on `unit`.
    pub fn require(&self, node: &Node, role: Role, unit: &str) -> Result<(), Problem> {
        if self.account.has(&node.org, role, unit) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this needs the {role} role on {unit}; ask an admin of that unit"
            )))
        }
    }

    /// 403 unless the account holds `role` somewhere.
    pub fn require_role(&self, role: Role) -> Result<(), Problem> {
        if self.account.has_role(role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this needs the {role} role; ask an admin"
            )))
        }
    }

    /// Units on which the account holds `role`.
    pub fn units(&self, role: Role) -> Vec<&str> {
        self.account
            .grants
            .iter()
            .filter(|g| g.role == role)
            .map(|g| g.unit.as_str())
            .collect()
    }
}

/// The session token of a request: `Authorization: Bearer`, else the session cookie.
pub fn token_of(parts: &Parts) -> Option<String> {
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(t) = bearer {
        return Some(t.to_owned());
    }
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// What a public caller's session stands for, after `prefix` (`caller:` for a mediation call,
/// `hotline:` for a hotline call...): `None` without a live session of that kind.
pub fn caller_subject(parts: &Parts, node: &Node, prefix: &str) -> Option<String> {
    let session = node.sessions.lookup(&token_of(parts)?)?;
    session.username.strip_prefix(prefix).map(str::to_owned)
}

impl FromRequestParts<Arc<Node>> for Staff {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Staff, Problem> {
        let token = token_of(parts).ok_or_else(Problem::unauthenticated)?;
        let session = node
            .sessions
            .lookup(&token)
            .ok_or_else(Problem::unauthenticated)?;
        let account = node
            .views
            .accounts()
            .get(&session.username)
            .filter(|a| !a.disabled)
            .cloned();
        let Some(account) = account else {
            let _ = node.sessions.remove(&token);
            return Err(Problem::unauthenticated());
        };
        Ok(Staff {
            account,
            session,
            token,
        })
    }
}

/// Extractors for a signed-in staff member holding a role (on any unit). They run before the
/// request body is read, so that a caller without the role hears 403 whatever it sent; checks
/// on a particular unit follow in the handler.
macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Staff);

        impl FromRequestParts<Arc<Node>> for $name {
            type Rejection = Problem;

            async fn from_request_parts(
                parts: &mut Parts,
                node: &Arc<Node>,
            ) -> Result<$name, Problem> {
                let staff = Staff::from_request_parts(parts, node).await?;
                staff.require_role($role)?;
                Ok($name(staff))
            }
        }
    };
}

role_extractor!(
    /// A signed-in admin.
    Admin,
    Role::Admin
);
role_extractor!(
    /// A signed-in mediator.
    Mediator,
    Role::Mediator
);
role_extractor!(
    /// A signed-in duty lawyer.
    DutyLawyer,
    Role::DutyLawyer
);

/// A signed-in admin of this node's site (or of a unit above it).
#[derive(Debug, Clone, Copy)]
pub struct SiteAdmin;

impl FromRequestParts<Arc<Node>> for SiteAdmin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<SiteAdmin, Problem> {
        let staff = Staff::from_request_parts(parts, node).await?;
        staff.require(node, Role::Admin, &node.config.site)?;
        Ok(SiteAdmin)
    }
}

/// The client address of a request (the TCP peer), when the server recorded it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientAddr, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip());
        Ok(ClientAddr(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_until_signed_out_and_keep_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sessions = Sessions::new(store.clone());
        let (token, s) = sessions.create("li").unwrap();
        assert_eq!(s.username, "li");
        assert_eq!(sessions.lookup(&token).unwrap().username, "li");
        assert!(sessions.lookup("forged").is_none());
        // Only the hash is stored.
        let stored = store.local_scan(TREE).unwrap();
        assert_eq!(stored.len(), 1);
        assert_ne!(stored[0].0, token.as_bytes());
        sessions.remove(&token).unwrap();
        assert!(sessions.lookup(&token).is_none());
    }

    #[test]
    fn expired_sessions_end() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::new(Store::open(dir.path()).unwrap());
        let old = Session {
            username: "li".into(),
            created_ms: wall_ms() - LIFETIME.as_millis() as u64 - 1,
            seen_ms: wall_ms(),
        };
        sessions.put("t", &old).unwrap();
        assert!(sessions.lookup("t").is_none());
        let idle = Session {
            created_ms: wall_ms(),
            seen_ms: wall_ms() - IDLE.as_millis() as u64 - 1,
            ..old
        };
        sessions.put("u", &idle).unwrap();
        assert_eq!(sessions.sweep(), 0);
    }

    #[test]
    fn failed_sign_ins_are_limited_per_address() {
        let limiter = SignInLimiter::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..SignInLimiter::MAX_FAILURES {
            assert!(limiter.allowed(a));
            limiter.failed(a);
        }
        assert!(!limiter.allowed(a));
        assert!(limiter.allowed(b));
        limiter.succeeded(a);
        assert!(limiter.allowed(a));
    }
}
