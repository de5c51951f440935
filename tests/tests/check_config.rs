//! `huiyan check-config`: every shipped file passes; bad files get every error at once, each
//! with file, line, field and a hint, and exit code 2.

use std::fs;
use std::path::Path;

use huiyan_tests::{TestMesh, huiyan};

fn workspace_file(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .display()
        .to_string()
}

/// Runs check-config on `paths`, returning (exit code, stderr).
fn check(paths: &[&str]) -> (i32, String) {
    let mut args = vec!["check-config"];
    args.extend_from_slice(paths);
    let out = huiyan(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_site_config_passes() {
    let out = huiyan(&["check-config", &workspace_file("site-configs")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("9 file(s) checked, no error"), "{stdout}");
}

#[test]
fn reports_every_error_of_a_site_config_at_once() {
    let mesh = TestMesh::single();
    let site = mesh.site("bureau");
    let text = fs::read_to_string(&site.config).unwrap();
    let port = site.mesh.port();
    let bad = "uplink_kbps = \"fast\"\n".to_owned()
        + &text
            .replace("data_dir", "data_dri")
            .replace(&site.media.to_string(), &format!("127.0.0.1:{port}"))
            .replace(&site.rtc.to_string(), "not-an-address")
        + "[tls]\ncert = \"c.pem\"\n";
    fs::write(&site.config, bad).unwrap();

    let (code, err) = check(&[site.config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let file = site.config.display().to_string();
    for expected in [
        format!("{file}:4:1: error: `data_dri`: unknown key `data_dri`"),
        "hint: did you mean `data_dir`?".to_owned(),
        "`listen.media`: port".to_owned(),
        "`listen.rtc`: expected an address with a port".to_owned(),
        "`uplink_kbps`: expected a whole number".to_owned(),
        "`tls.key`: missing required field".to_owned(),
        "the configuration has 5 error(s):".to_owned(),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn reports_roster_problems_with_lines() {
    let mesh = TestMesh::new(&[
        ("hub", "hub"),
        ("scenic-1", "scenic"),
        ("scenic-2", "scenic"),
    ]);
    let text = fs::read_to_string(&mesh.roster).unwrap();
    let s2 = mesh.site("scenic-2");
    let s1 = mesh.site("scenic-1");
    let bad = text
        .replace("id = \"scenic-2\"", "id = \"scenic-1\"")
        .replace(&s2.web.to_string(), &s1.web.to_string())
        .replace(&s2.peer_id, "12D3KooWnotapeerid")
        .replace("role = \"hub\"", "role = \"province\"");
    fs::write(&mesh.roster, bad).unwrap();

    let (code, err) = check(&[mesh.roster.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for expected in [
        "`site[0].role`: expected one of \"hub\"",
        "`site[2].id`: site id `scenic-1` is listed twice",
        "`site[2].web`: address",
        "`site[2].peer_id`: `12D3KooWnotapeerid` is not a PeerId",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let roster = mesh.roster.display().to_string();
    assert!(
        err.lines()
            .filter(|l| l.starts_with(&format!("{roster}:")))
            .count()
            >= 4,
        "{err}"
    );
}

#[test]
fn missing_files_and_unknown_sites_are_named() {
    let (code, err) = check(&["/nonexistent/site.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/site.toml: error: cannot read the site config"),
        "{err}"
    );

    let mesh = TestMesh::single();
    let site = mesh.site("bureau");
    fs::remove_file(&mesh.roster).unwrap();
    let (code, err) = check(&[site.config.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("roster.toml: error: cannot read the roster"),
        "{err}"
    );

    let mesh = TestMesh::single();
    let site = mesh.site("bureau");
    let text = fs::read_to_string(&site.config)
        .unwrap()
        .replace("\"bureau\"", "\"bureau-9\"");
    fs::write(&site.config, text).unwrap();
    let (code, err) = check(&[site.config.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("site `bureau-9` is not in the roster"),
        "{err}"
    );
    assert!(err.contains("use one of: bureau, hub"), "{err}");
}

#[test]
fn plain_http_off_loopback_is_refused() {
    let mesh = TestMesh::single();
    let site = mesh.site("bureau");
    let text = fs::read_to_string(&site.config)
        .unwrap()
        .replace("127.0.0.1", "0.0.0.0");
    fs::write(&site.config, text).unwrap();
    let (code, err) = check(&[site.config.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("plain HTTP on 0.0.0.0"), "{err}");
    assert!(err.contains("add a [tls] table"), "{err}");
}

#[test]
fn a_toml_syntax_error_points_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    fs::write(&path, "site = \"bureau\"\n[listen\nweb = 1\n").unwrap();
    let (code, err) = check(&[path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn a_bad_rtc_advertise_is_refused_with_its_line() {
    let mesh = TestMesh::single();
    let site = mesh.site("bureau");
    let text = fs::read_to_string(&site.config).unwrap();
    let file = site.config.display().to_string();
    let line = text.lines().count() + 1;
    for (value, expected) in [
        (
            "\"10.20.0.5:7200\"",
            "expected an IP address without a port, found \"10.20.0.5:7200\"",
        ),
        (
            "\"0.0.0.0\"",
            "0.0.0.0 is not an address browsers can send to",
        ),
        (
            "\"224.0.0.251\"",
            "224.0.0.251 is a multicast or broadcast address",
        ),
        ("\"fd00::5\"", "fd00::5 is IPv6 but `listen.rtc`"),
        ("7200", "expected a string"),
    ] {
        // `[listen]` is the last table of the test config, so the new key lands in it.
        fs::write(&site.config, format!("{text}rtc_advertise = {value}\n")).unwrap();
        let (code, err) = check(&[site.config.to_str().unwrap()]);
        assert_eq!(code, 2, "{value}: {err}");
        assert!(
            err.contains(&format!("{file}:{line}:")),
            "{value}: no line {line} in:\n{err}"
        );
        assert!(err.contains("`listen.rtc_advertise`: "), "{value}: {err}");
        assert!(
            err.contains(expected),
            "{value}: missing {expected:?} in:\n{err}"
        );
    }

    fs::write(
        &site.config,
        format!("{text}rtc_advertise = \"10.20.0.5\"\n"),
    )
    .unwrap();
    let (code, err) = check(&[site.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}
