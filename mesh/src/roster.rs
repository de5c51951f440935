//! The roster: every site of the mesh, its identity, addresses and the record scopes it may hold.
//!
//! A node talks only to the peers named here. The roster is one TOML file shared by every site
//! (`site-configs/roster.toml`); [`Roster::parse`] reports every problem in it at once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use crate::diag::{Checker, Diagnostic, Fields, FromItem};
use crate::identity::PeerId;

/// What a site is in the organisation; decides its default duties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The province hub: public entry point, stores and forwards for every site.
    Hub,
    /// The Changbaishan Justice Bureau: command centre, mediation centre, hotline.
    Bureau,
    /// A justice office (司法所).
    Office,
    /// A scenic-area mediation room.
    Scenic,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Hub, Role::Bureau, Role::Office, Role::Scenic];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Bureau => "bureau",
            Role::Office => "office",
            Role::Scenic => "scenic",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromItem for Role {
    const EXPECTED: &'static str = "one of \"hub\", \"bureau\", \"office\", \"scenic\"";

    fn from_item(item: &toml_edit::Item) -> Option<Self> {
        let s = item.as_str()?;
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A `host:port` address that other sites use to reach this one. The host may be a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<HostPort> for String {
    fn from(hp: HostPort) -> String {
        hp.to_string()
    }
}

impl FromStr for HostPort {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (host, port) = s.rsplit_once(':').ok_or(())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
        let port: u16 = port.parse().map_err(|_| ())?;
        if !valid_host || port == 0 {
            return Err(());
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl FromItem for HostPort {
    const EXPECTED: &'static str = "a \"host:port\" address, like \"bureau.example:7000\"";

    fn from_item(item: &toml_edit::Item) -> Option<Self> {
        item.as_str()?.parse().ok()
    }
}

/// Record scopes every site may hold unless its roster entry narrows it.
pub const SCOPES: [&str; 6] = [
    "public",
    "accounts",
    "mediation",
    "hotline",
    "command",
    "conference",
];

/// The scope of the audit trail of one site: it stays on that site and reaches the sites that
/// hold every scope.
pub fn audit_scope(site: &str) -> String {
    format!("audit/{site}")
}

/// The scope of the community-correction records of one justice office.
pub fn correction_scope(office: &str) -> String {
    format!("correction/{office}")
}

/// One site of the roster.
#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub role: Role,
    /// Absent until the site is enrolled (its key generated on the host).
    #[serde(serialize_with = "peer_id_opt")]
    pub peer_id: Option<PeerId>,
    /// libp2p: QUIC on UDP, TCP fallback on the same port number.
    pub mesh: HostPort,
    /// The quinn media relay between sites (UDP).
    pub media: HostPort,
    /// The node's web and API address (HTTPS, or HTTP on loopback).
    pub web: HostPort,
    /// Record scopes this site may hold; `*` means every scope.
    pub scopes: Vec<String>,
}

fn peer_id_opt<S: serde::Serializer>(p: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&p.to_base58()),
        None => s.serialize_none(),
    }
}

impl Site {
    /// Whether this site may hold records of `scope`.
    pub fn may_hold(&self, scope: &str) -> bool {
        crate::scope::allows(&self.scopes, scope)
    }
}

/// Every site of the mesh.
#[derive(Debug, Clone, Serialize)]
pub struct Roster {
    pub sites: Vec<Site>,
}

impl Roster {
    /// Reads and validates the roster file at `path`.
    pub fn load(path: &Path) -> Result<Roster, Vec<Diagnostic>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Roster::parse(path, &text),
            Err(e) => Err(vec![Diagnostic {
                file: path.to_owned(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read the roster: {e}"),
                hint: "check the path (`roster` in the site config is relative to that file)"
                    .into(),
            }]),
        }
    }

    /// Parses and validates roster text; `path` is used in messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Roster, Vec<Diagnostic>> {
        let mut c = Checker::new(path, text);
        let Some(doc) = c.parse(text) else {
            return Err(c.into_diagnostics());
        };
        let mut root = Fields::root(&doc);
        let mut sites = Vec::new();
        // Where each parsed site stands in the file, so messages name the right `site[i]`.
        let mut places = Vec::new();
        let entries = root.tables(&mut c, "site");
        let count = entries.len();
        root.finish(&mut c);
        for (i, mut f) in entries.into_iter().enumerate() {
            let site = read_site(&mut c, &mut f);
            f.finish(&mut c);
            if let Some(site) = site {
                sites.push(site);
                places.push(i);
            }
        }
        let roster = Roster { sites };
        roster.check(&mut c, &places, places.len() == count);
        if c.has_errors() {
            Err(c.into_diagnostics())
        } else {
            Ok(roster)
        }
    }

    /// Checks across sites. `places[k]` is the file index of `self.sites[k]`; `complete` says
    /// whether every entry of the file parsed (counts are only judged then).
    fn check(&self, c: &mut Checker, places: &[usize], complete: bool) {
        if self.sites.is_empty() {
            c.error(
                "site",
                "the roster lists no site",
                "add one [[site]] table per site",
            );
        }
        let hubs = self.sites.iter().filter(|s| s.role == Role::Hub).count();
        if complete && !self.sites.is_empty() && hubs != 1 {
            c.error(
                "site",
                format!("the roster has {hubs} sites with role \"hub\"; it needs exactly one"),
                "the hub stores and forwards for every site: mark one site role = \"hub\"",
            );
        }

        let mut ids = HashSet::new();
        let mut peers = HashMap::new();
        let mut addresses: HashMap<String, String> = HashMap::new();
        for (site, i) in self.sites.iter().zip(places) {
            let at = |key: &str| format!("site[{i}].{key}");
            if !ids.insert(site.id.as_str()) {
                let msg = format!("site id `{}` is listed twice", site.id);
                c.error(&at("id"), msg, "every site needs its own id");
            }
            if let Some(peer) = site.peer_id
                && let Some(other) = peers.insert(peer, site.id.clone())
            {
                let msg = format!("peer_id is also the peer_id of site `{other}`");
                c.error(
                    &at("peer_id"),
                    msg,
                    "each site has its own key: run `huiyan keygen`",
                );
            }
            for (key, addr) in [
                ("mesh", &site.mesh),
                ("media", &site.media),
                ("web", &site.web),
            ] {
                if let Some(other) = addresses.insert(addr.to_string(), at(key)) {
                    let msg = format!("address {addr} is also used by `{other}`");
                    c.error(&at(key), msg, "give every listener its own port");
                }
            }
            for scope in &site.scopes {
                let known = scope == "*"
                    || SCOPES.contains(&scope.as_str())
                    || scope.strip_prefix("correction/").is_some_and(|office| {
                        self.sites
                            .iter()
                            .any(|s| s.id == office && s.role == Role::Office)
                    })
                    || ["audit/", "mediation/"].iter().any(|prefix| {
                        scope
                            .strip_prefix(prefix)
                            .is_some_and(|id| self.sites.iter().any(|s| s.id == id))
                    });
                if !known {
                    let msg = format!("unknown scope `{scope}`");
                    let hint = format!(
                        "scopes are \"*\", {}, \"correction/<office id>\", \"audit/<site id>\" or \
                         \"mediation/<site id>\"",
                        SCOPES.map(|s| format!("\"{s}\"")).join(", ")
                    );
                    c.error(&at("scopes"), msg, &hint);
                }
            }
            let own_audit = audit_scope(&site.id);
            if !crate::scope::allows(&site.scopes, &own_audit) {
                c.error(
                    &at("scopes"),
                    format!("site `{}` cannot hold its own audit trail", site.id),
                    &format!("add \"{own_audit}\" to its scopes"),
                );
            }
            if site.role == Role::Scenic && site.scopes.iter().any(|s| s.starts_with("correction/"))
            {
                c.error(
                    &at("scopes"),
                    "a scenic site may not hold community-correction records",
                    "remove the correction scope from this scenic site",
                );
            }
        }
    }

    pub fn site(&self, id: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.id == id)
    }

    pub fn site_by_peer(&self, peer: &PeerId) -> Option<&Site> {
        self.sites.iter().find(|s| s.peer_id.as_ref() == Some(peer))
    }
}

