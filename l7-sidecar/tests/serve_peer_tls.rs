//! Mutual TLS between sidecars (`peer-tls`): a cluster whose peer connections are TLS 1.3
//! with client certificates, all issued by a throwaway cluster CA ([`support::tls`]), each naming
//! its sidecar's address. Checked: forwarding and health checks work over it and reuse their
//! connections; the peer listener takes nobody else (plain HTTP, no certificate, another
//! CA's certificate); a peer whose certificate does not name its address gets no request,
//! and its keys are served elsewhere; SIGHUP swaps the certificate and refuses one the CA
//! did not sign; configuration errors are one line.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use support::client::Client;
use support::tls::{self, Ca};
use support::{Cluster, body, temp_dir, wait_for};

/// Issues a certificate of `ca` for the address `ip` into `dir` under `tag`: the `CERT:KEY`
/// entry.
fn issue(ca: &Ca, dir: &Path, tag: &str, ip: IpAddr) -> String {
    ca.issue(dir, tag, &ip.to_string()).0
}

/// A cluster of `n` sidecars with peer TLS, each with a certificate for its own address,
/// health checks every 200 ms.
fn cluster(net: u8, n: usize) -> (Cluster, Ca) {
    let dir = temp_dir("peer-tls");
    let ca = Ca::new("dl7 cluster CA");
    let ca_file = ca.write(dir.path(), "cluster-ca").display().to_string();
    let entries: Vec<String> = (0..n)
        .map(|i| {
            let host = Ipv4Addr::new(127, 0, net, 11 + i as u8);
            issue(&ca, dir.path(), &format!("s{i}"), IpAddr::V4(host))
        })
        .collect();
    let c = Cluster::start_each(net, n, dir, |i, _| {
        [
            "--peer-tls",
            "--peer-tls-cert",
            &entries[i],
            "--peer-tls-ca",
            &ca_file,
            "--health-interval",
            "200ms",
            "--health-timeout",
            "150ms",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    });
    (c, ca)
}

/// A client of a peer listener trusting `ca`, speaking TLS 1.2 and 1.3, presenting the
/// certificate of `entry` (`CERT:KEY`) when given.
fn peer_client(ca: &Ca, entry: Option<&str>) -> Arc<ClientConfig> {
    tls::client(&ca.der(), rustls::DEFAULT_VERSIONS, entry)
}

/// Connects to the peer listener `addr` with `config` and sends a GET of `target`: the
/// status line answered (and the server's certificate), or the error (a refused handshake shows as an error at the
/// first read, TLS 1.3 clients finishing before the server checks their certificate).
fn peer_get(addr: SocketAddr, config: Arc<ClientConfig>, target: &str) -> Result<String, String> {
    peer_get_cert(addr, config, target).map(|(line, _)| line)
}

/// [`peer_get`], with the leaf certificate the server presented.
fn peer_get_cert(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    target: &str,
) -> Result<(String, CertificateDer<'static>), String> {
    let mut tls = tls::try_handshake(addr, config, &addr.ip().to_string())?;
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .and_then(|()| tls.flush())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) if !answer.is_empty() => {}
        Ok(_) => return Err("closed without an answer".to_owned()),
        Err(e) if answer.is_empty() => return Err(e.to_string()),
        Err(_) => {}
    }
    let text = String::from_utf8_lossy(&answer);
    let line = text.lines().next().unwrap_or_default().to_owned();
    Ok((line, tls::server_leaf(&tls)))
}

