//! HTTPS at the sidecar (`listen-tls`): a real sidecar process in front of the test origin,
//! throwaway certificates from [`support::tls`] (a CA and two server certificates, ECDSA
//! P-256 and P-384: rcgen with ring cannot generate RSA keys), a rustls client. Also:
//! sessions resumed on another sidecar that shares the ticket keys (`tls-ticket-key`), the
//! ticket keys rotated and certificates replaced on SIGHUP, http and https kept apart in the
//! cache (`cache-key-scheme`, also through a peer and in the relay cache), and the TLS facts
//! sent on to the origin (`tls-sni-header`, `tls-protocol-header`), which clients cannot
//! forge.

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::PKCS_ECDSA_P256_SHA256 as P256;
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, HandshakeKind};
use support::client::Client;
use support::process::Sidecar;
use support::tls::{self, Ca, Tls, handshake, provider, server_leaf};
use support::{TempDir, body, free_addrs, ip, start_origin, temp_dir, wait_for};

/// The sidecar, its origin, and what a client needs to trust it.
struct Https {
    sidecar: Sidecar,
    tls: SocketAddr,
    ca: CertificateDer<'static>,
    /// The leaf certificates of `a.test` (the default) and `b.test`.
    leaves: [CertificateDer<'static>; 2],
    origin: support::Origin,
    _dir: TempDir,
}

/// A sidecar on `127.0.NET.HOST` in front of `origin` with an HTTPS listener and `tls`
/// (`--tls-cert` and other TLS flags); its log in `dir`. Also returns the HTTPS address.
fn serve_https(
    net: u8,
    host: u8,
    dir: &Path,
    origin: &support::Origin,
    tls: &[&str],
) -> (Sidecar, SocketAddr) {
    let addrs = free_addrs(ip(net, host));
    let members = format!("s0={}", addrs[1]);
    spawn_https(addrs, ("s0", &members), dir, origin, tls)
}

/// `n` sidecars (members `s0`, `s1`, .. on `127.0.NET.11`, `.12`, ..) in front of `origin`,
/// each with an HTTPS listener and `tls` (`--tls-cert` and more flags); their logs in `dir`.
/// Each with its HTTPS address.
fn serve_https_cluster(
    net: u8,
    n: u8,
    dir: &Path,
    origin: &support::Origin,
    tls: &[&str],
) -> Vec<(Sidecar, SocketAddr)> {
    let addrs: Vec<[SocketAddr; 4]> = (0..n).map(|i| free_addrs(ip(net, 11 + i))).collect();
    let members: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("s{i}={}", a[1]))
        .collect();
    let members = members.join(",");
    addrs
        .into_iter()
        .enumerate()
        .map(|(i, a)| spawn_https(a, (&format!("s{i}"), &members), dir, origin, tls))
        .collect()
}

/// Starts a sidecar on `[listen, peer, metrics, https]` as member `name` of `members`, in
/// front of `origin`, with `tls` flags; its log in `dir`. Also returns the HTTPS address.
fn spawn_https(
    [listen, peer, metrics, https]: [SocketAddr; 4],
    (name, members): (&str, &str),
    dir: &Path,
    origin: &support::Origin,
    tls: &[&str],
) -> (Sidecar, SocketAddr) {
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        &listen.to_string(),
        "--peer-listen",
        &peer.to_string(),
        "--metrics",
        &metrics.to_string(),
        "--listen-tls",
        &https.to_string(),
        "--tls-handshake-timeout",
        "1s",
        "--self",
        name,
        "--members",
        members,
        "--origin",
        &origin.url(),
        "--threads",
        "2",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(tls.iter().map(|s| (*s).to_owned()));
    let log = dir.join(format!("{name}-{}.log", listen.ip()));
    let sidecar = Sidecar::start(&args, listen, Some(peer), metrics, log);
    assert!(
        wait_for(Duration::from_secs(10), || TcpStream::connect(https)
            .is_ok()),
        "the TLS listener does not accept: {}",
        sidecar.log_text()
    );
    (sidecar, https)
}

fn start(net: u8) -> Https {
    start_with(net, &[])
}

