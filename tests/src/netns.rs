//! Network namespaces for browser tests: a browser (and its chromedriver) run inside a namespace
//! joined to the host by a veth pair, so that a test can cap its downlink (`tc tbf` on the host
//! end) or cut its network (nftables inside the namespace) without touching anything else.
//!
//! Needs root and iproute2 (`ip`, `tc`), and `nft` for [`Netns::set_offline`]. Every name is
//! unique to this process (`hyt<pid>n<k>`); dropping a [`Netns`] kills what still runs inside,
//! deletes the namespace and the veth pair, also when a test panics. Namespaces left by a test
//! process that was killed outright are removed by the next [`Netns::new`].

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Namespaces made by this process so far.
static NEXT: AtomicU32 = AtomicU32::new(0);
/// Prefix of every namespace and host-side interface these tests make.
const PREFIX: &str = "hyt";
/// Name of the namespace's end of the veth pair.
const INNER_IF: &str = "net0";
/// The /30 subnets come from 10.77.0.0/16 (16384 of them).
const SUBNETS: u32 = 1 << 14;
/// The nftables table that cuts a namespace off.
const OFFLINE_TABLE: &str = "huiyan_offline";

/// A network namespace with one veth link to the host and a default route through it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{program}`: install iproute2 and nftables"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process runs with effective uid 0 (from `/proc/self/status`).
fn effective_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Netns {
    /// A new namespace `hyt<pid>n<k>` with `lo` up, a veth pair on a free /30 of
    /// 10.77.0.0/16, and a default route to the host (WebRTC stacks open multicast sockets
    /// that fail without one). Fails, saying why, without root or iproute2.
    pub fn new() -> Result<Netns> {
        if !effective_root() {
            bail!("network namespaces need root: run the browser tests as root (CI does)");
        }
        remove_stale();
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{pid}n{k}");
        let host_if = format!("{PREFIX}{pid}h{k}");
        if host_if.len() > 15 {
            bail!("interface name {host_if} is longer than Linux allows");
        }

        // A /30 no host interface uses yet, starting far from where other processes start.
        let used = run("ip", &["-4", "-o", "addr", "show"])?;
        let subnet = (0..SUBNETS)
            .map(|i| (pid.wrapping_mul(97) + k * 13 + i) % SUBNETS)
            .map(|i| {
                let base = u32::from(Ipv4Addr::new(10, 77, 0, 0)) + i * 4;
                (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
            })
            .find(|(host, _)| !used.contains(&format!(" {host}/")))
            .context("no free /30 left in 10.77.0.0/16")?;
        let (host_ip, ns_ip) = subnet;

        run("ip", &["netns", "add", &name]).context(
            "cannot create a network namespace (is this a container without CAP_SYS_ADMIN?)",
        )?;
        // From here on, Drop cleans up whatever the remaining steps leave.
        let ns = Netns {
            name,
            host_if,
            host_ip,
            ns_ip,
        };
        let (n, h) = (ns.name.as_str(), ns.host_if.as_str());
        let host_cidr = format!("{host_ip}/30");
        let ns_cidr = format!("{ns_ip}/30");
        let host_ip_text = host_ip.to_string();
        let steps: [(&str, Vec<&str>); 7] = [
            (
                "ip",
                vec![
                    "link", "add", h, "type", "veth", "peer", "name", INNER_IF, "netns", n,
                ],
            ),
            ("ip", vec!["addr", "add", &host_cidr, "dev", h]),
            ("ip", vec!["link", "set", h, "up"]),
            (
                "ip",
                vec!["-n", n, "addr", "add", &ns_cidr, "dev", INNER_IF],
            ),
            ("ip", vec!["-n", n, "link", "set", INNER_IF, "up"]),
            ("ip", vec!["-n", n, "link", "set", "lo", "up"]),
            (
                "ip",
                vec!["-n", n, "route", "add", "default", "via", &host_ip_text],
            ),
        ];
        for (program, args) in &steps {
            run(program, args)?;
        }
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the link (what the namespace reaches the host at).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace's address on the link.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// A command that runs `program` inside the namespace; its pid is the program's own
    /// (`ip netns exec` execs it).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Caps what the namespace receives (its downlink) to `kbit` kbit/s with a token bucket on
    /// the host end of the link; a queue of at most `latency_ms` is kept, beyond that packets
    /// are dropped, as on a thin access link.
    pub fn cap_downlink(&self, kbit: u32, latency_ms: u32) -> Result<()> {
        let rate = format!("{kbit}kbit");
        let latency = format!("{latency_ms}ms");
        // A burst of 10 full-size packets: enough for the token bucket at these rates.
        run(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &self.host_if,
                "root",
                "tbf",
                "rate",
                &rate,
                "burst",
                "15kb",
                "latency",
                &latency,
            ],
        )
        .map(|_| ())
    }

    /// Cuts the namespace off (`true`) or lets it back (`false`): an nftables table inside the
    /// namespace drops every packet in and out on its link, except TCP on `control_port` (the
    /// test's chromedriver), so the browser sees its network go silent, as when Wi-Fi drops.
    pub fn set_offline(&self, offline: bool, control_port: u16) -> Result<()> {
        if offline {
            let rules = format!(
                "table netdev {OFFLINE_TABLE} {{\n\
                 \tchain ingress {{ type filter hook ingress device {INNER_IF} priority 0; \
                 policy drop; tcp dport {control_port} accept; meta protocol arp accept; }}\n\
                 \tchain egress {{ type filter hook egress device {INNER_IF} priority 0; \
                 policy drop; tcp sport {control_port} accept; meta protocol arp accept; }}\n\
                 }}\n"
            );
            let path = std::env::temp_dir().join(format!("{}.nft", self.name));
            std::fs::write(&path, rules).context("cannot write the nftables rules")?;
            let path_text = path.display().to_string();
            let result = run(
                "ip",
                &["netns", "exec", &self.name, "nft", "-f", &path_text],
            );
            let _ = std::fs::remove_file(&path);
            result
                .context("cannot cut the namespace off (nftables: apt-get install -y nftables)")?;
        } else {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.name,
                    "nft",
                    "delete",
                    "table",
                    "netdev",
                    OFFLINE_TABLE,
                ],
            )?;
        }
        Ok(())
    }
}

