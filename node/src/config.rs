//! The site config: one TOML file per node (`site-configs/<site>.toml`), read with the same
//! all-errors-at-once diagnostics as the roster (see `huiyan_mesh::diag`).
//!
//! Every field has a named default below, with its unit and the reason for it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use huiyan_mesh::diag::{Checker, Diagnostic, Fields};
use huiyan_mesh::roster::Roster;
use serde::Serialize;

/// Default data dir: the FHS place for a service's state; the systemd unit allows writes here.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/huiyan";
/// Default roster path, relative to the site config: both ship together in `site-configs/`.
pub const DEFAULT_ROSTER: &str = "roster.toml";
/// Default uplink budget in kbit/s: the 2 Mbit/s lines most mountain sites have; media and sync
/// stay within it so that a site's own staff keep a usable link.
pub const DEFAULT_UPLINK_KBPS: u32 = 2048;
/// Default web listener (HTTPS, TCP). 8443 needs no privilege, so the unit keeps no capability.
pub const DEFAULT_WEB: SocketAddr = any(8443);
/// Default mesh listener: libp2p QUIC on UDP and its TCP fallback, on one port number.
pub const DEFAULT_MESH: SocketAddr = any(7000);
/// Default media relay listener between sites (quinn, UDP).
pub const DEFAULT_MEDIA: SocketAddr = any(7100);
/// Default WebRTC port for browsers: one UDP port for all calls, ICE-TCP on the same number.
pub const DEFAULT_RTC: SocketAddr = any(7200);

const fn any(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

/// Kinds of terminal a site can have (see MISSION.md).
pub const TERMINAL_KINDS: [&str; 4] = ["large", "small", "hotline", "field"];
/// Kinds of room; each application runs in rooms of its kind.
pub const ROOM_KINDS: [&str; 5] = [
    "mediation",
    "hotline",
    "correction",
    "command",
    "conference",
];

/// One node's configuration.
#[derive(Debug, Clone, Serialize)]
pub struct SiteConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// This site's id in the roster. Required.
    pub site: String,
    /// The roster file; relative paths are taken from the site config's directory.
    pub roster: PathBuf,
    /// Where the store lives. Default [`DEFAULT_DATA_DIR`].
    pub data_dir: PathBuf,
    /// The node key. Default `<data_dir>/node.key`, so that it is backed up with the data.
    pub key_file: PathBuf,
    /// Uplink budget in kbit/s. Default [`DEFAULT_UPLINK_KBPS`].
    pub uplink_kbps: u32,
    pub listen: Listen,
    /// HTTPS certificate and key. Required unless `listen.web` is a loopback address.
    pub tls: Option<Tls>,
    pub terminals: Vec<Terminal>,
    pub rooms: Vec<Room>,
    /// The hotline's duty schedule and after-call time. Only the hotline's home (the bureau)
    /// reads it; it publishes the schedule to every node.
    pub hotline: HotlineConfig,
}

/// `[hotline]`.
#[derive(Debug, Clone, Serialize)]
pub struct HotlineConfig {
    /// Seconds of after-call work before a lawyer is available again by themselves.
    pub after_call_seconds: u32,
    /// `[[hotline.shift]]`: none means the hotline is always open.
    pub shifts: Vec<crate::hotline::Shift>,
}

impl Default for HotlineConfig {
    fn default() -> Self {
        Self {
            after_call_seconds: crate::hotline::schedule::DEFAULT_AFTER_CALL_SECONDS,
            shifts: Vec::new(),
        }
    }
}

impl HotlineConfig {
    pub fn schedule(&self) -> crate::hotline::Schedule {
        crate::hotline::Schedule {
            shifts: self.shifts.clone(),
            after_call_seconds: self.after_call_seconds,
        }
    }
}

/// Addresses the node binds.
#[derive(Debug, Clone, Serialize)]
pub struct Listen {
    pub web: SocketAddr,
    pub mesh: SocketAddr,
    pub media: SocketAddr,
    pub rtc: SocketAddr,
    /// The IP browsers are told to send WebRTC media to (the host candidate of every answer),
    /// with the port of `rtc`. Default: none, which means the IP of `rtc` itself, or for a
    /// wildcard `rtc` the address of the host's default route (see `huiyan_media::driver`).
    /// Set it when the node is reached at an address it cannot see: a LAN address on a host
    /// with several interfaces, or the public side of a 1:1 NAT.
    pub rtc_advertise: Option<IpAddr>,
}