#[test]
fn requests_and_health_checks_go_over_mutual_tls_on_reused_connections() {
    let (c, _ca) = cluster(181, 3);
    let urls: Vec<String> = (0..45)
        .map(|i| format!("/obj/t{i}?size={}", 100 + i * 7))
        .collect();
    for (i, s) in c.sidecars.iter().enumerate() {
        let mut client = Client::connect(s.listen);
        for u in &urls {
            let r = client.get(u);
            assert_eq!(r.status, 200, "{u}");
            assert_eq!(r.body, body(u, r.body.len() as u64), "{u}");
        }
        // A body long enough to be spliced between plain sockets is copied through TLS.
        let big = c.owned_key((i + 1) % 3, |k| format!("/obj/big{k}?size=3000000"));
        let r = client.get(&big);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body(&big, 3_000_000));
    }
    for u in &urls {
        assert_eq!(c.origin.fetches(u), 1, "{u} fetched more than once");
    }
    for (i, s) in c.sidecars.iter().enumerate() {
        for (j, peer) in c.names.iter().enumerate() {
            if i != j {
                let connects = s.metric(&format!("dl7_l7_pool_connects_total{{pool=\"{peer}\"}}"));
                assert_eq!(
                    connects, 1.0,
                    "{} -> {peer}: one pooled connection",
                    c.names[i]
                );
                let up = s.metric(&format!("dl7_l7_peer_up{{peer=\"{peer}\"}}"));
                assert_eq!(up, 1.0, "{} sees {peer} up", c.names[i]);
            }
        }
        let connected =
            s.metric("dl7_l7_peer_tls_handshakes_total{side=\"connected\",result=\"ok\"}");
        assert!(connected >= 2.0, "{}: {connected}", c.names[i]);
        let accepted =
            s.metric("dl7_l7_peer_tls_handshakes_total{side=\"accepted\",result=\"ok\"}");
        // Pooled connections from both peers, and their health checks.
        assert!(accepted >= 4.0, "{}: {accepted}", c.names[i]);
        assert_eq!(
            s.metric("dl7_l7_peer_tls_handshakes_total{side=\"accepted\",result=\"error\"}"),
            0.0
        );
        let expiry = s.metric("dl7_l7_tls_certificate_expiry_seconds");
        assert!(
            expiry > 1.7e9,
            "the peer certificate's expiry is exported: {expiry}"
        );
    }
}

#[test]
fn the_peer_listener_takes_only_cluster_certificates() {
    let (c, ca) = cluster(182, 2);
    let s = &c.sidecars[0];
    let peer = s.peer.expect("peer listener");
    let metric = |result: &str| {
        s.metric(&format!(
            "dl7_l7_peer_tls_handshakes_total{{side=\"accepted\",result=\"{result}\"}}"
        ))
    };
    // A member's certificate: served.
    let member = issue(
        &ca,
        c.dir.path(),
        "member",
        IpAddr::V4(Ipv4Addr::new(127, 0, 182, 50)),
    );
    let line = peer_get(peer, peer_client(&ca, Some(&member)), "/obj/m?size=5")
        .expect("a member is served");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");

    // Plain HTTP: closed without an answer (a 400 would pass a plain sidecar's health checks).
    let mut plain = Client::connect(peer);
    plain.set_read_timeout(Duration::from_secs(5));
    plain.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.is_closed(), "plain HTTP is closed");
    assert!(!plain.has_bytes(), "and not answered");
    assert!(wait_for(Duration::from_secs(5), || metric("plain_http") >= 1.0));

    // No client certificate, or one from another CA: refused.
    let before = metric("error");
    assert!(peer_get(peer, peer_client(&ca, None), "/obj/n?size=5").is_err());
    let stranger_ca = Ca::new("another CA");
    let stranger = issue(
        &stranger_ca,
        c.dir.path(),
        "stranger",
        IpAddr::V4(Ipv4Addr::new(127, 0, 182, 51)),
    );
    assert!(peer_get(peer, peer_client(&ca, Some(&stranger)), "/obj/n?size=5").is_err());
    assert!(wait_for(Duration::from_secs(5), || metric("error") >= before + 2.0));
    assert!(
        s.log_text().contains("peer TLS handshake from"),
        "a refused handshake is logged: {}",
        s.log_text()
    );
    // A member's certificate over TLS 1.2: refused (peers speak TLS 1.3 only).
    let tls12 = tls::client(&ca.der(), &[&rustls::version::TLS12], Some(&member));
    assert!(peer_get(peer, tls12, "/obj/n?size=5").is_err());
    assert!(wait_for(Duration::from_secs(5), || metric("error") >= before + 3.0));
    assert_eq!(
        c.origin.fetches("/obj/n?size=5"),
        0,
        "nothing refused reached the origin"
    );
}

