//! Benchmark: the resident memory of one idle node.
//!
//! `cargo build --release -p huiyan && cargo run --release -p huiyan-tests --bin bench-memory`
//!
//! Starts a bureau node (release build), waits until ready, serves a few requests of each kind,
//! lets it idle for 10 s, then prints one JSON line with its resident set size (VmRSS) and peak
//! (VmHWM). The goal is at most 40 MiB.

use std::time::Duration;

use huiyan_tests::{TestMesh, client};

/// Reads a `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .expect("field in /proc status")
}

fn main() {
    let mesh = TestMesh::single();
    let mut node = mesh.start("bureau");
    node.wait_ready(Duration::from_secs(30));
    let http = client();
    for path in [
        "/",
        "/app.js",
        "/api/v1/site",
        "/api/openapi.json",
        "/metrics",
        "/readyz",
    ] {
        for _ in 0..20 {
            http.get(node.site.url(path))
                .send()
                .expect("request")
                .bytes()
                .expect("body");
        }
    }
    std::thread::sleep(Duration::from_secs(10));
    let pid = node.child.id();
    let rss = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    println!(
        "{}",
        serde_json::json!({
            "bench": "idle-node-memory",
            "rss_mib": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
            "peak_rss_mib": (hwm as f64 / 1024.0 * 10.0).round() / 10.0,
            "goal_mib": 40,
        })
    );
    let _ = node.stop(Duration::from_secs(5));
}