/// PEM files for HTTPS.
#[derive(Debug, Clone, Serialize)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A terminal at the site (a browser on a fixed device).
#[derive(Debug, Clone, Serialize)]
pub struct Terminal {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    /// One of [`TERMINAL_KINDS`].
    pub kind: String,
}

/// A room at the site, where one application's calls take place.
#[derive(Debug, Clone, Serialize)]
pub struct Room {
    pub id: String,
    /// One of [`ROOM_KINDS`].
    pub kind: String,
    pub name_zh: String,
    pub name_en: String,
    /// Korean name, for the public tourist app; optional (the English name stands in).
    pub name_ko: Option<String>,
}

/// A site config with the roster it names, both valid.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: SiteConfig,
    pub roster: Roster,
}

/// Reads a site config and its roster and checks them together.
pub fn load(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![unreadable(path, &e)])?;
    let mut c = Checker::new(path, &text);
    let Some(doc) = c.parse(&text) else {
        return Err(c.into_diagnostics());
    };
    let config = read(&mut c, &doc, path);

    let roster = match &config {
        Some(config) => Roster::load(&config.roster).map_err(Some),
        None => Err(None),
    };
    if let (Some(config), Ok(roster)) = (&config, &roster)
        && roster.site(&config.site).is_none()
    {
        let ids: Vec<_> = roster.sites.iter().map(|s| s.id.as_str()).collect();
        let roster_path = config.roster.display();
        let msg = format!("site `{}` is not in the roster {roster_path}", config.site);
        c.error("site", msg, &format!("use one of: {}", ids.join(", ")));
    }

    let mut found = c.into_diagnostics();
    match (config, roster) {
        (Some(config), Ok(roster)) if found.is_empty() => Ok(Loaded { config, roster }),
        (_, Err(Some(roster_errors))) => {
            found.extend(roster_errors);
            Err(found)
        }
        _ => Err(found),
    }
}

fn unreadable(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic {
        file: path.to_owned(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read the site config: {e}"),
        hint: "give the path of a site config, like site-configs/bureau.toml".into(),
    }
}

fn read(c: &mut Checker, doc: &toml_edit::ImDocument<String>, path: &Path) -> Option<SiteConfig> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut root = Fields::root(doc);
    let site = root.required::<String>(c, "site", "name this node's site id from the roster");
    let roster = root
        .optional(c, "roster")
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROSTER));
    let data_dir: PathBuf = root
        .optional(c, "data_dir")
        .unwrap_or(DEFAULT_DATA_DIR.into());
    let key_file = root
        .optional(c, "key_file")
        .unwrap_or_else(|| data_dir.join("node.key"));
    let uplink_kbps = root
        .optional(c, "uplink_kbps")
        .unwrap_or(DEFAULT_UPLINK_KBPS);
    if uplink_kbps < 64 {
        let hint = "give the site's uplink in kbit/s; huiyan needs at least 64";
        c.error(
            "uplink_kbps",
            format!("{uplink_kbps} kbit/s is too little"),
            hint,
        );
    }

    let listen = read_listen(c, &mut root);
    let tls = root.table(c, "tls").and_then(|mut f| {
        let cert: Option<PathBuf> =
            f.required(c, "cert", "give the path of the PEM certificate chain");
        let key: Option<PathBuf> = f.required(c, "key", "give the path of the PEM private key");
        f.finish(c);
        Some(Tls {
            cert: base.join(cert?),
            key: base.join(key?),
        })
    });
    let terminals = read_list(c, &mut root, "terminals", |c, f| {
        Some(Terminal {
            id: f.required(c, "id", "name the terminal")?,
            name_zh: f.required(c, "name_zh", "give the Chinese name")?,
            name_en: f.required(c, "name_en", "give the English name")?,
            kind: one_of(c, f, "kind", &TERMINAL_KINDS)?,
        })
    });
    let rooms = read_list(c, &mut root, "rooms", |c, f| {
        Some(Room {
            id: f.required(c, "id", "name the room")?,
            kind: one_of(c, f, "kind", &ROOM_KINDS)?,
            name_zh: f.required(c, "name_zh", "give the Chinese name")?,
            name_en: f.required(c, "name_en", "give the English name")?,
            name_ko: f.optional(c, "name_ko"),
        })
    });
    let hotline = read_hotline(c, &mut root);
    root.finish(c);

    let config = SiteConfig {
        path: path.to_owned(),
        site: site?,
        roster: base.join(roster),
        data_dir: base.join(data_dir),
        key_file: base.join(key_file),
        uplink_kbps,
        listen,
        tls,
        terminals,
        rooms,
        hotline,
    };
    check(c, &config);
    Some(config)
}