/// Kills what runs in namespace `name`, then deletes it (its veth pair goes with it).
fn destroy(name: &str, host_if: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = run("ip", &["netns", "pids", name])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = run("ip", &["netns", "del", name]);
    if let Some(host_if) = host_if {
        // Normally gone with the namespace; not if a process still held it.
        let _ = run("ip", &["link", "del", host_if]);
    }
}

/// Removes namespaces (and their host interfaces) of test processes that no longer run.
fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some((pid, k)) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('n'))
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !process_alive(pid) {
            destroy(name, Some(&format!("{PREFIX}{pid}h{k}")));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name, Some(&self.host_if));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists(name: &str) -> bool {
        run("ip", &["netns", "list"])
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    }

    #[test]
    fn a_namespace_and_what_runs_in_it_are_gone_after_a_panic() {
        use std::os::unix::process::ExitStatusExt;

        let (name, host_if, mut child) = std::panic::catch_unwind(|| {
            let ns = Netns::new().expect("a namespace (needs root)");
            let child = ns
                .command("sleep")
                .arg("600")
                .spawn()
                .expect("sleep in the namespace");
            assert!(exists(ns.name()));
            std::panic::panic_any((ns.name().to_owned(), ns.host_if.clone(), child));
        })
        .expect_err("the closure panics")
        .downcast::<(String, String, std::process::Child)>()
        .map(|b| *b)
        .expect("the panic carries the names");
        assert!(!exists(&name), "namespace {name} left behind");
        assert!(
            run("ip", &["link", "show", &host_if]).is_err(),
            "interface {host_if} left behind"
        );
        let status = child.wait().expect("reap the child");
        assert_eq!(
            status.signal(),
            Some(9),
            "the process in the namespace was killed"
        );
    }

    #[test]
    fn the_namespace_reaches_the_host_and_can_be_cut_off() {
        let ns = Netns::new().expect("a namespace (needs root)");
        let listener = std::net::TcpListener::bind((ns.host_ip(), 0)).expect("listen");
        let port = listener.local_addr().expect("addr").port().to_string();
        let addr = format!("{}:{port}", ns.host_ip());
        // A TCP connect from inside the namespace, with bash's /dev/tcp (no extra tools).
        let connect = |ns: &Netns| {
            ns.command("timeout")
                .args([
                    "2",
                    "bash",
                    "-c",
                    &format!("exec 3<>/dev/tcp/{}/{port}", ns.host_ip()),
                ])
                .status()
                .expect("bash runs")
                .success()
        };
        assert!(connect(&ns), "no route from the namespace to {addr}");
        ns.set_offline(true, 1).expect("cut off");
        assert!(!connect(&ns), "still connected while offline");
        ns.set_offline(false, 1).expect("back online");
        assert!(connect(&ns), "no connection after coming back");
        ns.cap_downlink(300, 200).expect("tbf");
    }
}
