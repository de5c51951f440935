//! The node's HTTP surface as an operator and a browser see it: probes, metrics, the site API,
//! the OpenAPI document, the status page, and HTTPS when a certificate is configured.

use std::fs;
use std::time::Duration;

use huiyan_tests::{NodeProcess, TestMesh, client};
use serde_json::Value;

#[test]
fn probes_api_openapi_metrics_and_status_page() {
    let mesh = TestMesh::single();
    let mut node = mesh.start("bureau");
    node.wait_ready(Duration::from_secs(20));
    let http = client();
    let get = |path: &str| http.get(node.site.url(path)).send().unwrap();

    assert_eq!(get("/healthz").text().unwrap(), "ok\n");
    let ready: Value = get("/readyz").json().unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["store"], "ok");

    let site: Value = get("/api/v1/site").json().unwrap();
    assert_eq!(site["site"], "bureau");
    assert_eq!(site["role"], "bureau");
    assert_eq!(site["peer_id"], mesh.site("bureau").peer_id.as_str());
    assert_eq!(site["peers"][0]["site"], "hub");
    assert_eq!(
        site["peers"][0]["peer_id"],
        mesh.site("hub").peer_id.as_str()
    );

    // Every /api/v1 route the node answers is in the OpenAPI document.
    let openapi: Value = get("/api/openapi.json").json().unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    assert!(
        openapi["paths"]["/api/v1/site"]["get"].is_object(),
        "{openapi}"
    );
    assert!(openapi["components"]["schemas"]["SiteInfo"].is_object());

    // The status page, Chinese by default, with an English switch.
    let page = get("/");
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().unwrap();
    assert!(html.contains("lang=\"zh-CN\""), "{html}");
    let app = get("/i18n.js").text().unwrap();
    assert!(
        app.contains("Site status") && app.contains("站点状态"),
        "{app}"
    );
    assert_eq!(get("/no-such-page").status(), 404);

    let metrics = get("/metrics").text().unwrap();
    for expected in [
        "huiyan_build_info{version=\"0.1.0\",site=\"bureau\",role=\"bureau\"} 1",
        "huiyan_http_requests_total{route=\"/api/v1/site\",status=\"200\"} 1",
        "huiyan_http_requests_total{route=\"/*static\",status=\"404\"} 1",
        "huiyan_uptime_seconds ",
        "huiyan_store_size_bytes ",
        "huiyan_starts 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in:\n{metrics}"
        );
    }
}

#[test]
fn serves_https_with_the_configured_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mesh = TestMesh::single();
    let site = mesh.site("bureau");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = mesh.dir.path();
    fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let text = fs::read_to_string(&site.config).unwrap();
    fs::write(
        &site.config,
        text + "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    )
    .unwrap();

    let _node = NodeProcess::start(site, &[]);
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(root)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/readyz", site.web.port());
    let mut last = String::new();
    for _ in 0..100 {
        match https.get(&url).send() {
            Ok(r) if r.status() == 200 => return,
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = format!("{e:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no HTTPS answer on {url}: {last}");
}

#[test]
fn a_bad_certificate_is_refused_at_start() {
    let mesh = TestMesh::single();
    let site = mesh.site("bureau");
    fs::write(mesh.dir.path().join("cert.pem"), "not a certificate").unwrap();
    fs::write(mesh.dir.path().join("key.pem"), "not a key").unwrap();
    let text = fs::read_to_string(&site.config).unwrap();
    fs::write(
        &site.config,
        text + "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    )
    .unwrap();
    let mut node = NodeProcess::start(site, &[]);
    let status = huiyan_tests::wait_exit(&mut node.child, Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(2), "{}", node.log_text());
    assert!(node.log_text().contains("TLS: "), "{}", node.log_text());
}
