//! Prometheus metrics of the node, served at `/metrics` in the OpenMetrics text format.
//!
//! Other parts of the node (and the mesh and media crates, through the node) register their own
//! metrics in [`Metrics::registry`] at start-up.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub site: String,
    pub role: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/api/v1/site`), never the raw path, so labels stay bounded.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Mutex<Registry>,
    pub uptime_seconds: Gauge<f64, AtomicU64>,
    pub store_size_bytes: Gauge,
    pub starts: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    /// Sign-ins by outcome (`ok`, `failed`).
    pub sign_ins: Family<OutcomeLabel, Counter>,
    /// Accounts in the accounts view.
    pub accounts: Gauge,
}

impl Metrics {
    pub fn new(build: BuildLabels) -> Metrics {
        let mut registry = Registry::with_prefix("huiyan");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&build).set(1);
        registry.register(
            "build_info",
            "Version, site and role of this node",
            build_info,
        );

        let uptime_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "uptime_seconds",
            "Seconds since the node started",
            uptime_seconds.clone(),
        );
        let store_size_bytes = Gauge::default();
        registry.register(
            "store_size_bytes",
            "Bytes the store takes on disk",
            store_size_bytes.clone(),
        );
        let starts = Gauge::default();
        registry.register(
            "starts",
            "How many times this node's store was opened",
            starts.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );

        let sign_ins = Family::<OutcomeLabel, Counter>::default();
        registry.register("sign_ins", "Staff sign-ins by outcome", sign_ins.clone());
        let accounts = Gauge::default();
        registry.register(
            "accounts",
            "Staff accounts known to this node",
            accounts.clone(),
        );

        Metrics {
            registry: Mutex::new(registry),
            uptime_seconds,
            store_size_bytes,
            starts,
            http_requests,
            sign_ins,
            accounts,
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
