//! Helpers shared by the process-level scenarios: the demo pilot and chromedriver as child
//! processes that stop when the test ends.

#![allow(dead_code)] // each scenario uses a subset

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// scenic-1 is site 5 of the roster; the demo gives it `base + 50` (web), `+53` (WebRTC).
pub const SCENIC_1: u16 = 5;
/// The mediation room of scenic-1 (from its site config).
pub const ROOM: &str = "scenic-1-mediation";

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A base port whose 80 following ports this test may use.
pub fn base_port() -> u16 {
    huiyan_tests::free_port_block(80)
}

/// Start the demo pilot and wait until every node is ready.
pub fn start_demo(dir: &std::path::Path, base: u16) -> Result<Guard> {
    let mut child = Command::new(huiyan_tests::huiyan_bin())
        .args(["demo", "--dir"])
        .arg(dir)
        .args(["--base-port", &base.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start `huiyan demo`")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let guard = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("sites ready") => return Ok(guard),
            Ok(_) => {}
            Err(_) => bail!("the demo was not ready within 90 s; see {}", dir.display()),
        }
    }
}

pub fn start_chromedriver(port: u16) -> Result<Guard> {
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start chromedriver: apt-get install -y chromium chromium-driver")?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("chromedriver did not listen on {port} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(guard)
}
