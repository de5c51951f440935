//! The harness for process-level tests and benchmarks: builds throw-away meshes of real
//! `huiyan` processes on loopback, each with its own keys, roster, site config and data dir.
//!
//! The binary under test is `$HUIYAN_BIN`, or `target/<profile>/huiyan` beside the test
//! executable; `tests/run` builds it before running the tests.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use huiyan_mesh::identity::generate_key_file;

pub mod api;
pub mod browser;
pub mod links;
pub mod netns;
pub mod relay;
pub mod synth;

/// The `huiyan` binary under test.
pub fn huiyan_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HUIYAN_BIN") {
        return PathBuf::from(bin);
    }
    // Test executables live in target/<profile>/deps, benchmarks in target/<profile>; the
    // binary under test in target/<profile>.
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe.parent().expect("the executable is in a directory");
    let candidates = [
        dir.join("huiyan"),
        dir.parent().unwrap_or(dir).join("huiyan"),
    ];
    let found = candidates.iter().find(|p| p.is_file());
    let bin = found.unwrap_or_else(|| {
        panic!(
            "{} is missing: run `cargo build -p huiyan` first (tests/run does; add --release for \
             a benchmark), or set HUIYAN_BIN",
            candidates[1].display()
        )
    });
    bin.clone()
}

/// Runs `huiyan` with `args` to completion.
pub fn huiyan(args: &[&str]) -> Output {
    Command::new(huiyan_bin())
        .args(args)
        .output()
        .expect("huiyan runs")
}

/// Where test ports come from: below Linux's ephemeral range (32768 and up), so that an outgoing
/// connection of some other process cannot take a port between our probe and the node's bind.
const TEST_PORTS: std::ops::Range<u16> = 10_000..32_000;
/// Blocks handed out by this process so far; each call gets a block of its own.
static NEXT_BLOCK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// `n` distinct ports, free for both TCP and UDP a moment ago.
pub fn free_ports(n: usize) -> Vec<u16> {
    let len = u16::try_from(n).expect("a test asks for fewer than 65536 ports");
    let first = free_port_block(len);
    (first..first + len).collect()
}

/// The first of `len` consecutive ports that were all free (TCP and UDP) a moment ago.
///
/// Blocks are tried from an offset that depends on the process id and on how many blocks this
/// process took before, so parallel tests and test processes start far apart.
pub fn free_port_block(len: u16) -> u16 {
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let stride = u32::from(len).max(1);
    let blocks = span / stride;
    assert!(
        blocks > 0,
        "a block of {len} ports does not fit the test range"
    );
    let start = std::process::id().wrapping_mul(7919)
        + NEXT_BLOCK.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 131;
    for k in 0..blocks {
        let block = (start + k) % blocks;
        let first = TEST_PORTS.start + u16::try_from(block * stride).expect("within the range");
        let free = (first..first + len).all(|p| {
            TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        });
        if free {
            return first;
        }
    }
    panic!("no {len} consecutive free ports in {TEST_PORTS:?}");
}

/// The admin account every [`TestMesh`] site has.
pub const ADMIN_USER: &str = "test-admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// `huiyan user add` on a stopped node.
pub fn add_user(config: &std::path::Path, username: &str, password: &str, grants: &[String]) {
    let mut command = Command::new(huiyan_bin());
    command.args(["user", "add", "--config"]).arg(config).args([
        "--username",
        username,
        "--name",
        username,
        "--password-stdin",
    ]);
    for g in grants {
        command.args(["--grant", g]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("huiyan user add runs");
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}").expect("write the password");
    }
    let out = child.wait_with_output().expect("huiyan user add runs");
    assert!(
        out.status.success(),
        "huiyan user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs in at the node on `web`; returns the session token (for `Authorization: Bearer`).
pub fn sign_in(web: SocketAddr, username: &str, password: &str) -> anyhow::Result<String> {
    let resp = client()
        .post(format!("http://{web}/api/v1/session"))
        .json(&serde_json::json!({ "username": username, "password": password }))
        .send()?;
    let status = resp.status();
    let v: serde_json::Value = resp.json()?;
    anyhow::ensure!(status.is_success(), "sign-in answered {status}: {v}");
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token in {v}"))
}

/// A session of the test admin at the node on `web`, signed in once and reused.
pub fn admin_token(web: SocketAddr) -> anyhow::Result<String> {
    static TOKENS: std::sync::Mutex<Vec<(SocketAddr, String)>> = std::sync::Mutex::new(Vec::new());
    let mut tokens = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, t)) = tokens.iter().find(|(w, _)| *w == web) {
        return Ok(t.clone());
    }
    let token = sign_in(web, ADMIN_USER, ADMIN_PASSWORD)?;
    tokens.push((web, token.clone()));
    Ok(token)
}

/// One site of a [`TestMesh`].
#[derive(Debug, Clone)]
pub struct TestSite {
    pub id: String,
    pub role: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    pub peer_id: String,
    pub web: SocketAddr,
    pub mesh: SocketAddr,
    pub media: SocketAddr,
    pub rtc: SocketAddr,
}

impl TestSite {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.web)
    }
}

/// A throw-away mesh: a temp dir with a roster and one site config, key and data dir per site.
#[derive(Debug)]
pub struct TestMesh {
    pub dir: tempfile::TempDir,
    pub roster: PathBuf,
    pub sites: Vec<TestSite>,
}