/// As [`start`], the sidecar with `extra` flags.
fn start_with(net: u8, extra: &[&str]) -> Https {
    let dir = temp_dir("tls");
    let origin = start_origin(ip(net, 1));
    let ca = Ca::new("test CA");
    let (a, a_der) = ca.issue(dir.path(), "a.test", "a.test");
    let (b, b_der) = ca.issue_with(
        dir.path(),
        "b.test",
        "b.test",
        &rcgen::PKCS_ECDSA_P384_SHA384,
    );
    let mut flags = vec!["--tls-cert", &a, "--tls-cert", &b];
    flags.extend_from_slice(extra);
    let (sidecar, tls) = serve_https(net, 11, dir.path(), &origin, &flags);
    Https {
        sidecar,
        tls,
        ca: ca.der(),
        leaves: [a_der, b_der],
        origin,
        _dir: dir,
    }
}

/// A TLS connection to `h` with SNI `name` (none for an IP address), only `version`, the
/// certificate verified against the test CA; the handshake is done on return.
fn connect(h: &Https, name: &str, version: &'static rustls::SupportedProtocolVersion) -> Tls {
    handshake(h.tls, tls::client(&h.ca, &[version], None), name)
}

/// Accepts any certificate: only to see which one a name the server has none for gets.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A response with a `Content-Length` body, read from a stream.
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn get(stream: &mut impl ReadWrite, target: &str) -> io::Result<Response> {
    request(stream, "GET", target, "")
}

/// Sends `METHOD target` with `fields` (complete lines; a body only as they frame it) and
/// reads the response, which must have a `Content-Length`.
fn request(
    stream: &mut impl ReadWrite,
    method: &str,
    target: &str,
    fields: &str,
) -> io::Result<Response> {
    stream.write_all(
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\n{fields}\r\n").as_bytes(),
    )?;
    stream.flush()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let (len, status, length) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut slots);
        if let httparse::Status::Complete(len) = r.parse(&buf).map_err(io::Error::other)? {
            let length = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .ok_or_else(|| io::Error::other("no Content-Length"))?;
            break (len, r.code.unwrap_or(0), length);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    let mut body = buf.split_off(len);
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Response { status, head, body })
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn https_get_sni_alpn_and_both_versions() {
    let h = start(170);
    for (version, label) in [
        (&rustls::version::TLS12, "TLSv1.2"),
        (&rustls::version::TLS13, "TLSv1.3"),
    ] {
        let mut tls = connect(&h, "a.test", version);
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(server_leaf(&tls), h.leaves[0]);
        let r = get(&mut tls, "/headers").expect("GET /headers over TLS");
        assert_eq!(r.status, 200, "{}", r.head);
        let seen = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
        assert!(seen.contains("x-forwarded-proto: https\r\n"), "{seen}");
        let target = "/obj/tls?size=5000";
        let r = get(&mut tls, target).expect("GET over TLS");
        assert_eq!(r.body, body(target, 5000));

        let tls = connect(&h, "b.test", version);
        assert_eq!(
            server_leaf(&tls),
            h.leaves[1],
            "SNI b.test gets b's certificate"
        );
        let series = format!("dl7_l7_tls_handshakes_total{{result=\"ok\",protocol=\"{label}\"}}");
        assert!(h.sidecar.metric(&series) >= 2.0, "{series}");
    }
    // No SNI (an IP address) and an unknown name get the first certificate.
    for name in [h.tls.ip().to_string(), "unknown.test".to_owned()] {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth();
        let tls = handshake(h.tls, Arc::new(config), &name);
        assert_eq!(server_leaf(&tls), h.leaves[0], "{name} gets the default");
    }
    // The plain listener says http, whatever the client claims.
    let mut plain = Client::connect(h.sidecar.listen);
    plain.send(b"GET /headers HTTP/1.1\r\nHost: test\r\nX-Forwarded-Proto: https\r\n\r\n");
    let r = plain.read_response(false).expect("plain GET");
    let seen = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
    assert!(seen.contains("x-forwarded-proto: http\r\n"), "{seen}");
    assert!(!seen.contains("x-forwarded-proto: https"), "{seen}");
    assert!(h.sidecar.metric("dl7_l7_tls_handshake_seconds_count") >= 4.0);
    assert!(h.sidecar.metric("dl7_l7_tls_certificate_expiry_seconds") > 1.0e9);
}