fn read_site(c: &mut Checker, f: &mut Fields<'_>) -> Option<Site> {
    let id: Option<String> = f.required(c, "id", "name the site, like \"scenic-2\"");
    if let Some(id) = &id {
        let valid = !id.is_empty()
            && id
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
        if !valid {
            let msg = format!("site id `{id}` is not valid");
            c.error(
                &f.path_of("id"),
                msg,
                "use lowercase letters, digits and '-'",
            );
        }
    }
    let name_zh = f.required(c, "name_zh", "give the Chinese name shown to users");
    let name_en = f.required(c, "name_en", "give the English name shown to users");
    let role = f.required(c, "role", "say what the site is");
    let peer_id = f
        .optional::<String>(c, "peer_id")
        .and_then(|text| match text.parse() {
            Ok(peer) => Some(peer),
            Err(_) => {
                let msg = format!("`{text}` is not a PeerId");
                let hint = "copy the line `huiyan keygen` printed for this site's key";
                c.error(&f.path_of("peer_id"), msg, hint);
                None
            }
        });
    let hint = "give the address other sites use, like \"host:7000\"";
    let mesh = f.required(c, "mesh", hint);
    let media = f.required(c, "media", hint);
    let web = f.required(c, "web", hint);
    let scopes = f.required(
        c,
        "scopes",
        "list the record scopes the site may hold, or [\"*\"]",
    );
    Some(Site {
        id: id?,
        name_zh: name_zh?,
        name_en: name_en?,
        role: role?,
        peer_id,
        mesh: mesh?,
        media: media?,
        web: web?,
        scopes: scopes?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[site]]
id = "hub"
name_zh = "省厅"
name_en = "Province hub"
role = "hub"
mesh = "127.0.0.1:7000"
media = "127.0.0.1:7100"
web = "127.0.0.1:8000"
scopes = ["*"]

[[site]]
id = "scenic-1"
name_zh = "景区一"
name_en = "Scenic room 1"
role = "scenic"
mesh = "127.0.0.1:7001"
media = "127.0.0.1:7101"
web = "127.0.0.1:8001"
scopes = ["public", "mediation", "audit/scenic-1"]
"#;

    #[test]
    fn parses_a_valid_roster() {
        let roster = Roster::parse(Path::new("r.toml"), TWO).unwrap();
        assert_eq!(roster.sites.len(), 2);
        let scenic = roster.site("scenic-1").unwrap();
        assert!(scenic.may_hold("mediation"));
        assert!(!scenic.may_hold(&correction_scope("office-1")));
        assert!(
            roster
                .site("hub")
                .unwrap()
                .may_hold(&correction_scope("office-1"))
        );
    }

    #[test]
    fn reports_duplicates_and_bad_values_together() {
        let text = TWO
            .replace("\"scenic-1\"", "\"hub\"")
            .replace("127.0.0.1:8001", "127.0.0.1:8000")
            .replace("[\"public\", \"mediation\"]", "[\"correction/office-9\"]");
        let err = Roster::parse(Path::new("r.toml"), &text).unwrap_err();
        let fields: Vec<_> = err.iter().map(|d| d.field.as_str()).collect();
        assert!(fields.contains(&"site[1].id"), "{err:#?}");
        assert!(fields.contains(&"site[1].web"), "{err:#?}");
        assert!(fields.contains(&"site[1].scopes"), "{err:#?}");
        assert!(err.iter().all(|d| d.line > 0), "{err:#?}");
    }
}