impl TestMesh {
    /// A mesh of the given `(id, role)` sites; the first `hub` is the hub.
    pub fn new(sites: &[(&str, &str)]) -> TestMesh {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(4 * sites.len());
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut roster = String::new();
        let mut out = Vec::new();
        for (i, (id, role)) in sites.iter().enumerate() {
            let data_dir = dir.path().join(id);
            fs::create_dir_all(&data_dir).expect("data dir");
            let key_file = data_dir.join("node.key");
            let peer_id = generate_key_file(&key_file).expect("keygen").to_base58();
            let [web, mesh, media, rtc] = [0, 1, 2, 3].map(|k| addr(ports[4 * i + k]));
            let scopes = match *role {
                "hub" | "bureau" => r#"["*"]"#.to_owned(),
                "office" => format!(
                    r#"["public", "accounts", "mediation", "hotline", "mediation/{id}",
                        "correction/{id}", "audit/{id}"]"#
                ),
                _ => format!(
                    r#"["public", "accounts", "mediation", "hotline", "mediation/{id}",
                        "audit/{id}"]"#
                ),
            };
            roster.push_str(&format!(
                "[[site]]\nid = \"{id}\"\nname_zh = \"测试{i}\"\nname_en = \"Test {i}\"\n\
                 role = \"{role}\"\npeer_id = \"{peer_id}\"\nmesh = \"{mesh}\"\n\
                 media = \"{media}\"\nweb = \"{web}\"\nscopes = {scopes}\n\n"
            ));
            let config = dir.path().join(format!("{id}.toml"));
            fs::write(
                &config,
                format!(
                    "site = \"{id}\"\nroster = \"roster.toml\"\ndata_dir = \"{id}\"\n\n\
                     [listen]\nweb = \"{web}\"\nmesh = \"{mesh}\"\nmedia = \"{media}\"\n\
                     rtc = \"{rtc}\"\n\n\
                     [[rooms]]\nid = \"{id}-mediation\"\nkind = \"mediation\"\n\
                     name_zh = \"调解室{i}\"\nname_en = \"Mediation room {i}\"\n"
                ),
            )
            .expect("write site config");
            out.push(TestSite {
                id: id.to_string(),
                role: role.to_string(),
                config,
                data_dir,
                key_file,
                peer_id,
                web,
                mesh,
                media,
                rtc,
            });
        }
        let roster_path = dir.path().join("roster.toml");
        fs::write(&roster_path, roster).expect("write roster");
        // The test admin, the same account on every site, admin of every site.
        let grants: Vec<String> = out.iter().map(|s| format!("admin@{}", s.id)).collect();
        for site in &out {
            add_user(&site.config, ADMIN_USER, ADMIN_PASSWORD, &grants);
        }
        TestMesh {
            dir,
            roster: roster_path,
            sites: out,
        }
    }

    /// A mesh of one bureau and the hub it needs; tests use the bureau.
    pub fn single() -> TestMesh {
        TestMesh::new(&[("bureau", "bureau"), ("hub", "hub")])
    }

    pub fn site(&self, id: &str) -> &TestSite {
        self.sites
            .iter()
            .find(|s| s.id == id)
            .expect("site in the test mesh")
    }

    /// Starts the node of site `id`.
    pub fn start(&self, id: &str) -> NodeProcess {
        NodeProcess::start(self.site(id), &[])
    }

    /// Starts the nodes of `ids` and waits until each is ready (30 s each at most).
    pub fn start_ready(&self, ids: &[&str]) -> Vec<NodeProcess> {
        let mut nodes: Vec<_> = ids.iter().map(|id| self.start(id)).collect();
        for n in &mut nodes {
            n.wait_ready(Duration::from_secs(30));
        }
        nodes
    }
}

/// The text of a PDF, as Poppler's `pdftotext` reads it (poppler-utils, installed by
/// `tests/run`).
pub fn pdf_text(pdf: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), pdf).expect("the PDF written");
    let out = Command::new("pdftotext")
        .arg(file.path())
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils, installed by tests/run)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `huiyan run` process, killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    pub child: Child,
    pub site: TestSite,
    pub log: PathBuf,
}

impl NodeProcess {
    /// Starts the node of `site` with extra environment variables; its output goes to a log
    /// file beside the site config.
    pub fn start(site: &TestSite, env: &[(&str, &str)]) -> NodeProcess {
        let log = site.config.with_extension("log");
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new(huiyan_bin());
        command
            .args(["run", "--config"])
            .arg(&site.config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start huiyan");
        NodeProcess {
            child,
            site: site.clone(),
            log,
        }
    }

    /// Waits until `/readyz` answers 200; panics with the node's log if it does not in `within`.
    pub fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "node {} exited ({status}) before ready:\n{}",
                    self.site.id,
                    self.log_text()
                );
            }
            if http_status(self.site.web, "/readyz") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "node {} not ready within {within:?}:\n{}",
            self.site.id,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the node");
    }

    /// Sends SIGTERM and waits up to `within` for the exit; `None` if it did not exit.
    pub fn stop(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        wait_exit(&mut self.child, within)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `within` for `child` to exit.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The HTTP status of `GET path` on `addr`, or `None` if nothing answers.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// An HTTP client for plain-HTTP nodes on loopback.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}
