//! `huiyan demo` brings every pilot site to ready on loopback and stops them all on SIGTERM,
//! leaving no process behind.

use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use huiyan_tests::{free_port_block, http_status, huiyan_bin, wait_exit};

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
fn start_demo(dir: &str) -> (Child, Lines<BufReader<ChildStdout>>, u16) {
    let base = free_port_block(80);
    let mut demo = Command::new(huiyan_bin())
        .args(["demo", "--dir", dir, "--base-port", &base.to_string()])
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
    let (mut demo, mut lines, base) = start_demo(&dir_str);
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
    let (mut demo, mut lines, _) = start_demo(&dir_str);
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
