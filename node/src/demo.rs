//! `huiyan demo`: the whole pilot on one machine. Every site of the shipped roster runs as its
//! own `huiyan run` process on loopback, with its own data dir and freshly generated key, using
//! the shipped site configs with their addresses moved to loopback ports.
//!
//! Ports are counted up from `--base-port`: site number `i` (in roster order) gets
//! `base + 10*i` (web), `+1` (mesh), `+2` (media relay) and `+3` (WebRTC).
//!
//! `--link 'scenic-*=256kbit,300ms,2%'` puts emulated links ([`huiyan_mesh::netem`]) on the mesh
//! traffic of the matching sites: one link in front of such a site's mesh port, which every
//! other site dials, and one link per other site for the dials it makes itself (its own copy of
//! the roster names those links). So every mesh connection of a linked site crosses exactly one
//! emulated link. The links run in the demo process; media between sites is not emulated.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use huiyan_mesh::identity;
use huiyan_mesh::netem::{Link, LinkParams};
use tokio::signal::unix::{SignalKind, signal};
use toml_edit::{DocumentMut, value};

use crate::error::Error;

const ROSTER: &str = include_str!("../../site-configs/roster.toml");
const SITE_CONFIGS: [(&str, &str); 8] = [
    ("hub", include_str!("../../site-configs/hub.toml")),
    ("bureau", include_str!("../../site-configs/bureau.toml")),
    ("office-1", include_str!("../../site-configs/office-1.toml")),
    ("office-2", include_str!("../../site-configs/office-2.toml")),
    ("office-3", include_str!("../../site-configs/office-3.toml")),
    ("scenic-1", include_str!("../../site-configs/scenic-1.toml")),
    ("scenic-2", include_str!("../../site-configs/scenic-2.toml")),
    ("scenic-3", include_str!("../../site-configs/scenic-3.toml")),
];
/// The demo's staff accounts, one per role (and a mediator for the bureau's mediation centre):
/// username, display name, grant. Each is written into the log of the site it works at and
/// reaches the others by sync.
const DEMO_ACCOUNTS: [(&str, &str, &str); 8] = [
    ("admin", "演示管理员 Demo admin", "admin@hub"),
    (
        "mediator",
        "西景区调解员 West Slope mediator",
        "mediator@scenic-2",
    ),
    (
        "mediator-bureau",
        "调解中心调解员 Bureau mediator",
        "mediator@bureau",
    ),
    ("lawyer", "值班律师 Duty lawyer", "duty_lawyer@bureau"),
    (
        "lawyer-office",
        "池北司法所值班律师 Chibei duty lawyer",
        "duty_lawyer@office-1",
    ),
    (
        "officer",
        "矫正工作人员 Correction officer",
        "correction_officer@office-1",
    ),
    ("commander", "指挥中心 Commander", "commander@bureau"),
    ("viewer", "观察员 Viewer", "viewer@hub"),
];
/// The demo accounts' password: the demo runs on loopback only, and a walkthrough needs a
/// password it can print.
pub const DEMO_PASSWORD: &str = "huiyan-demo";
/// How long the demo waits for every node to be ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a node gets to stop on SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct DemoSite {
    id: String,
    name_zh: String,
    role: String,
    web: SocketAddr,
    /// The emulated link on this site's mesh traffic, if a `--link` matched it.
    link: Option<LinkParams>,
    child: Child,
}

/// One `--link SITES=SPEC` flag.
#[derive(Debug, Clone)]
struct LinkRule {
    pattern: String,
    params: LinkParams,
}

/// Parses a `--link` flag; the error says what is wrong and how to write it.
fn parse_link_flag(flag: &str) -> Result<LinkRule, String> {
    let example = "write it as SITES=SPEC, e.g. --link 'scenic-*=256kbit,300ms,2%'";
    let Some((pattern, spec)) = flag.split_once('=') else {
        return Err(format!("--link `{flag}`: no `=`; {example}"));
    };
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Err(format!("--link `{flag}`: no site before `=`; {example}"));
    }
    if spec.trim().is_empty() {
        return Err(format!(
            "--link `{flag}`: no link spec after `=`; {example}"
        ));
    }
    let params = LinkParams::parse(spec).map_err(|e| format!("--link `{flag}`: {e}"))?;
    // QUIC needs datagrams of at least 1200 bytes; a smaller MTU is a link nothing crosses.
    if params.mtu < 1200 {
        return Err(format!(
            "--link `{flag}`: mtu={} is below the 1200 bytes QUIC needs; use mtu=1200 or more",
            params.mtu
        ));
    }
    Ok(LinkRule {
        pattern: pattern.to_owned(),
        params,
    })
}