fn read_listen(c: &mut Checker, root: &mut Fields<'_>) -> Listen {
    let mut f = root.table(c, "listen");
    let mut addr = |key: &'static str, default: SocketAddr| {
        f.as_mut()
            .and_then(|f| f.optional(c, key))
            .unwrap_or(default)
    };
    let web = addr("web", DEFAULT_WEB);
    let mesh = addr("mesh", DEFAULT_MESH);
    let media = addr("media", DEFAULT_MEDIA);
    let rtc = addr("rtc", DEFAULT_RTC);
    // Read as a string: the diagnostics reader knows addresses with ports, not bare IPs.
    let rtc_advertise = f.as_mut().and_then(|f| {
        let text: String = f.optional(c, "rtc_advertise")?;
        match text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let msg = format!("expected an IP address without a port, found \"{text}\"");
                let hint = "give the IP browsers reach the node at, like \"10.20.0.5\"";
                c.error("listen.rtc_advertise", msg, hint);
                None
            }
        }
    });
    if let Some(f) = f {
        f.finish(c);
    }
    Listen {
        web,
        mesh,
        media,
        rtc,
        rtc_advertise,
    }
}

fn read_hotline(c: &mut Checker, root: &mut Fields<'_>) -> HotlineConfig {
    let mut out = HotlineConfig::default();
    let Some(mut f) = root.table(c, "hotline") else {
        return out;
    };
    if let Some(s) = f.optional::<u32>(c, "after_call_seconds") {
        if (5..=3600).contains(&s) {
            out.after_call_seconds = s;
        } else {
            let msg = format!("{s} s of after-call work is out of range");
            c.error("hotline.after_call_seconds", &msg, "give 5 to 3600 seconds");
        }
    }
    for (i, mut sf) in f.tables(c, "shift").into_iter().enumerate() {
        let days: Option<Vec<String>> =
            sf.required(c, "days", "list the days, like [\"mon\", \"tue\"]");
        let start: Option<String> = sf.required(c, "start", "give the start, like \"08:30\"");
        let end: Option<String> = sf.required(c, "end", "give the end, like \"17:30\"");
        let lawyers: Vec<String> = sf.optional(c, "lawyers").unwrap_or_default();
        sf.finish(c);
        let (Some(days), Some(start), Some(end)) = (days, start, end) else {
            continue;
        };
        let shift = crate::hotline::Shift {
            days,
            start,
            end,
            lawyers,
        };
        for problem in shift.problems() {
            let hint = "days are mon..sun, times HH:MM in China time";
            c.error(&format!("hotline.shift[{i}]"), &problem, hint);
        }
        out.shifts.push(shift);
    }
    f.finish(c);
    out
}

fn read_list<'t, T>(
    c: &mut Checker,
    root: &mut Fields<'t>,
    key: &'static str,
    read_one: impl Fn(&mut Checker, &mut Fields<'t>) -> Option<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    for mut f in root.tables(c, key) {
        out.extend(read_one(c, &mut f));
        f.finish(c);
    }
    out
}

fn one_of(
    c: &mut Checker,
    f: &mut Fields<'_>,
    key: &'static str,
    allowed: &[&str],
) -> Option<String> {
    let hint = format!("use one of: {}", allowed.join(", "));
    let value: String = f.required(c, key, &hint)?;
    if allowed.contains(&value.as_str()) {
        Some(value)
    } else {
        c.error(&f.path_of(key), format!("unknown {key} `{value}`"), &hint);
        None
    }
}

