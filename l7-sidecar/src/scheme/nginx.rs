//! `nginx`: the same key -> server mapping as nginx's `hash $request_uri consistent;`
//! (ngx_http_upstream_hash_module.c, `ngx_http_upstream_init_chash` and
//! `ngx_http_upstream_find_chash_point`, unchanged from 1.7 to 1.2x), so a cache tier can move
//! from nginx to dl7 without reshuffling its content. Members are named as in nginx's
//! `server HOST:PORT weight=W;` lines, byte for byte.
//!
//! Ring construction, as nginx does it:
//! * The server name is split at the last `:` if everything after it is digits (a `unix:`
//!   prefix is stripped and gives an empty port); otherwise the whole name is the host and
//!   the port is empty.
//! * `base_hash` = CRC-32 state after `host`, one NUL byte, `port`.
//! * `160 * weight` points: point `j` = CRC-32 of `base_hash` continued with the previous
//!   point as 4 little-endian bytes (0 for the first point), finalised.
//! * Points are sorted by hash and equal hashes are dropped, keeping the first. nginx uses
//!   `qsort` (glibc's is a stable merge sort), so the first is the one from the server listed
//!   first; dl7 does the same, which is the only way member order can matter.
//!
//! Lookup: `hash = crc32(key)`; the first point >= hash, wrapping to point 0. On failure
//! nginx moves to the next point and skips servers already tried, which is the failover order
//! here. (nginx falls back to round robin after 20 failed tries or with a single server; that
//! does not change the first choice.)

use crc32fast::Hasher;

use super::contract::{BuildError, Member, Scheme, total_weight, validate};
use super::ring::Ring;

/// nginx's points per unit of weight.
const POINTS_PER_WEIGHT: u64 = 160;
/// Largest ring built (16 Mi points).
const MAX_POINTS: u64 = 1 << 24;

/// Splits `server` into nginx's (host, port) for hashing.
fn host_and_port(server: &[u8]) -> (&[u8], &[u8]) {
    if server.len() >= 5 && server[..5].eq_ignore_ascii_case(b"unix:") {
        return (&server[5..], &[]);
    }
    for (j, &c) in server.iter().rev().enumerate() {
        if c == b':' {
            let colon = server.len() - j - 1;
            return (&server[..colon], &server[colon + 1..]);
        }
        if !c.is_ascii_digit() {
            break;
        }
    }
    (server, &[])
}

/// The ring points nginx computes for one server.
fn server_points(server: &[u8], weight: u32) -> impl Iterator<Item = u32> {
    let (host, port) = host_and_port(server);
    let mut base = Hasher::new();
    base.update(host);
    base.update(&[0]);
    base.update(port);
    let mut prev: u32 = 0;
    (0..u64::from(weight) * POINTS_PER_WEIGHT).map(move |_| {
        let mut h = base.clone();
        h.update(&prev.to_le_bytes());
        prev = h.finalize();
        prev
    })
}

/// nginx `hash ... consistent` compatible ring.
#[derive(Debug)]
pub struct Nginx {
    ring: Ring,
}

impl Nginx {
    /// Builds nginx's ring for `members` named `HOST:PORT`, in configuration order.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        validate(members)?;
        let n_points = total_weight(members) * POINTS_PER_WEIGHT;
        if n_points > MAX_POINTS {
            return Err(BuildError::TooLarge {
                scheme: "nginx",
                what: "the ring (160 points per weight unit)",
                value: n_points,
                max: MAX_POINTS,
            });
        }
        let mut points = Vec::with_capacity(n_points as usize);
        for (i, m) in members.iter().enumerate() {
            points.extend(
                server_points(m.name.as_bytes(), m.weight).map(|p| (u64::from(p), i as u32)),
            );
        }
        // Configuration order breaks ties, as nginx's stable sort + dedup does.
        let config_order: Vec<u32> = (0..members.len() as u32).collect();
        Ok(Self {
            ring: Ring::new(points, &config_order, true),
        })
    }
}

impl Scheme for Nginx {
    fn pick(&self, key: &[u8]) -> usize {
        self.ring.pick(u64::from(crc32fast::hash(key)))
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        self.ring.candidates(u64::from(crc32fast::hash(key)), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_nginx() {
        assert_eq!(
            host_and_port(b"127.0.0.1:8080"),
            (&b"127.0.0.1"[..], &b"8080"[..])
        );
        assert_eq!(host_and_port(b"[::1]:80"), (&b"[::1]"[..], &b"80"[..]));
        assert_eq!(host_and_port(b"backend"), (&b"backend"[..], &b""[..]));
        assert_eq!(host_and_port(b"host:http"), (&b"host:http"[..], &b""[..]));
        assert_eq!(
            host_and_port(b"unix:/run/a.sock"),
            (&b"/run/a.sock"[..], &b""[..])
        );
    }

    #[test]
    fn first_point_is_crc32_of_host_nul_port_and_four_zero_bytes() {
        let first = server_points(b"10.0.0.1:80", 1).next();
        assert_eq!(first, Some(crc32fast::hash(b"10.0.0.1\x0080\0\0\0\0")));
        let pts: Vec<u32> = server_points(b"10.0.0.1:80", 1).take(2).collect();
        let mut second = b"10.0.0.1\x0080".to_vec();
        second.extend_from_slice(&pts[0].to_le_bytes());
        assert_eq!(pts[1], crc32fast::hash(&second));
    }
}