#[test]
fn a_peer_whose_certificate_does_not_name_its_address_gets_no_request() {
    // s1's certificate is the cluster CA's, but for another address; s1 listens on 0.0.0.0
    // (so its own start-time check cannot see it). No health checks: the requests' own
    // connections meet the certificate.
    let net = 183;
    let dir = temp_dir("peer-tls-misnamed");
    let ca = Ca::new("dl7 cluster CA");
    let ca_file = ca.write(dir.path(), "cluster-ca").display().to_string();
    let good = issue(
        &ca,
        dir.path(),
        "s0",
        IpAddr::V4(Ipv4Addr::new(127, 0, net, 11)),
    );
    let wrong = issue(
        &ca,
        dir.path(),
        "s1",
        IpAddr::V4(Ipv4Addr::new(127, 0, net, 99)),
    );
    let c = Cluster::start_each(net, 2, dir, |i, peer| {
        let mut args: Vec<String> = vec![
            "--peer-tls".into(),
            "--peer-tls-cert".into(),
            if i == 0 { good.clone() } else { wrong.clone() },
            "--peer-tls-ca".into(),
            ca_file.clone(),
            "--health-interval".into(),
            "off".into(),
        ];
        if i == 1 {
            args.extend(["--peer-listen".into(), format!("0.0.0.0:{}", peer.port())]);
        }
        args
    });
    let s0 = &c.sidecars[0];
    let keys = c.keys_owned_by(1, "mis", 10, 5);
    let mut client = Client::connect(s0.listen);
    for k in &keys {
        let r = client.get(k);
        assert_eq!(r.status, 200, "{k}: served by s0 instead");
    }
    let refused =
        s0.metric("dl7_l7_peer_tls_handshakes_total{side=\"connected\",result=\"error\"}");
    let tried = s0.metric("dl7_l7_peer_forwards_total{peer=\"s1\"}");
    let failed = s0.metric("dl7_l7_peer_errors_total{peer=\"s1\"}");
    assert!(
        refused >= 1.0 && tried >= 1.0,
        "{refused} refused, {tried} tried"
    );
    assert_eq!(
        failed,
        tried,
        "every forward to s1 failed: {}",
        s0.log_text()
    );
    assert!(
        s0.log_text().contains("peer TLS handshake with"),
        "the refusal is logged: {}",
        s0.log_text()
    );
    assert_eq!(c.origin.fetches(&keys[0]), 1, "s0 fetched it itself");
    // s1 can still forward to s0: s0's certificate names s0.
    let k = c.keys_owned_by(0, "fine", 10, 1).remove(0);
    assert_eq!(Client::connect(c.sidecars[1].listen).get(&k).status, 200);
    assert_eq!(
        c.sidecars[1].metric("dl7_l7_peer_forwards_total{peer=\"s0\"}"),
        1.0
    );
}

