//! systemd integration against a notify socket the test binds: READY=1 with a status line once
//! serving, WATCHDOG=1 pings at the interval asked for, STOPPING=1 and a clean exit on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use huiyan_tests::{NodeProcess, TestMesh, http_status};
use nix::sys::signal::Signal;

/// Collects the notify messages the node sends within `within`.
fn receive(socket: &UnixDatagram, within: Duration) -> Vec<String> {
    receive_until(socket, within, |_| false)
}

/// Collects notify messages until one satisfies `last`, or `within` passes.
fn receive_until(socket: &UnixDatagram, within: Duration, last: fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let Ok(n) = socket.recv(&mut buf) else { break };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = last(&message);
        messages.push(message);
        if done {
            break;
        }
    }
    messages
}

fn is_ready(message: &str) -> bool {
    message.lines().any(|l| l == "READY=1")
}

#[test]
fn readiness_watchdog_and_stopping_reach_systemd() {
    let mesh = TestMesh::single();
    let socket_path = mesh.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let env = [
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let mut node = NodeProcess::start(mesh.site("bureau"), &env);

    // READY=1 arrives with a status line, and only once the web listener answers.
    let first = receive_until(&socket, Duration::from_secs(20), is_ready);
    let ready = first.iter().find(|m| is_ready(m));
    let ready = ready.unwrap_or_else(|| panic!("no READY=1 in {first:?}:\n{}", node.log_text()));
    assert!(
        ready.contains("STATUS=serving bureau (bureau) on http://"),
        "{ready}"
    );
    assert_eq!(http_status(node.site.web, "/readyz"), Some(200));

    // The watchdog (400 ms) is pinged at least every 200 ms while healthy.
    let pings = receive(&socket, Duration::from_secs(2));
    let count = pings
        .iter()
        .filter(|m| m.trim_end() == "WATCHDOG=1")
        .count();
    assert!(count >= 6, "only {count} watchdog pings in 2 s: {pings:?}");

    // SIGTERM: STOPPING=1, then a clean exit within 5 s.
    node.signal(Signal::SIGTERM);
    let started = Instant::now();
    let status = huiyan_tests::wait_exit(&mut node.child, Duration::from_secs(5));
    let status = status.unwrap_or_else(|| panic!("not stopped in 5 s:\n{}", node.log_text()));
    assert!(status.success(), "{status}: {}", node.log_text());
    assert!(started.elapsed() < Duration::from_secs(5));
    let last = receive(&socket, Duration::from_millis(200));
    assert!(last.iter().any(|m| m.contains("STOPPING=1")), "{last:?}");
}

#[test]
fn sigint_stops_cleanly_and_no_watchdog_without_systemd_asking() {
    let mesh = TestMesh::single();
    let socket_path = mesh.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut node = NodeProcess::start(
        mesh.site("bureau"),
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let messages = receive_until(&socket, Duration::from_secs(20), is_ready);
    assert!(messages.iter().any(|m| is_ready(m)), "{messages:?}");
    let later = receive(&socket, Duration::from_millis(1500));
    assert!(!later.iter().any(|m| m.contains("WATCHDOG=1")), "{later:?}");

    node.signal(Signal::SIGINT);
    let status = huiyan_tests::wait_exit(&mut node.child, Duration::from_secs(5)).expect("stops");
    assert!(status.success(), "{}", node.log_text());
    assert!(node.log_text().contains("stopped"), "{}", node.log_text());
}