#[test]
fn plain_http_to_the_https_port_gets_400_and_a_close() {
    let h = start(171);
    let mut c = Client::connect(h.tls);
    let r = c.get("/obj/x");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(String::from_utf8_lossy(&r.body).contains("plain HTTP sent to the HTTPS port"));
    assert!(c.is_closed());
    let series = "dl7_l7_tls_handshakes_total{result=\"plain_http\"}";
    assert!(wait_for(Duration::from_secs(5), || h
        .sidecar
        .metric(series)
        >= 1.0));
}

#[test]
fn a_truncated_client_hello_is_closed_within_the_handshake_timeout() {
    let h = start(172);
    let mut tcp = TcpStream::connect(h.tls).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let sent = Instant::now();
    // A handshake record header announcing 200 bytes, one of them, then silence.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01])
        .expect("send");
    let mut probe = [0u8; 64];
    let closed = match tcp.read(&mut probe) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the connection stays open");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?} (tls-handshake-timeout is 1s)"
    );
    let series = "dl7_l7_tls_handshakes_total{result=\"timeout\"}";
    assert!(wait_for(Duration::from_secs(5), || h
        .sidecar
        .metric(series)
        >= 1.0));
    // Garbage that is not a handshake record is closed at once.
    let mut tcp = TcpStream::connect(h.tls).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(&[0x01, 0x02, 0x03]).expect("send");
    assert!(matches!(tcp.read(&mut probe), Ok(0) | Err(_)));
    let series = "dl7_l7_tls_handshakes_total{result=\"bad_client_hello\"}";
    assert!(wait_for(Duration::from_secs(5), || h
        .sidecar
        .metric(series)
        >= 1.0));
}

#[test]
fn keep_alive_and_large_bodies_over_tls() {
    let h = start(173);
    let mut tls = connect(&h, "a.test", &rustls::version::TLS13);
    for i in 0..5 {
        let target = format!("/obj/keep-{i}?size=3000");
        let r = get(&mut tls, &target).expect("a request on the kept connection");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body(&target, 3000));
    }
    // 3 MiB: filled into the cache, then from the cache; and not storable, relayed as it
    // comes (on a plain connection that body would be spliced).
    let size = 3 << 20;
    for target in [
        format!("/obj/big?size={size}"),
        format!("/obj/big?size={size}"),
        format!("/obj/stream?size={size}&cc=no-store"),
    ] {
        let r = get(&mut tls, &target).expect("a large body over TLS");
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(
            r.body == body(&target, size as u64),
            "{target}: body differs"
        );
    }
    assert!(h.sidecar.metric("dl7_l7_cache_hits_total") >= 1.0);
    assert_eq!(
        h.sidecar
            .metric("dl7_l7_connections{listener=\"client-tls\"}"),
        1.0
    );
}

/// Writes an 80-byte ticket key (name and secret all `fill`) to `dir/NAME`: its path.
fn ticket_key(dir: &Path, name: &str, fill: u8) -> String {
    let path = dir.join(name);
    std::fs::write(&path, [fill; 80]).expect("write a ticket key");
    path.display().to_string()
}

/// Connects with `config`, checks that a request is answered (which also reads the
/// session tickets sent after a TLS 1.3 handshake) and returns how the handshake went.
fn resume_or_not(addr: SocketAddr, config: &Arc<ClientConfig>) -> HandshakeKind {
    let mut tls = handshake(addr, config.clone(), "a.test");
    let kind = tls.conn.handshake_kind().expect("handshake done");
    let target = "/obj/resume?size=100";
    let r = get(&mut tls, target).expect("GET over TLS");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, body(target, 100));
    kind
}

