//! `huiyan run`: start one node from its site config, serve until SIGTERM or SIGINT, stop cleanly.
//!
//! Start-up is all-or-nothing: config, roster, key, TLS, store and listeners are all checked
//! before the node tells systemd it is ready; any failure exits with code 2 and one clear
//! message, leaving nothing half-started.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use huiyan_mesh::identity;
use huiyan_mesh::replica::Mesh;
use huiyan_mesh::store::Store;
use huiyan_mesh::swarm::{Fault, MeshConfig, RelayLimits, Timing};
use huiyan_mesh::sync::SyncConfig;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{Instrument, error, info, warn};

use crate::config::{self, Loaded};
use crate::error::Error;
use crate::metrics::{BuildLabels, Metrics};
use crate::node::{Health, Node};
use crate::{http, systemd};

/// How long in-flight requests get to finish once a stop is asked for.
const GRACE: Duration = Duration::from_secs(3);
/// How often the supervisor checks health when systemd asks for no watchdog.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often ended sessions are removed from the store.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How often the staffing of this node's rooms is checked.
const PRESENCE_EVERY: Duration = Duration::from_secs(10);

pub fn run(config_path: &Path) -> Result<(), Error> {
    let Loaded { config, roster } = config::load(config_path).map_err(Error::Config)?;

    let (keypair, peer_id, me) = identity(&config, &roster)?;

    let store = Store::open(&config.data_dir)?;
    let starts = store.bump_counter("starts")?;

    let web = TcpListener::bind(config.listen.web)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::Bind {
            what: "web",
            addr: config.listen.web,
            reason: e.to_string(),
        })?;

    let metrics = Metrics::new(BuildLabels {
        version: env!("CARGO_PKG_VERSION").into(),
        site: config.site.clone(),
        role: me.role.to_string(),
    });
    metrics
        .starts
        .set(i64::try_from(starts).unwrap_or(i64::MAX));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))?;
    let media = runtime.block_on(crate::api::start_media(
        &config, &roster, &keypair, &metrics,
    ))?;
    let org = crate::accounts::OrgTree::from_roster(&roster);
    let sessions = crate::auth::Sessions::new(store.clone());
    let hotline_metrics = crate::hotline::HotlineMetrics::default();
    if let Ok(mut registry) = metrics.registry.lock() {
        hotline_metrics.register(&mut registry);
    }
    let node = Arc::new(Node {
        config,
        roster,
        me,
        peer_id,
        store,
        metrics,
        health: Health::default(),
        started: Instant::now(),
        mesh: OnceLock::new(),
        media,
        org,
        views: crate::views::Views::default(),
        sessions,
        signin_limit: crate::auth::SignInLimiter::default(),
        desk: crate::api::mediation::Desk::default(),
        recordings: crate::api::recording::Recordings::default(),
        hotline_live: crate::hotline::dispatch::Liveness::default(),
        hotline_metrics,
    });

    let span = tracing::info_span!("node", site = %node.config.site);
    runtime.block_on(serve(node, web, keypair).instrument(span))
}

/// This node's key and roster entry: the key must exist and be the one the roster names for
/// this site.
pub fn identity(
    config: &config::SiteConfig,
    roster: &huiyan_mesh::roster::Roster,
) -> Result<
    (
        identity::Keypair,
        huiyan_mesh::identity::PeerId,
        huiyan_mesh::roster::Site,
    ),
    Error,
> {
    if !config.key_file.exists() {
        return Err(Error::NoKey {
            key_file: config.key_file.clone(),
        });
    }
    let keypair = identity::load_key_file(&config.key_file)?;
    let peer_id = keypair.public().to_peer_id();
    // `config::load` made sure the site is in the roster.
    let me = roster.site(&config.site).cloned();
    let me =
        me.ok_or_else(|| Error::Runtime(format!("site {} is not in the roster", config.site)))?;
    match me.peer_id {
        None => {
            return Err(Error::NotEnrolled {
                site: config.site.clone(),
                key_file: config.key_file.clone(),
                peer_id: peer_id.to_base58(),
                roster: config.roster.clone(),
            });
        }
        Some(expected) if expected != peer_id => {
            return Err(Error::WrongKey {
                site: config.site.clone(),
                key_file: config.key_file.clone(),
                actual: peer_id.to_base58(),
                expected: expected.to_base58(),
                roster: config.roster.clone(),
            });
        }
        Some(_) => {}
    }

    Ok((keypair, peer_id, me))
}

