//! Staff accounts: roles placed on the org tree, passwords, and the accounts view.
//!
//! An account is a record of kind `account` in scope `accounts`, which every site holds, so a
//! mediator can sign in at any site, also while that site is cut off. The newest record of a
//! username wins (by hybrid logical clock, then origin); the view is rebuilt from the logs at
//! start. Passwords are stored only as argon2id hashes (PHC strings).
//!
//! The org tree comes from the roster: the hub is the province, the bureau sits under it, the
//! justice offices and scenic rooms under the bureau. A unit is a site id, or a department of a
//! site written `<site>/<department>` (`bureau/legal-aid`). A role granted on a unit holds on
//! that unit and everything under it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use huiyan_mesh::replica::Record;
use huiyan_mesh::roster::{Role as SiteRole, Roster};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The record scope of accounts (held by every site).
pub const SCOPE: &str = "accounts";
/// The record kind of an account.
pub const KIND: &str = "account";
/// Shortest password accepted. Eight characters: the common floor for staff passwords; sign-in
/// attempts are rate limited per address, which is what keeps guessing slow.
pub const MIN_PASSWORD: usize = 8;

/// What a staff member may do. Roles are granted on a unit of the org tree.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages accounts of the unit, reads its audit trail.
    Admin,
    /// Takes mediation callers, runs sessions, writes cases and agreements.
    Mediator,
    /// Answers the legal-advice hotline.
    DutyLawyer,
    /// Supervises persons under community correction, makes video check-ins.
    CorrectionOfficer,
    /// Runs emergency command: field video, point-to-point and point-to-multipoint calls.
    Commander,
    /// Watches conferences and sees the status of the unit; changes nothing.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Mediator,
        Role::DutyLawyer,
        Role::CorrectionOfficer,
        Role::Commander,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Mediator => "mediator",
            Role::DutyLawyer => "duty_lawyer",
            Role::CorrectionOfficer => "correction_officer",
            Role::Commander => "commander",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role `{s}`; use one of {}", names.join(", "))
            })
    }
}

/// A role on a unit of the org tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct Grant {
    pub role: Role,
    /// A site id, or `<site>/<department>`.
    pub unit: String,
}

impl FromStr for Grant {
    type Err = String;

    /// `role@unit`, such as `mediator@scenic-2`.
    fn from_str(s: &str) -> Result<Grant, String> {
        let (role, unit) = s
            .split_once('@')
            .ok_or_else(|| format!("`{s}` is not `role@unit` (such as `mediator@scenic-2`)"))?;
        Ok(Grant {
            role: role.parse()?,
            unit: unit.to_owned(),
        })
    }
}

/// The org tree, derived from the roster.
#[derive(Debug, Clone)]
pub struct OrgTree {
    /// Site id → parent site id (none for the hub).
    parents: BTreeMap<String, Option<String>>,
}

impl OrgTree {
    pub fn from_roster(roster: &Roster) -> OrgTree {
        let first = |role: SiteRole| {
            roster
                .sites
                .iter()
                .find(|s| s.role == role)
                .map(|s| s.id.clone())
        };
        let (hub, bureau) = (first(SiteRole::Hub), first(SiteRole::Bureau));
        let parents = roster
            .sites
            .iter()
            .map(|s| {
                let parent = match s.role {
                    SiteRole::Hub => None,
                    SiteRole::Bureau => hub.clone(),
                    SiteRole::Office | SiteRole::Scenic => bureau.clone().or_else(|| hub.clone()),
                };
                (s.id.clone(), parent)
            })
            .collect();
        OrgTree { parents }
    }

    /// Why `unit` is not a unit of this tree, if it is not.
    pub fn check_unit(&self, unit: &str) -> Result<(), String> {
        let (site, department) = match unit.split_once('/') {
            Some((site, dept)) => (site, Some(dept)),
            None => (unit, None),
        };
        if !self.parents.contains_key(site) {
            let sites: Vec<&str> = self.parents.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown unit `{unit}`; a unit is a site id ({}) or `<site>/<department>`",
                sites.join(", ")
            ));
        }
        if department.is_some_and(|d| !valid_name(d)) {
            return Err(format!(
                "department `{unit}`: use lower-case letters, digits, `-` and `_` after the `/`"
            ));
        }
        Ok(())
    }

    /// Whether `unit` is `top` or lies under it.
    pub fn contains(&self, top: &str, unit: &str) -> bool {
        if top == unit {
            return true;
        }
        let site = match unit.split_once('/') {
            Some((site, _)) => {
                if site == top {
                    return true;
                }
                site
            }
            None => unit,
        };
        // Walk up from the unit's site; the tree is shallow (hub → bureau → office).
        let mut at = self.parents.get(site).cloned().flatten();
        for _ in 0..self.parents.len() {
            match at {
                Some(p) if p == top => return true,
                Some(p) => at = self.parents.get(&p).cloned().flatten(),
                None => return false,
            }
        }
        false
    }
}

/// A username: 2–32 of a-z, 0-9, `.`, `-`, `_`, starting with a letter or digit.
pub fn valid_username(s: &str) -> bool {
    (2..=32).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// The payload of an `account` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub username: String,
    /// The name shown to colleagues and callers.
    pub display_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub grants: Vec<Grant>,
    /// A disabled account cannot sign in; its sessions end.
    #[serde(default)]
    pub disabled: bool,
    /// Who wrote this version (username, or `cli` for `huiyan user add`).
    pub by: String,
}

