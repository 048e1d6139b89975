//! A stand-in for the front daemon's membership endpoint (`l4-ctl daemon`'s `GET /members`,
//! which needs XDP and network namespaces and is tested end to end with the testbed): it
//! answers with a membership the test sets and changes, or accepts connections and never
//! answers (a hung front).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One real of a VIP as the front lists it.
#[derive(Debug, Clone, Copy)]
pub struct Real<'a> {
    pub address: &'a str,
    pub weight: u32,
    /// `active`, `drained` or `down`.
    pub state: &'a str,
}

/// An active real of weight 1.
pub fn active(address: &str) -> Real<'_> {
    Real {
        address,
        weight: 1,
        state: "active",
    }
}

#[derive(Debug, Clone)]
enum Mode {
    /// 200 with this JSON for `GET /members`.
    Answer(String),
    /// Accept, read nothing, answer nothing.
    Hang,
}

/// A membership endpoint on `ip`, on a free port.
pub struct Front {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Front {
    /// Starts hanging (accepting, never answering) until [`serve`](Self::serve).
    pub fn start(ip: Ipv4Addr) -> Front {
        let listener = TcpListener::bind((ip, 0)).expect("bind the front");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let mode = Arc::new(Mutex::new(Mode::Hang));
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (mode, answered, stop) = (mode.clone(), answered.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut hung = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let now = mode.lock().expect("mode").clone();
                    match now {
                        Mode::Hang => hung.push(stream),
                        Mode::Answer(body) => {
                            hung.clear();
                            if answer(stream, &body) {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        };
        Front {
            addr,
            mode,
            answered,
            stop,
            thread: Some(thread),
        }
    }

    /// The URL to give `members-from`.
    pub fn url(&self) -> String {
        format!("http://{}/members", self.addr)
    }

    /// Answers from now on with this membership: `generation` and, per VIP, its reals.
    pub fn serve(&self, generation: u64, vips: &[(&str, &[Real<'_>])]) {
        let vips: Vec<String> = vips
            .iter()
            .map(|(vip, reals)| {
                let reals: Vec<String> = reals
                    .iter()
                    .map(|r| {
                        format!(
                            r#"{{"address":"{}","weight":{},"state":"{}","encap":"l2"}}"#,
                            r.address, r.weight, r.state
                        )
                    })
                    .collect();
                format!(r#"{{"vip":"{vip}","reals":[{}]}}"#, reals.join(","))
            })
            .collect();
        let body = format!(
            r#"{{"generation":{generation},"vips":[{}]}}"#,
            vips.join(",")
        );
        *self.mode.lock().expect("mode") = Mode::Answer(body);
    }

    /// Accepts connections and never answers from now on.
    pub fn hang(&self) {
        *self.mode.lock().expect("mode") = Mode::Hang;
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request head and answers it as the daemon does (`GET /members`: the JSON, 404
/// otherwise, then close); true when it was answered.
fn answer(mut stream: TcpStream, body: &str) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let (status, body) = if head.starts_with(b"GET /members ") {
        ("200 OK", body)
    } else {
        ("404 Not Found", "not found\n")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).is_ok()
}