#[test]
fn sessions_resume_on_any_sidecar_with_the_same_ticket_keys() {
    let net = 174;
    let dir = temp_dir("tls-resume");
    let origin = start_origin(ip(net, 1));
    let ca = Ca::new("test CA");
    let (a, _) = ca.issue(dir.path(), "a.test", "a.test");
    let ca_der = ca.der();
    let old = ticket_key(dir.path(), "old.key", 1);
    let new = ticket_key(dir.path(), "new.key", 2);
    let other = ticket_key(dir.path(), "other.key", 3);
    let with_keys = |host, keys: &str| {
        serve_https(
            net,
            host,
            dir.path(),
            &origin,
            &["--tls-cert", &a, "--tls-ticket-key", keys],
        )
    };
    let (sa, a_addr) = with_keys(11, &old);
    let (sb, b_addr) = with_keys(12, &old);
    let (sc, c_addr) = with_keys(13, &other);
    for (version, label) in [
        (&rustls::version::TLS13, "TLSv1.3"),
        (&rustls::version::TLS12, "TLSv1.2"),
    ] {
        let client = tls::client(&ca_der, &[version], None);
        assert_eq!(
            resume_or_not(a_addr, &client),
            HandshakeKind::Full,
            "{label}"
        );
        assert_eq!(
            resume_or_not(b_addr, &client),
            HandshakeKind::Resumed,
            "{label}: B opens A's ticket"
        );
        let series = format!("dl7_l7_tls_resumptions_total{{protocol=\"{label}\"}}");
        assert_eq!(sb.metric(&series), 1.0, "{series}");
        assert_eq!(
            resume_or_not(c_addr, &client),
            HandshakeKind::Full,
            "{label}: C has another key"
        );
        assert_eq!(sc.metric(&series), 0.0, "{series}");
    }
    assert!(sa.log_text().contains("sealed with"), "{}", sa.log_text());
    assert!(sc.log_text().contains("other.key"), "{}", sc.log_text());

    // Rotation as the README says, by SIGHUP: D, its keys in its file, starts with [old],
    // then gets [new, old]. It opens a ticket B sealed under old, and seals its own under
    // new (which B, with old only, cannot open).
    drop(sa);
    let file = dir.path().join("d.toml");
    let keys = |keys: &[&str]| {
        let list: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        std::fs::write(&file, format!("tls-ticket-key = [{}]\n", list.join(", ")))
            .expect("write the file");
    };
    keys(&[&old]);
    let config = file.display().to_string();
    let (sd, d_addr) = serve_https(
        net,
        14,
        dir.path(),
        &origin,
        &["--tls-cert", &a, "--config", &config],
    );
    let client = tls::client(&ca_der, &[&rustls::version::TLS13], None);
    assert_eq!(resume_or_not(b_addr, &client), HandshakeKind::Full);
    assert_eq!(
        resume_or_not(d_addr, &client),
        HandshakeKind::Resumed,
        "D with [old] opens B's ticket"
    );
    keys(&[&new, &old]);
    sd.signal("HUP");
    let reloaded = || sd.metric("dl7_l7_reloads_total{result=\"ok\"}") >= 1.0;
    assert!(
        wait_for(Duration::from_secs(10), reloaded),
        "{}",
        sd.log_text()
    );
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = tls::client(&ca_der, &[version], None);
        assert_eq!(resume_or_not(b_addr, &client), HandshakeKind::Full);
        assert_eq!(resume_or_not(d_addr, &client), HandshakeKind::Resumed);
        assert_eq!(resume_or_not(b_addr, &client), HandshakeKind::Full);
    }
}