/// Checks that need several fields at once.
fn check(c: &mut Checker, config: &SiteConfig) {
    let listen = &config.listen;
    let ports = [
        ("listen.web", listen.web),
        ("listen.mesh", listen.mesh),
        ("listen.media", listen.media),
        ("listen.rtc", listen.rtc),
    ];
    for (i, (field, addr)) in ports.iter().enumerate() {
        if let Some((other, _)) = ports[..i].iter().find(|(_, a)| a.port() == addr.port()) {
            let msg = format!("port {} is also used by `{other}`", addr.port());
            c.error(field, msg, "give every listener its own port");
        }
    }
    if let Some(ip) = listen.rtc_advertise {
        let hint = "give the IP browsers reach the node's `listen.rtc` port at, like \"10.20.0.5\"";
        let refusal = if ip.is_unspecified() {
            Some(format!("{ip} is not an address browsers can send to"))
        } else if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            Some(format!("{ip} is a multicast or broadcast address"))
        } else if unreachable_family(ip, listen.rtc.ip()) {
            let family = |ip: IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            let bind = listen.rtc;
            let (have, want) = (family(ip), family(bind.ip()));
            Some(format!(
                "{ip} is {have} but `listen.rtc` ({bind}) only receives {want}"
            ))
        } else {
            None
        };
        if let Some(msg) = refusal {
            c.error("listen.rtc_advertise", msg, hint);
        }
    }
    if config.tls.is_none() && !listen.web.ip().is_loopback() {
        let msg = format!(
            "plain HTTP on {} is not allowed: browsers need HTTPS",
            listen.web
        );
        let hint = "add a [tls] table with cert and key, or listen on 127.0.0.1 for local use";
        c.error("listen.web", msg, hint);
    }
    let mut ids = HashSet::new();
    for (i, t) in config.terminals.iter().enumerate() {
        if !ids.insert(t.id.as_str()) {
            let msg = format!("terminal id `{}` is listed twice", t.id);
            c.error(
                &format!("terminals[{i}].id"),
                msg,
                "give every terminal its own id",
            );
        }
    }
    let mut ids = HashSet::new();
    for (i, r) in config.rooms.iter().enumerate() {
        if !ids.insert(r.id.as_str()) {
            let msg = format!("room id `{}` is listed twice", r.id);
            c.error(&format!("rooms[{i}].id"), msg, "give every room its own id");
        }
    }
}

/// Whether a socket bound on `bind` can never receive datagrams sent to `advertised`: an IPv4
/// socket receives no IPv6, and an IPv6 socket bound to one address receives no IPv4 (a
/// wildcard IPv6 socket may, through IPv4-mapped addresses).
fn unreachable_family(advertised: IpAddr, bind: IpAddr) -> bool {
    match (advertised, bind) {
        (IpAddr::V6(_), IpAddr::V4(_)) => true,
        (IpAddr::V4(_), IpAddr::V6(bind)) => !bind.is_unspecified(),
        _ => false,
    }
}

/// `huiyan check-config`: checks every site config and roster found under `paths` (files, or
/// directories whose `*.toml` files are read). A file named `roster.toml` is read as a roster.
pub fn check_paths(paths: &[PathBuf]) -> Result<usize, Vec<Diagnostic>> {
    let mut files = Vec::new();
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut inner: Vec<_> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                        .collect();
                    inner.sort();
                    files.extend(inner);
                }
                Err(e) => found.push(unreadable(path, &e)),
            }
        } else {
            files.push(path.clone());
        }
    }

    let mut sites = HashSet::new();
    for file in &files {
        if file.file_name().is_some_and(|n| n == "roster.toml") {
            found.extend(Roster::load(file).err().unwrap_or_default());
            continue;
        }
        match load(file) {
            Ok(loaded) => {
                if !sites.insert((loaded.config.roster.clone(), loaded.config.site.clone())) {
                    found.push(Diagnostic {
                        file: file.clone(),
                        line: 0,
                        column: 0,
                        field: "site".into(),
                        message: format!("another file is also site `{}`", loaded.config.site),
                        hint: "each site has exactly one site config".into(),
                    });
                }
            }
            // A roster named by several site configs is reported once.
            Err(errors) => {
                for d in errors {
                    if !found.contains(&d) {
                        found.push(d);
                    }
                }
            }
        }
    }
    if files.is_empty() && found.is_empty() {
        found.push(Diagnostic {
            file: paths.first().cloned().unwrap_or_default(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "no .toml file found".into(),
            hint: "give site config files or a directory holding them".into(),
        });
    }
    if found.is_empty() {
        Ok(files.len())
    } else {
        Err(found)
    }
}
