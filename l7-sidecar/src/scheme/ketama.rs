//! `ketama`: the libketama (Last.fm, 2007) continuum, so that dl7 maps keys exactly as
//! memcached clients built on libketama (and its many ports) do for the same server list.
//!
//! As in libketama's `ketama_create_continuum`: with `n` servers and total weight `W`
//! (libketama's "memory"), server `i` gets `ks = floorf(pct * 40.0 * (float)n)` MD5 digests,
//! `pct = (float)w_i / (float)W` - computed in the same mix of single and double precision as
//! the C code, which matters (7 equal servers give 40 digests in C but 39 in pure double).
//! Digest `k` is MD5 of `"<name>-<k>"`; each yields 4 points, the little-endian `u32`s at
//! bytes 4h..4h+3. Points are sorted ascending; a key's hash is the little-endian `u32` of
//! the first 4 bytes of MD5(key); its server is at the first point >= hash, wrapping to the
//! first point (libketama's binary search in `ketama_get_server` returns exactly that).
//! libketama sorts with `qsort`, which leaves equal points in no defined order; dl7 orders
//! them by name, so the result is independent of member order. Failover: the next distinct
//! servers clockwise.
//!
//! Test vectors (tests below) come from the libketama repository (github.com/RJ/ketama):
//! `python_ketama/tests.py` (`hashi("test")`, a two-server continuum) and `libketama/test.sh`,
//! which pins the MD5 of `ketama_test`'s output for keys "0".."999999" over `ketama.servers`.

use md5::{Digest, Md5};

use super::contract::{BuildError, Member, Scheme, name_ranks, total_weight, validate};
use super::ring::Ring;

/// libketama's `ketama_hashi`: first four bytes of MD5(key), little-endian.
pub(crate) fn hashi(key: &[u8]) -> u32 {
    let d = Md5::digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// Number of MD5 digests (4 points each) libketama gives a server.
fn digests_for(weight: u32, total: u64, servers: usize) -> u32 {
    let pct = weight as f32 / total as f32;
    // `pct * 40.0` promotes to double, `* (float)n` stays double, floorf() takes a float.
    let product = f64::from(pct) * 40.0 * f64::from(servers as f32);
    (product as f32).floor() as u32
}

/// libketama-compatible continuum.
#[derive(Debug)]
pub struct Ketama {
    ring: Ring,
}

impl Ketama {
    /// Builds the continuum for `members` (weight = libketama's memory column).
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        validate(members)?;
        let total = total_weight(members);
        let mut points = Vec::with_capacity(members.len() * 160);
        for (i, m) in members.iter().enumerate() {
            for k in 0..digests_for(m.weight, total, members.len()) {
                let d = Md5::digest(format!("{}-{}", m.name, k).as_bytes());
                for h in 0..4 {
                    let point =
                        u32::from_le_bytes([d[4 * h], d[4 * h + 1], d[4 * h + 2], d[4 * h + 3]]);
                    points.push((u64::from(point), i as u32));
                }
            }
        }
        // The largest share gets at least 40 digests, so the continuum is never empty.
        Ok(Self {
            ring: Ring::new(points, &name_ranks(members), false),
        })
    }
}

impl Scheme for Ketama {
    fn pick(&self, key: &[u8]) -> usize {
        self.ring.pick(u64::from(hashi(key)))
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        self.ring.candidates(u64::from(hashi(key)), out);
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn hashi_vector_from_python_ketama() {
        assert_eq!(hashi(b"test"), 3_446_378_249);
    }

    #[test]
    fn two_server_vector_from_python_ketama() {
        let members = [
            Member::new("127.0.0.1:11211", 600),
            Member::new("127.0.0.1:11212", 400),
        ];
        let k = Ketama::new(&members).unwrap();
        assert_eq!(k.ring.len(), 160 * 2);
        let pos = k.ring.position(u64::from(hashi(b"test")));
        assert_eq!(k.ring.point(pos), 3_454_255_383);
        assert_eq!(k.pick(b"test"), 0);
    }

    #[test]
    fn float_rounding_matches_c() {
        // 7 equal servers: C gets 40 digests each; a pure-double port gets 39.
        assert_eq!(digests_for(1, 7, 7), 40);
        assert_eq!(digests_for(600, 4300, 8), 44);
    }

    /// libketama/test.sh: `ketama_test ketama.servers | md5sum` must be
    /// 5672b131391f5aa2b280936aec1eea74. ketama_test prints `ketama_error()` (empty after a
    /// successful roll) and then, for keys "0".."999999", `"%u %u %s\n"` with the key hash,
    /// the chosen point and the server address.
    #[test]
    fn ketama_test_output_digest_matches_libketama() {
        let servers = [
            ("10.0.1.1:11211", 600),
            ("10.0.1.2:11211", 300),
            ("10.0.1.3:11211", 200),
            ("10.0.1.4:11211", 350),
            ("10.0.1.5:11211", 1000),
            ("10.0.1.6:11211", 800),
            ("10.0.1.7:11211", 950),
            ("10.0.1.8:11211", 100),
        ];
        let members: Vec<Member> = servers.iter().map(|&(n, w)| Member::new(n, w)).collect();
        let k = Ketama::new(&members).unwrap();
        let mut out = Md5::new();
        out.update(b"\n");
        let mut line = String::new();
        for i in 0..1_000_000u32 {
            line.clear();
            let key = i.to_string();
            let h = hashi(key.as_bytes());
            let pos = k.ring.position(u64::from(h));
            let _ = writeln!(
                line,
                "{h} {} {}",
                k.ring.point(pos),
                servers[k.ring.owner(pos)].0
            );
            out.update(line.as_bytes());
        }
        let digest: [u8; 16] = out.finalize().into();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5672b131391f5aa2b280936aec1eea74");
    }
}