#[test]
fn sighup_swaps_the_peer_certificate_and_refuses_one_the_ca_did_not_sign() {
    let (c, ca) = cluster(184, 2);
    let s0 = &c.sidecars[0];
    let reloads = |result: &str| s0.metric(&format!("dl7_l7_reloads_total{{result=\"{result}\"}}"));
    let host = IpAddr::V4(Ipv4Addr::new(127, 0, 184, 11));
    // A new certificate from the same CA, over the same files.
    let (_, fresh) = ca.issue(c.dir.path(), "s0", &host.to_string());
    s0.signal("HUP");
    assert!(
        wait_for(Duration::from_secs(10), || reloads("ok") >= 1.0),
        "{}",
        s0.log_text()
    );
    // Another CA's certificate: refused, the running one kept.
    issue(&Ca::new("rogue"), c.dir.path(), "s0", host);
    s0.signal("HUP");
    assert!(
        wait_for(Duration::from_secs(10), || reloads("error") >= 1.0),
        "{}",
        s0.log_text()
    );
    assert!(
        s0.log_text()
            .lines()
            .any(|l| l.contains("reload refused") && l.contains("peer-tls-cert")),
        "{}",
        s0.log_text()
    );
    // Both ways still work: s1 -> s0 (s0's certificate as server) and s0 -> s1 (as client).
    let to_s0 = c.keys_owned_by(0, "after", 10, 3);
    let to_s1 = c.keys_owned_by(1, "after", 10, 3);
    let mut via_s1 = Client::connect(c.sidecars[1].listen);
    let mut via_s0 = Client::connect(s0.listen);
    for (a, b) in to_s0.iter().zip(&to_s1) {
        assert_eq!(via_s1.get(a).status, 200);
        assert_eq!(via_s0.get(b).status, 200);
    }
    // A new connection to s0 gets the fresh certificate, kept by the refused reload.
    let member = issue(
        &ca,
        c.dir.path(),
        "probe",
        IpAddr::V4(Ipv4Addr::new(127, 0, 184, 60)),
    );
    let (line, served) = peer_get_cert(
        s0.peer.expect("peer"),
        peer_client(&ca, Some(&member)),
        "/healthz",
    )
    .expect("a new handshake with s0");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    assert_eq!(served, fresh, "the certificate of the reload");
}

#[test]
fn peer_tls_configuration_errors_are_one_line() {
    let dir = temp_dir("peer-tls-cli");
    let ca = Ca::new("cli CA");
    let ca_file = ca.write(dir.path(), "ca");
    let good = issue(&ca, dir.path(), "good", IpAddr::V4(Ipv4Addr::LOCALHOST));
    let rogue = issue(
        &Ca::new("rogue"),
        dir.path(),
        "rogue",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    );
    let ca_arg = ca_file.display().to_string();
    let base = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
        "--self",
        "a",
        "--members",
        "a=127.0.0.1:9",
        "--origin",
        "http://127.0.0.1:9",
    ];
    let elsewhere = issue(
        &ca,
        dir.path(),
        "elsewhere",
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
    );
    let no_ca = dir.path().join("no-ca.pem").display().to_string();
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "--peer-tls",
                "--peer-tls-cert",
                &good,
                "--peer-tls-ca",
                &no_ca,
            ],
            "--peer-tls-ca",
        ),
        (
            &[
                "--peer-tls",
                "--peer-tls-cert",
                &elsewhere,
                "--peer-tls-ca",
                &ca_arg,
            ],
            "is not valid as the server of 127.0.0.1",
        ),
        (
            &["--peer-tls", "--peer-tls-ca", &ca_arg],
            "--peer-tls-cert is required",
        ),
        (
            &["--peer-tls", "--peer-tls-cert", &good],
            "--peer-tls-ca is required",
        ),
        (
            &["--peer-tls-cert", &good, "--peer-tls-ca", &ca_arg],
            "--peer-tls-cert",
        ),
        (
            &[
                "--peer-tls",
                "--peer-tls-cert",
                &rogue,
                "--peer-tls-ca",
                &ca_arg,
            ],
            "is not valid as a client under the CA",
        ),
        (
            &[
                "--peer-tls",
                "--peer-tls-cert",
                "nofile.pem",
                "--peer-tls-ca",
                &ca_arg,
            ],
            "nofile.pem",
        ),
    ];
    for (extra, needle) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_l7-sidecar"))
            .args(base)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run l7-sidecar");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err:?} lacks {needle:?}");
    }
}