#[test]
fn sighup_replaces_the_certificate_keeps_connections_and_refuses_a_bad_file() {
    let net = 175;
    let dir = temp_dir("tls-reload");
    let origin = start_origin(ip(net, 1));
    let ca = Ca::new("test CA");
    let (entry, a_der) = ca.issue(dir.path(), "site", "site");
    let (sidecar, addr) = serve_https(net, 11, dir.path(), &origin, &["--tls-cert", &entry]);
    // Any certificate: the test looks at which one it gets. No resumption: a resumed
    // session keeps the certificate of its full handshake.
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    client.resumption = Resumption::disabled();
    let client = Arc::new(client);
    let leaf = || server_leaf(&handshake(addr, client.clone(), "site.test"));
    let reloads =
        |result: &str| sidecar.metric(&format!("dl7_l7_reloads_total{{result=\"{result}\"}}"));
    let mut kept = handshake(addr, client.clone(), "site.test");
    assert_eq!(server_leaf(&kept), a_der);
    assert_eq!(get(&mut kept, "/obj/k1?size=10").expect("GET").status, 200);

    let b_der = ca.write_over(&entry, "b.test", &P256, None);
    sidecar.signal("HUP");
    assert!(
        wait_for(Duration::from_secs(10), || reloads("ok") >= 1.0),
        "{}",
        sidecar.log_text()
    );
    assert_eq!(leaf(), b_der, "new connections get B");
    let r = get(&mut kept, "/obj/k2?size=10").expect("the kept connection after the reload");
    assert_eq!(r.status, 200);

    let (cert_file, _) = entry.split_once(':').expect("CERT:KEY");
    std::fs::write(cert_file, "not a certificate\n").expect("break the file");
    sidecar.signal("HUP");
    assert!(
        wait_for(Duration::from_secs(10), || reloads("error") >= 1.0),
        "{}",
        sidecar.log_text()
    );
    assert_eq!(leaf(), b_der, "a bad file keeps B");
    let log = sidecar.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("reload refused: --tls-cert") && l.contains(cert_file)),
        "{log}"
    );

    // An expired certificate is loaded (as nginx does), with a warning, and its expiry
    // shows in the gauge.
    let expired = ca.write_over(&entry, "old.test", &P256, Some((2020, 1, 1)));
    sidecar.signal("HUP");
    assert!(
        wait_for(Duration::from_secs(10), || reloads("ok") >= 2.0),
        "{}",
        sidecar.log_text()
    );
    assert_eq!(leaf(), expired);
    assert!(
        sidecar.log_text().contains("the certificate has expired"),
        "{}",
        sidecar.log_text()
    );
    let expiry = sidecar.metric("dl7_l7_tls_certificate_expiry_seconds");
    assert!(expiry > 1.5e9 && expiry < 1.6e9, "{expiry}");
    let r = get(&mut kept, "/obj/k3?size=10").expect("the kept connection at the end");
    assert_eq!(r.status, 200);
}

/// What the origin received for `target` (a `/headers` URL) sent on `stream` with `fields`:
/// the request head, in lower case.
fn seen_by_origin(stream: &mut impl ReadWrite, target: &str, fields: &str) -> String {
    let r = request(stream, "GET", target, fields).expect("GET /headers");
    assert_eq!(r.status, 200, "{}", r.head);
    String::from_utf8_lossy(&r.body).to_ascii_lowercase()
}

/// The same, on a plain connection (`listen`, or the peer listener).
fn seen_in_plain(addr: SocketAddr, target: &str, fields: &str) -> String {
    let mut c = Client::connect(addr);
    c.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n{fields}\r\n").as_bytes());
    let r = c.read_response(false).expect("GET /headers");
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).to_ascii_lowercase()
}