/// Shell-style glob on site ids: `*` is any run of characters, `?` any one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The link of each site a rule matches; later rules override earlier ones. A rule matching
/// no site is an error (most likely a typo).
fn links_by_site(rules: &[LinkRule], ids: &[String]) -> Result<Vec<Option<LinkParams>>, String> {
    let mut out = vec![None; ids.len()];
    for rule in rules {
        let mut matched = false;
        for (i, id) in ids.iter().enumerate() {
            if glob(&rule.pattern, id) {
                out[i] = Some(rule.params.clone());
                matched = true;
            }
        }
        if !matched {
            return Err(format!(
                "--link `{}=...` matches no site; the sites are {}",
                rule.pattern,
                ids.join(", ")
            ));
        }
    }
    Ok(out)
}

pub fn demo(dir: Option<PathBuf>, base_port: u16, link_flags: &[String]) -> Result<(), Error> {
    if u32::from(base_port) + 10 * SITE_CONFIGS.len() as u32 > u32::from(u16::MAX) {
        return Err(Error::Usage(format!(
            "--base-port {base_port} leaves no room for 8 sites; use a port below {}",
            u16::MAX - 10 * SITE_CONFIGS.len() as u16
        )));
    }
    let rules = link_flags
        .iter()
        .map(|f| parse_link_flag(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Usage)?;
    let ids = roster_ids()?;
    let links = links_by_site(&rules, &ids).map_err(Error::Usage)?;
    let (dir, temporary) = match dir {
        Some(dir) => (dir, false),
        None => {
            let tmp = tempfile::Builder::new().prefix("huiyan-demo-").tempdir();
            let tmp = tmp.map_err(|e| Error::Runtime(format!("cannot make a temp dir: {e}")))?;
            (tmp.keep(), true)
        }
    };
    // Two workers: the emulated links forward packets while the main thread waits on nodes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let rt = rt.map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))?;

    // Children are spawned from this (the main) thread, where `block_on` runs its future: they
    // get SIGTERM if it dies.
    let result = rt.block_on(async {
        let (mut sites, _links) = prepare_and_start(&dir, base_port, &links).await?;
        let outcome = wait_ready_then_serve(&mut sites).await;
        stop_all(&mut sites);
        outcome
    });
    if temporary {
        let _ = fs::remove_dir_all(&dir);
    } else {
        println!("Data and logs are kept in {}", dir.display());
    }
    result
}

/// Site ids of the shipped roster, in roster order (the order of the ports).
fn roster_ids() -> Result<Vec<String>, Error> {
    let roster: DocumentMut = ROSTER.parse().map_err(|e| Error::Runtime(format!("{e}")))?;
    let sites = roster["site"].as_array_of_tables();
    let sites = sites.ok_or_else(|| Error::Runtime("shipped roster has no site".into()))?;
    Ok(sites
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// Starts a link to `target` whose front port is outside the demo's own port block.
async fn start_link(
    target: SocketAddr,
    params: &LinkParams,
    ports: std::ops::Range<u16>,
) -> Result<Link, Error> {
    let front: SocketAddr = ([127, 0, 0, 1], 0).into();
    for _ in 0..16 {
        let link = Link::start(front, target, params.clone())
            .await
            .map_err(|e| Error::Runtime(format!("demo: cannot start an emulated link: {e}")))?;
        if !ports.contains(&link.local_addr().port()) {
            return Ok(link);
        }
    }
    Err(Error::Runtime(
        "demo: no free port for an emulated link outside the demo's ports".into(),
    ))
}

/// Writes the configs, starts the links and every node. Returns the sites and the links (which
/// run as long as they are kept).
async fn prepare_and_start(
    dir: &Path,
    base_port: u16,
    links: &[Option<LinkParams>],
) -> Result<(Vec<DemoSite>, Vec<Link>), Error> {
    let io = |what: &str, e: std::io::Error| Error::Runtime(format!("demo: {what}: {e}"));
    fs::create_dir_all(dir).map_err(|e| io("cannot create the demo dir", e))?;
    let mut roster: DocumentMut = ROSTER.parse().map_err(|e| Error::Runtime(format!("{e}")))?;
    let port = |i: usize, k: u16| base_port + 10 * i as u16 + k;
    let loopback = |p: u16| format!("127.0.0.1:{p}");

    // One key per site, its PeerId and loopback addresses written into a copy of the roster.
    let mut names = Vec::new();
    let entries = roster["site"].as_array_of_tables_mut();
    let entries = entries.ok_or_else(|| Error::Runtime("shipped roster has no site".into()))?;
    for (i, site) in entries.iter_mut().enumerate() {
        let id = site["id"].as_str().unwrap_or_default().to_owned();
        let data_dir = dir.join(&id);
        fs::create_dir_all(&data_dir).map_err(|e| io("cannot create a data dir", e))?;
        let key = data_dir.join("node.key");
        let peer_id = match identity::load_key_file(&key) {
            Ok(k) => k.public().to_peer_id(),
            Err(_) => identity::generate_key_file(&key)?,
        };
        site["peer_id"] = value(peer_id.to_base58());
        site["web"] = value(loopback(port(i, 0)));
        site["mesh"] = value(loopback(port(i, 1)));
        site["media"] = value(loopback(port(i, 2)));
        let name_zh = site["name_zh"].as_str().unwrap_or_default().to_owned();
        let role = site["role"].as_str().unwrap_or_default().to_owned();
        names.push((id, name_zh, role));
    }

    // Emulated links: in front of each linked site's mesh port (the shared roster names it),
    // and from each linked site to every other site (its own roster copy names those).
    let ours = base_port..base_port + 10 * names.len() as u16;
    let mesh_addr = |i: usize| -> SocketAddr { ([127, 0, 0, 1], port(i, 1)).into() };
    let mut running = Vec::new();
    let mut own_rosters = Vec::new();
    for (i, params) in links.iter().enumerate() {
        let Some(params) = params else { continue };
        let inbound = start_link(mesh_addr(i), params, ours.clone()).await?;
        roster["site"][i]["mesh"] = value(inbound.local_addr().to_string());
        running.push(inbound);
        let mut outbound = Vec::new();
        for j in (0..names.len()).filter(|j| *j != i) {
            let link = start_link(mesh_addr(j), params, ours.clone()).await?;
            outbound.push((j, link.local_addr()));
            running.push(link);
        }
        own_rosters.push((i, outbound));
    }
    fs::write(dir.join("roster.toml"), roster.to_string())
        .map_err(|e| io("cannot write the roster", e))?;
    let mut roster_of = vec!["roster.toml".to_owned(); names.len()];
    for (i, outbound) in own_rosters {
        let mut own = roster.clone();
        for (j, front) in outbound {
            own["site"][j]["mesh"] = value(front.to_string());
        }
        let file = format!("roster-{}.toml", names[i].0);
        fs::write(dir.join(&file), own.to_string())
            .map_err(|e| io("cannot write a roster copy", e))?;
        roster_of[i] = file;
    }

    let exe = std::env::current_exe().map_err(|e| io("cannot find this program", e))?;
    let mut sites = Vec::new();
    for (i, (id, name_zh, role)) in names.into_iter().enumerate() {
        let text = SITE_CONFIGS.iter().find(|(s, _)| *s == id).map(|(_, t)| *t);
        let text = text.ok_or_else(|| Error::Runtime(format!("no shipped config for {id}")))?;
        let mut config: DocumentMut = text.parse().map_err(|e| Error::Runtime(format!("{e}")))?;
        config["roster"] = value(roster_of[i].as_str());
        config["data_dir"] = value(id.as_str());
        config.remove("key_file");
        config.remove("tls");
        let web: SocketAddr = ([127, 0, 0, 1], port(i, 0)).into();
        config["listen"]["web"] = value(web.to_string());
        config["listen"]["mesh"] = value(loopback(port(i, 1)));
        config["listen"]["media"] = value(loopback(port(i, 2)));
        config["listen"]["rtc"] = value(loopback(port(i, 3)));
        let path = dir.join(format!("{id}.toml"));
        fs::write(&path, config.to_string()).map_err(|e| io("cannot write a site config", e))?;
        add_demo_accounts(&path, &id)?;

        let log = fs::File::create(dir.join(format!("{id}.log")))
            .map_err(|e| io("cannot create a log file", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| io("cannot create a log file", e))?;
        let mut command = Command::new(&exe);
        command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| io("cannot start a node", e))?;
        sites.push(DemoSite {
            id,
            name_zh,
            role,
            web,
            link: links[i].clone(),
            child,
        });
    }
    Ok((sites, running))
}

/// Writes the demo accounts that work at site `id` into its log (the node is not running yet).
fn add_demo_accounts(config: &Path, id: &str) -> Result<(), Error> {
    for (username, name, grant) in DEMO_ACCOUNTS {
        let grant: crate::accounts::Grant = grant.parse().map_err(Error::Runtime)?;
        if grant.unit != id {
            continue;
        }
        let new = crate::users::NewAccount {
            username: username.into(),
            display_name: name.into(),
            grants: vec![grant],
            password: DEMO_PASSWORD.into(),
        };
        crate::users::add(config, new)?;
    }
    Ok(())
}

/// Makes the child get SIGTERM when the demo dies, even by SIGKILL, so no node is left behind.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

async fn wait_ready_then_serve(sites: &mut [DemoSite]) -> Result<(), Error> {
    let signal_err = |e: std::io::Error| Error::Runtime(format!("cannot watch signals: {e}"));
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_err)?;

    // Wait for every node to answer /readyz with 200, or for one of them to fail.
    let started = Instant::now();
    let mut pending: Vec<usize> = (0..sites.len()).collect();
    while !pending.is_empty() {
        for site in sites.iter_mut() {
            if let Ok(Some(status)) = site.child.try_wait() {
                return Err(Error::Runtime(format!(
                    "node {} exited ({status}) while starting; see its log {}.log in the demo dir",
                    site.id, site.id
                )));
            }
        }
        pending.retain(|&i| !is_ready(sites[i].web));
        if started.elapsed() > READY_WITHIN {
            let late: Vec<_> = pending.iter().map(|&i| sites[i].id.as_str()).collect();
            return Err(Error::Runtime(format!(
                "not ready within 60 s: {}",
                late.join(", ")
            )));
        }
        tokio::select! {
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }

    println!(
        "huiyan demo: {} sites ready in {:.1} s",
        sites.len(),
        started.elapsed().as_secs_f64()
    );
    println!();
    let linked = sites.iter().any(|s| s.link.is_some());
    let link_col = |s: &DemoSite| {
        let text = s
            .link
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        if linked {
            format!("{text:<34} ")
        } else {
            String::new()
        }
    };
    let header = if linked {
        format!("{:<34} ", "mesh link")
    } else {
        String::new()
    };
    println!("{:<10} {:<8} {:<26} {header}name", "site", "role", "url");
    for s in sites.iter() {
        println!(
            "{:<10} {:<8} {:<26} {}{}",
            s.id,
            s.role,
            format!("http://{}/", s.web),
            link_col(s),
            s.name_zh
        );
    }
    println!();
    println!("Demo accounts (password `{DEMO_PASSWORD}` for all; sign in at any site):");
    for (username, name, grant) in DEMO_ACCOUNTS {
        println!("  {username:<16} {grant:<30} {name}");
    }
    println!();
    println!("Press Ctrl-C to stop every node.");

    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
            _ = check.tick() => {}
        }
        for site in sites.iter_mut() {
            if let Ok(Some(status)) = site.child.try_wait() {
                eprintln!(
                    "huiyan demo: node {} exited ({status}); see {}.log",
                    site.id, site.id
                );
            }
        }
    }
}

/// Stops every node: SIGTERM, then SIGKILL for any still running after [`STOP_WITHIN`].
fn stop_all(sites: &mut [DemoSite]) {
    println!("Stopping {} nodes...", sites.len());
    for site in sites.iter() {
        if let Ok(pid) = i32::try_from(site.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = Instant::now() + STOP_WITHIN;
    for site in sites.iter_mut() {
        loop {
            match site.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!(
                        "huiyan demo: node {} did not stop in time; killing it",
                        site.id
                    );
                    let _ = site.child.kill();
                    let _ = site.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    println!("All nodes stopped.");
}

/// Whether the node at `web` answers `GET /readyz` with 200.
fn is_ready(web: SocketAddr) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&web, Duration::from_millis(300))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
    };
    probe().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_site_ids() {
        assert!(glob("scenic-*", "scenic-1"));
        assert!(glob("*", "hub"));
        assert!(glob("office-?", "office-3"));
        assert!(glob("*-1", "office-1"));
        assert!(!glob("scenic-*", "hub"));
        assert!(!glob("office-?", "office-10"));
        assert!(glob("hub", "hub"));
        assert!(!glob("hub", "hubs"));
    }

    #[test]
    fn link_flags_are_checked() {
        let r = parse_link_flag("scenic-*=256kbit,300ms,2%").unwrap();
        assert_eq!(r.pattern, "scenic-*");
        assert_eq!(r.params.rate_kbps, 256);
        for (bad, says) in [
            ("scenic-1", "no `=`"),
            ("=1mbit", "no site"),
            ("hub=", "no link spec"),
            ("hub=fast", "not understood"),
            ("hub=1mbit,mtu=500", "1200"),
        ] {
            let e = parse_link_flag(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let ids: Vec<String> = ["hub", "scenic-1", "scenic-2"].map(String::from).to_vec();
        let rules = [
            parse_link_flag("scenic-*=1mbit").unwrap(),
            parse_link_flag("scenic-2=64kbit").unwrap(),
        ];
        let got = links_by_site(&rules, &ids).unwrap();
        let rates: Vec<_> = got
            .iter()
            .map(|l| l.as_ref().map(|p| p.rate_kbps))
            .collect();
        assert_eq!(rates, vec![None, Some(1000), Some(64)]);
        let none = [parse_link_flag("scenic-9=1mbit").unwrap()];
        assert!(
            links_by_site(&none, &ids)
                .unwrap_err()
                .contains("matches no site")
        );
    }
}
