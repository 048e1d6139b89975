//! The `nginx` scheme against the real nginx: one nginx process (from the Debian package;
//! `cargo xtask test` installs it) runs an upstream of five weighted loopback backends with
//! `hash $request_uri consistent;` plus the five backends themselves, each answering with its
//! own port. For 600 distinct URIs the backend nginx chose must be the member dl7 picks.
//!
//! Everything nginx writes (config, pid, error log, temp files) lives in a fresh temporary
//! directory; guards kill nginx and remove the directory even when the test fails.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use l7_sidecar::scheme::{self, Member};
use support::{free_ports, temp_dir};

const WEIGHTS: [u32; 5] = [1, 3, 2, 1, 4];
const URIS: usize = 600;

const NOT_INSTALLED: &str = "nginx is not installed, so the `nginx` scheme cannot be compared \
     with it: run `apt-get install -y nginx` (cargo xtask test does) or set DL7_NGINX";

/// Where nginx is: `$DL7_NGINX`, else the Debian path, else `$PATH`. Missing nginx fails
/// the test: a skipped comparison would look like a passed one.
fn nginx_binary() -> PathBuf {
    let found = match std::env::var_os("DL7_NGINX") {
        Some(p) => Some(PathBuf::from(p)),
        None => std::iter::once(PathBuf::from("/usr/sbin/nginx"))
            .chain(
                std::env::var_os("PATH")
                    .map(|path| {
                        std::env::split_paths(&path)
                            .map(|d| d.join("nginx"))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            )
            .find(|p| p.is_file()),
    };
    match found {
        Some(p) if p.is_file() => p,
        _ => panic!("{NOT_INSTALLED}"),
    }
}

/// Kills nginx when dropped.
struct NginxGuard {
    child: Child,
}

impl Drop for NginxGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, front: u16, backends: &[u16]) -> String {
    let d = dir.display();
    let servers: String = backends
        .iter()
        .zip(WEIGHTS)
        .map(|(p, w)| format!("        server 127.0.0.1:{p} weight={w};\n"))
        .collect();
    let listens: String = backends
        .iter()
        .map(|p| format!("        listen 127.0.0.1:{p};\n"))
        .collect();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream pool {{
        hash $request_uri consistent;
{servers}    }}
    server {{
        listen 127.0.0.1:{front};
        location / {{ proxy_pass http://pool; }}
    }}
    server {{
{listens}        location / {{ return 200 \"$server_port\"; }}
    }}
}}
"
    )
}

fn start_nginx(dir: &Path, front: u16, backends: &[u16]) -> NginxGuard {
    let conf = dir.join("nginx.conf");
    fs::write(&conf, config(dir, front, backends)).expect("write nginx.conf");
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start nginx ({e}); {NOT_INSTALLED}"));
    let mut guard = NginxGuard { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    let front_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, front));
    loop {
        if let Ok(Some(status)) = guard.child.try_wait() {
            let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited with {status} before listening: {log}");
        }
        if TcpStream::connect_timeout(&front_addr, Duration::from_millis(200)).is_ok() {
            return guard;
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not listen on port {front} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET `uri` through nginx; returns the backend port from the body.
fn backend_for(front: u16, uri: &str) -> u16 {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, front));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to nginx");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {uri} HTTP/1.1\r\nHost: dl7.test\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{uri}: {head}");
    body.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{uri}: body {body:?} is not a port"))
}

/// Distinct request URIs of the shapes caches see: paths, queries, escapes.
fn uri(i: usize) -> String {
    match i % 4 {
        0 => format!("/obj/{i}.jpg"),
        1 => format!("/static/{}/app-{i}.js?v={}", i % 17, i * 31 % 1000),
        2 => format!("/video/seg-{i:05}.ts"),
        _ => format!("/search?q=item%20{i}&page={}", i % 9),
    }
}

#[test]
fn nginx_scheme_picks_the_server_real_nginx_picks() {
    let ports = free_ports(1 + WEIGHTS.len());
    let (front, backends) = (ports[0], &ports[1..]);
    // Declared first, dropped last: nginx is gone before its directory is removed.
    let dir = temp_dir("nginx");
    let _nginx = start_nginx(dir.path(), front, backends);

    let members: Vec<Member> = backends
        .iter()
        .zip(WEIGHTS)
        .map(|(p, w)| Member::new(format!("127.0.0.1:{p}"), w))
        .collect();
    let ours = scheme::build("nginx", &members).expect("build the nginx scheme");

    let mut mismatches = Vec::new();
    let mut used = vec![0usize; backends.len()];
    for i in 0..URIS {
        let u = uri(i);
        let theirs = backend_for(front, &u);
        let mine = ours.pick(u.as_bytes());
        used[mine] += 1;
        if backends[mine] != theirs {
            mismatches.push(format!("{u}: nginx chose {theirs}, dl7 {}", backends[mine]));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {URIS} URIs differ, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    assert!(
        used.iter().all(|&n| n > 0),
        "every backend should own some URIs: {used:?}"
    );
}