/// Sends `METHOD target` (no body) on a plain connection to `addr`: the status.
fn plain(addr: SocketAddr, method: &str, target: &str) -> u16 {
    let mut c = Client::connect(addr);
    c.send(
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    c.read_response(method == "HEAD")
        .expect("a response")
        .status
}

/// A response the origin plays for `/script/NAME/..`: storable for 10 minutes, body `ok`.
fn storable() -> Vec<support::Step> {
    vec![support::Step::Send(
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    )]
}

#[test]
fn cache_key_scheme_keeps_http_and_https_apart() {
    let h = start_with(176, &["--cache-key-scheme", "--purge-allow", "127.0.0.0/8"]);
    let listen = h.sidecar.listen;
    let mut tls = connect(&h, "a.test", &rustls::version::TLS13);
    let target = "/obj/scheme?size=100";
    let fetches = || h.origin.fetches(target);
    assert_eq!(plain(listen, "GET", target), 200);
    assert_eq!(fetches(), 1);
    let r = get(&mut tls, target).expect("GET over TLS");
    assert_eq!(r.body, body(target, 100));
    assert_eq!(fetches(), 2, "https is another entry than http");
    assert_eq!(plain(listen, "GET", target), 200);
    assert_eq!(get(&mut tls, target).expect("GET over TLS").status, 200);
    assert_eq!(fetches(), 2, "each scheme answered from its own entry");
    assert_eq!(h.sidecar.metric("dl7_l7_cache_objects"), 2.0);

    // PURGE (here over http) drops both schemes' entries.
    assert_eq!(plain(listen, "PURGE", target), 200);
    assert_eq!(get(&mut tls, target).expect("GET over TLS").status, 200);
    assert_eq!(plain(listen, "GET", target), 200);
    assert_eq!(fetches(), 4, "both fetched again after the PURGE");
    assert_eq!(plain(listen, "PURGE", target), 200);
    assert_eq!(plain(listen, "PURGE", target), 404, "none left");

    // A successful unsafe request (here over https) invalidates both too.
    h.origin.script("inv", storable());
    let target = "/script/inv/1";
    let fetches = || h.origin.fetches(target);
    assert_eq!(plain(listen, "GET", target), 200);
    assert_eq!(get(&mut tls, target).expect("GET over TLS").status, 200);
    assert_eq!(fetches(), 2);
    let post = request(&mut tls, "POST", target, "Content-Length: 0\r\n").expect("POST");
    assert_eq!(post.status, 200);
    assert_eq!(fetches(), 3);
    assert_eq!(plain(listen, "GET", target), 200);
    assert_eq!(get(&mut tls, target).expect("GET over TLS").status, 200);
    assert_eq!(fetches(), 5, "both invalidated by the POST");
    assert_eq!(plain(listen, "GET", target), 200);
    assert_eq!(fetches(), 5, "and stored again");

    // Without the setting, one entry serves both schemes, as before.
    let h = start(177);
    let mut tls = connect(&h, "a.test", &rustls::version::TLS13);
    let target = "/obj/one-key?size=100";
    assert_eq!(plain(h.sidecar.listen, "GET", target), 200);
    assert_eq!(get(&mut tls, target).expect("GET over TLS").status, 200);
    assert_eq!(
        h.origin.fetches(target),
        1,
        "https answered from the http fetch"
    );
}

#[test]
fn tls_facts_reach_the_origin_and_clients_cannot_forge_them() {
    let facts = [
        "--tls-sni-header",
        "X-TLS-SNI",
        "--tls-protocol-header",
        "X-TLS-Protocol",
    ];
    let h = start_with(178, &facts);
    let forged = "X-TLS-SNI: evil.test\r\nx_tls_sni: evil2.test\r\nX-TLS-Protocol: SSLv3\r\n";
    for (version, label) in [
        (&rustls::version::TLS12, "tlsv1.2"),
        (&rustls::version::TLS13, "tlsv1.3"),
    ] {
        let mut tls = connect(&h, "a.test", version);
        // Every request of the connection carries them.
        for round in 0..2 {
            let seen = seen_by_origin(&mut tls, &format!("/headers?r={round}"), forged);
            assert_eq!(seen.matches("x-tls-sni").count(), 1, "{seen}");
            assert!(seen.contains("\r\nx-tls-sni: a.test\r\n"), "{seen}");
            assert_eq!(seen.matches("x-tls-protocol").count(), 1, "{seen}");
            assert!(
                seen.contains(&format!("\r\nx-tls-protocol: {label}\r\n")),
                "{seen}"
            );
            assert!(!seen.contains("evil") && !seen.contains("sslv3"), "{seen}");
            assert!(!seen.contains("x_tls_sni"), "{seen}");
        }
    }
    // A client that sends no SNI (it connects to an IP address): no SNI field.
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    let mut tls = handshake(h.tls, Arc::new(config), &h.tls.ip().to_string());
    let seen = seen_by_origin(&mut tls, "/headers", forged);
    assert!(!seen.contains("x-tls-sni"), "{seen}");
    assert!(seen.contains("\r\nx-tls-protocol: tlsv1.3\r\n"), "{seen}");
    // The plain listener removes what a client claims and adds nothing.
    let seen = seen_in_plain(h.sidecar.listen, "/headers", forged);
    assert!(!seen.contains("x-tls") && !seen.contains("x_tls"), "{seen}");
    // The peer listener trusts what the forwarding sidecar wrote.
    let peer = h.sidecar.peer.expect("a peer listener");
    let from_peer = format!("{forged}X-Forwarded-Proto: https\r\nX-Dl7-Hop: 1\r\n");
    let seen = seen_in_plain(peer, "/headers", &from_peer);
    for kept in [
        "\r\nx-tls-sni: evil.test\r\n",
        "\r\nx_tls_sni: evil2.test\r\n",
        "\r\nx-tls-protocol: sslv3\r\n",
    ] {
        assert_eq!(seen.matches(kept).count(), 1, "{kept}: {seen}");
    }
}

#[test]
fn through_a_peer_the_owner_keeps_the_forwarding_sidecars_scheme_and_facts() {
    let net = 179;
    let dir = temp_dir("tls-peer");
    let origin = start_origin(ip(net, 1));
    let ca = Ca::new("test CA");
    let (a, _) = ca.issue(dir.path(), "a.test", "a.test");
    let ca_der = ca.der();
    let flags = [
        "--tls-cert",
        &a,
        "--cache-key-scheme",
        "--tls-sni-header",
        "X-TLS-SNI",
        "--tls-protocol-header",
        "X-TLS-Protocol",
        "--relay-cache-bytes",
        "1000000",
    ];
    let nodes = serve_https_cluster(net, 2, dir.path(), &origin, &flags);
    let [(s0, s0_tls), (s1, _)] = &nodes[..] else {
        panic!("two sidecars")
    };
    let names = ["s0".to_owned(), "s1".to_owned()];
    // Targets s1 owns: clients enter at s0, which forwards them to s1.
    let owned = |prefix: &str| {
        (0..10_000)
            .map(|i| format!("{prefix}{i}"))
            .find(|t| support::owner("ketama", &names, t) == 1)
            .expect("a target s1 owns")
    };
    let client = tls::client(&ca_der, &[&rustls::version::TLS13], None);
    let mut tls = handshake(*s0_tls, client, "a.test");

    // Fetched over https through s0: stored at s1 under the https key.
    let target = owned("/obj/peer?size=100&k=");
    let fetches = || origin.fetches(&target);
    assert_eq!(get(&mut tls, &target).expect("GET over TLS").status, 200);
    assert_eq!(fetches(), 1);
    let peer = s1.peer.expect("s1's peer listener");
    let at_owner = |proto: &str| {
        let mut c = Client::connect(peer);
        c.send(
            format!("GET {target} HTTP/1.1\r\nHost: test\r\nX-Dl7-Hop: 1\r\n{proto}\r\n")
                .as_bytes(),
        );
        c.read_response(false).expect("a response").status
    };
    assert_eq!(at_owner("X-Forwarded-Proto: https\r\n"), 200);
    assert_eq!(
        fetches(),
        1,
        "X-Forwarded-Proto: https finds the https entry"
    );
    assert_eq!(at_owner("X-Forwarded-Proto: ftp\r\n"), 200);
    assert_eq!(fetches(), 2, "anything else is http: another entry");
    assert_eq!(at_owner(""), 200);
    assert_eq!(plain(s0.listen, "GET", &target), 200);
    assert_eq!(
        fetches(),
        2,
        "no X-Forwarded-Proto, or http through s0: the http entry"
    );
    assert_eq!(s1.metric("dl7_l7_cache_objects"), 2.0);
    assert_eq!(
        s0.metric("dl7_l7_cache_objects"),
        0.0,
        "s0 stores none of it"
    );

    // The relay cache keeps the schemes apart as well: a hot https copy at s0 does not
    // answer http.
    let target = owned("/obj/hot?size=100&k=");
    for _ in 0..6 {
        assert_eq!(get(&mut tls, &target).expect("GET over TLS").status, 200);
    }
    assert!(
        s0.metric("dl7_l7_relay_hits_total") >= 1.0,
        "the copy answers https"
    );
    assert_eq!(origin.fetches(&target), 1);
    assert_eq!(plain(s0.listen, "GET", &target), 200);
    assert_eq!(origin.fetches(&target), 2, "http is not the https copy");

    // The TLS facts pass the peer unchanged, once.
    let target = owned("/headers?k=");
    let seen = seen_by_origin(&mut tls, &target, "X-TLS-SNI: evil.test\r\n");
    assert!(seen.contains("\r\nx-dl7-hop: 2\r\n"), "through s1: {seen}");
    for once in [
        "\r\nx-tls-sni: a.test\r\n",
        "\r\nx-tls-protocol: tlsv1.3\r\n",
        "\r\nx-forwarded-proto: https\r\n",
    ] {
        assert_eq!(seen.matches(once).count(), 1, "{once}: {seen}");
    }
    assert!(!seen.contains("evil"), "{seen}");
}
