//! `huiyan demo` brings every pilot site to ready on loopback and stops them all on SIGTERM,
//! leaving no process behind; with `--link` its linked sites still converge, and a bad link spec
//! is refused with a message.

use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use huiyan_tests::links::{append_as, eventually, records_as};
use huiyan_tests::{free_port_block, http_status, huiyan_bin, sign_in, wait_exit};
use serde_json::json;

/// PIDs of `huiyan run` processes whose command line mentions `dir`.
fn nodes_under(dir: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" run --config ") && cmdline.contains(dir) {
            pids.push(pid);
        }
    }
    pids
}

/// Kills the demo if the test ends early (a failed assertion), so no node outlives the test.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let pid = nix::unistd::Pid::from_raw(self.0 as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Starts `huiyan demo` in `dir` on a free block of ports: the demo, its stdout lines, the base.
fn start_demo(dir: &str, extra: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>, u16) {
    let base = free_port_block(80);
    let mut demo = Command::new(huiyan_bin())
        .args(["demo", "--dir", dir, "--base-port", &base.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    (demo, lines, base)
}

#[test]
fn demo_runs_every_site_and_stops_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap().to_owned();
    let (mut demo, mut lines, base) = start_demo(&dir_str, &[]);
    let _guard = KillOnDrop(demo.id());

    // The table lists every site once ready.
    let mut table = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        table.push(line);
    }
    let text = table.join("\n");
    assert!(text.contains("8 sites ready"), "{text}");
    for site in [
        "hub", "bureau", "office-1", "office-2", "office-3", "scenic-1", "scenic-2",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{site} "))),
            "{site}: {text}"
        );
    }
    for i in 0..8u16 {
        let web = SocketAddr::from(([127, 0, 0, 1], base + 10 * i));
        assert_eq!(http_status(web, "/readyz"), Some(200), "site {i} at {web}");
    }
    assert_eq!(nodes_under(&dir_str).len(), 8);

    // SIGTERM to the demo stops every node.
    let pid = nix::unistd::Pid::from_raw(demo.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut demo, Duration::from_secs(10)).expect("demo stops");
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "All nodes stopped."), "{rest:?}");
    assert!(
        nodes_under(&dir_str).is_empty(),
        "nodes left: {:?}",
        nodes_under(&dir_str)
    );
}

#[test]
fn nodes_die_with_a_killed_demo() {
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap().to_owned();
    let (mut demo, mut lines, _) = start_demo(&dir_str, &[]);
    let _guard = KillOnDrop(demo.id());
    assert!(lines.any(|l| l.unwrap().starts_with("Press Ctrl-C")));
    demo.kill().unwrap();
    demo.wait().unwrap();
    for _ in 0..50 {
        if nodes_under(&dir_str).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nodes outlived a killed demo: {:?}", nodes_under(&dir_str));
}

/// Reads the demo's table up to "Press Ctrl-C".
fn read_table(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    let mut table = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        table.push(line);
    }
    table.join("\n")
}

#[test]
fn a_linked_scenic_site_still_converges() {
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap().to_owned();
    let (mut demo, mut lines, base) =
        start_demo(&dir_str, &["--link", "scenic-*=256kbit,300ms,2%"]);
    let _guard = KillOnDrop(demo.id());
    let text = read_table(&mut lines);

    // The table says which sites sit behind an emulated link.
    let row = |site: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{site} ")))
            .unwrap_or_else(|| panic!("{site} missing: {text}"))
            .to_owned()
    };
    for site in ["scenic-1", "scenic-2", "scenic-3"] {
        assert!(
            row(site).contains("256 kbit/s, 300 ms RTT, 2% loss"),
            "{text}"
        );
    }
    assert!(!row("hub").contains("kbit/s"), "{text}");

    // Records written on both sides of the thin link reach the other side, written and read by
    // the demo admin (an account of the hub, which reaches scenic-1 over the link first).
    let hub = SocketAddr::from(([127, 0, 0, 1], base));
    let scenic = SocketAddr::from(([127, 0, 0, 1], base + 50));
    let admin = |web| sign_in(web, "admin", "huiyan-demo");
    let hub_token = admin(hub).unwrap();
    let mut scenic_token = None;
    let signed_in = eventually(Duration::from_secs(120), || {
        scenic_token = admin(scenic).ok();
        scenic_token.is_some()
    });
    assert!(signed_in, "the demo admin cannot sign in at scenic-1");
    let scenic_token = scenic_token.unwrap();
    append_as(
        scenic,
        &scenic_token,
        "mediation",
        "case",
        json!({"case": "scenic-1 over the link"}),
    )
    .unwrap();
    append_as(
        hub,
        &hub_token,
        "public",
        "notice",
        json!({"notice": "hub to every site"}),
    )
    .unwrap();
    let converged = eventually(Duration::from_secs(120), || {
        records_as(hub, &hub_token, "scenic-1").is_ok_and(|r| r.len() == 1)
            && records_as(scenic, &scenic_token, "hub").is_ok_and(|r| r.len() == 1)
    });
    let log = std::fs::read_to_string(dir.path().join("scenic-1.log")).unwrap_or_default();
    assert!(
        converged,
        "no convergence over the link; scenic-1 log:\n{log}"
    );

    let pid = nix::unistd::Pid::from_raw(demo.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut demo, Duration::from_secs(10)).expect("demo stops");
    assert!(status.success(), "{status}");
}

#[test]
fn bad_link_specs_are_refused_with_a_message() {
    for (flag, says) in [
        ("scenic-*=fast", "`fast` is not understood"),
        ("scenic-*", "no `=`"),
        ("nowhere-*=1mbit", "matches no site"),
    ] {
        let out = Command::new(huiyan_bin())
            .args(["demo", "--base-port", "1", "--link", flag])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
}