impl Account {
    /// Whether the account holds `role` on `unit` (or on a unit above it).
    pub fn has(&self, tree: &OrgTree, role: Role, unit: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.role == role && tree.contains(&g.unit, unit))
    }

    /// Whether the account holds `role` anywhere.
    pub fn has_role(&self, role: Role) -> bool {
        self.grants.iter().any(|g| g.role == role)
    }
}

/// Everything wrong with a new account, at once.
pub fn check_account(tree: &OrgTree, username: &str, grants: &[Grant]) -> Vec<String> {
    let mut problems = Vec::new();
    if !valid_username(username) {
        problems.push(format!(
            "username `{username}`: use 2-32 lower-case letters, digits, `.`, `-` or `_`"
        ));
    }
    if grants.is_empty() {
        problems.push("give the account at least one role (`role@unit`)".to_owned());
    }
    for g in grants {
        if let Err(e) = tree.check_unit(&g.unit) {
            problems.push(e);
        }
    }
    problems
}

/// Hashes a password with argon2id and a fresh salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!(
            "the password is too short: use at least {MIN_PASSWORD} characters"
        ));
    }
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Checks a password against a stored hash. Slow on purpose (argon2): call off the async
/// threads.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A random password for generated accounts (the demo's, or `huiyan user add` without one):
/// 16 characters from an alphabet without look-alikes.
pub fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// The accounts view: the newest version of every account, from the logs.
#[derive(Debug, Default)]
pub struct Accounts {
    /// Username → (hlc, origin peer, account).
    by_name: BTreeMap<String, (u64, String, Account)>,
    /// Account records that could not be read (counted, never applied).
    pub unreadable: u64,
}

impl Accounts {
    /// Applies one record of the logs; records of other kinds are ignored.
    pub fn apply(&mut self, r: &Record) {
        if r.scope != SCOPE || r.kind != KIND || r.withheld {
            return;
        }
        let Ok(account) = serde_json::from_value::<Account>(r.payload.clone()) else {
            self.unreadable += 1;
            tracing::warn!(origin = %r.origin, seq = r.seq, "unreadable account record ignored");
            return;
        };
        let newer = self
            .by_name
            .get(&account.username)
            .is_none_or(|(hlc, origin, _)| (r.hlc, &r.origin_peer) > (*hlc, origin));
        if newer {
            self.by_name.insert(
                account.username.clone(),
                (r.hlc, r.origin_peer.clone(), account),
            );
        }
    }

    pub fn get(&self, username: &str) -> Option<&Account> {
        self.by_name.get(username).map(|(_, _, a)| a)
    }

    pub fn all(&self) -> impl Iterator<Item = &Account> {
        self.by_name.values().map(|(_, _, a)| a)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> OrgTree {
        let roster = Roster::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../site-configs/roster.toml"
        )))
        .unwrap();
        OrgTree::from_roster(&roster)
    }

    #[test]
    fn roles_hold_on_their_unit_and_below() {
        let t = tree();
        assert!(t.contains("hub", "scenic-2"));
        assert!(t.contains("bureau", "office-1"));
        assert!(t.contains("bureau", "bureau/legal-aid"));
        assert!(t.contains("scenic-2", "scenic-2"));
        assert!(!t.contains("scenic-2", "scenic-1"));
        assert!(!t.contains("office-1", "bureau"));
        assert!(!t.contains("bureau/legal-aid", "bureau"));
        assert!(t.check_unit("bureau/legal-aid").is_ok());
        assert!(
            t.check_unit("nowhere")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(t.check_unit("bureau/Bad Name").is_err());
    }

    #[test]
    fn grants_parse_and_explain_mistakes() {
        let g: Grant = "mediator@scenic-2".parse().unwrap();
        assert_eq!((g.role, g.unit.as_str()), (Role::Mediator, "scenic-2"));
        assert!(
            "mediator"
                .parse::<Grant>()
                .unwrap_err()
                .contains("role@unit")
        );
        assert!(
            "pilot@hub"
                .parse::<Grant>()
                .unwrap_err()
                .contains("unknown role")
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse!", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(hash_password("short").unwrap_err().contains("too short"));
    }

    fn record(hlc: u64, origin: &str, account: &Account) -> Record {
        Record {
            origin: origin.into(),
            origin_peer: origin.into(),
            seq: 1,
            time_ms: 0,
            hlc,
            scope: SCOPE.into(),
            kind: KIND.into(),
            payload: serde_json::to_value(account).unwrap(),
            withheld: false,
            hash: String::new(),
        }
    }

    #[test]
    fn the_newest_version_wins_whatever_the_arrival_order() {
        let v1 = Account {
            username: "li".into(),
            display_name: "Li".into(),
            password_hash: "h1".into(),
            grants: vec!["mediator@scenic-1".parse().unwrap()],
            disabled: false,
            by: "cli".into(),
        };
        let v2 = Account {
            disabled: true,
            ..v1.clone()
        };
        let mut a = Accounts::default();
        a.apply(&record(20, "bureau", &v2));
        a.apply(&record(10, "hub", &v1));
        assert!(a.get("li").unwrap().disabled);
        let mut b = Accounts::default();
        b.apply(&record(10, "hub", &v1));
        b.apply(&record(20, "bureau", &v2));
        assert_eq!(a.get("li"), b.get("li"));
        let mut bad = record(30, "hub", &v1);
        bad.payload = serde_json::json!({"username": 7});
        a.apply(&bad);
        assert_eq!(a.unreadable, 1);
        assert!(a.get("li").unwrap().disabled);
    }
}