async fn serve(node: Arc<Node>, web: TcpListener, key: identity::Keypair) -> Result<(), Error> {
    let mesh = start_mesh(&node, key).await?;

    let tls = match &node.config.tls {
        Some(tls) => Some(
            RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|e| Error::Tls(format!("{}: {e}", tls.cert.display())))?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", node.config.listen.web);

    // The views hold every record before the first request is served.
    let read = tokio::task::block_in_place(|| node.views.catch_up(&mesh))?;
    info!(
        records = read,
        accounts = node.views.accounts().len(),
        "views built from the logs"
    );
    tokio::spawn(crate::views::follow(node.clone(), mesh.clone()));
    tokio::spawn(sweep_sessions(node.clone()));
    let known = node.views.rooms().of_site(&node.config.site).to_vec();
    if crate::rooms::announce(&mesh, &node.config, &known).await? {
        info!(
            rooms = node.config.rooms.len(),
            "announced this site's rooms"
        );
    }
    tokio::spawn(watch_presence(node.clone()));
    tokio::spawn(crate::hotline::dispatch::run(node.clone()));

    let handle = Handle::new();
    let app = http::router(node.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server = match tls {
        Some(tls) => tokio::spawn(
            axum_server::from_tcp_rustls(web, tls)
                .handle(handle.clone())
                .serve(app),
        ),
        None => tokio::spawn(axum_server::from_tcp(web).handle(handle.clone()).serve(app)),
    };
    node.health.set(
        "store",
        node.store.check_health().map_err(|e| e.to_string()),
    );
    node.health.set("web", Ok(()));

    let role = node.me.role;
    info!(%url, %role, peer_id = %node.peer_id, "node ready");
    systemd::ready(&format!("serving {} ({role}) on {url}", node.config.site));

    let outcome = supervise(&node, &server).await;

    // Stop: refuse new work, let requests in flight finish, make the store durable.
    systemd::stopping();
    info!("stopping");
    handle.graceful_shutdown(Some(GRACE));
    if tokio::time::timeout(GRACE + Duration::from_secs(1), server)
        .await
        .is_err()
    {
        warn!("the web server did not stop in time; leaving it");
    }
    mesh.shutdown().await;
    node.store.flush()?;
    info!("stopped");
    outcome
}

/// Starts the mesh on `listen.mesh` and registers its metrics; a port in use is a start-up
/// error like any other.
async fn start_mesh(node: &Arc<Node>, key: identity::Keypair) -> Result<Mesh, Error> {
    let cfg = MeshConfig {
        key,
        site: node.config.site.clone(),
        roster: node.roster.clone(),
        store: node.store.clone(),
        listen: node.config.listen.mesh,
        sync: SyncConfig::default(),
        timing: Timing::default(),
        // No LAN to discover on loopback (tests, the demo); see `MeshConfig::mdns`.
        mdns: !node.config.listen.mesh.ip().is_loopback(),
        relay: RelayLimits::default(),
        fault: Fault::None,
    };
    let (mesh, _task) = huiyan_mesh::swarm::start(cfg).await?;
    if let Ok(mut registry) = node.metrics.registry.lock() {
        mesh.register_metrics(&mut registry);
    }
    node.health.set("mesh", Ok(()));
    let _ = node.mesh.set(mesh.clone());
    Ok(mesh)
}

/// Records a room as unstaffed once its mediators' consoles stop saying they are there.
async fn watch_presence(node: Arc<Node>) {
    let mut every = tokio::time::interval(PRESENCE_EVERY);
    loop {
        every.tick().await;
        crate::api::mediation::publish_presence(&node).await;
    }
}

/// Removes ended sign-in sessions from the store now and then.
async fn sweep_sessions(node: Arc<Node>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        let n = node.clone();
        let _ = tokio::task::spawn_blocking(move || n.sessions.sweep()).await;
    }
}

/// The main loop: checks health, pings the watchdog while healthy, returns on SIGTERM/SIGINT.
async fn supervise(
    node: &Node,
    server: &tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<(), Error> {
    let signal_err = |e: std::io::Error| Error::Runtime(format!("cannot watch signals: {e}"));
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let watchdog = systemd::watchdog_interval();
    let every = watchdog.map_or(CHECK_EVERY, |w| (w / 2).min(CHECK_EVERY));
    let mut ticks = tokio::time::interval(every);
    let mut was_ready = true;

    loop {
        tokio::select! {
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
            _ = ticks.tick() => {}
        }
        if server.is_finished() {
            error!("the web server stopped on its own");
            return Err(Error::Runtime("the web server stopped unexpectedly".into()));
        }
        node.health.set(
            "store",
            node.store.check_health().map_err(|e| e.to_string()),
        );
        let (ready, checks) = node.health.report();
        if ready != was_ready {
            let state = if ready {
                "ready".to_owned()
            } else {
                format!("not ready: {checks:?}")
            };
            warn!(%state, "readiness changed");
            systemd::status(&state);
            was_ready = ready;
        }
        // The watchdog hears from us only while the loop runs and the node is healthy.
        if ready && watchdog.is_some() {
            systemd::watchdog_ping();
        }
    }
}
