//! The hottest keys a sidecar forwards, for operators chasing a hot spot (`GET /hot` on the
//! admin listener): Space-Saving (Metwally, Agrawal, El Abbadi, ICDT 2005) over the requests
//! whose key the relay cache's sketch already finds hot, so that cold keys never touch it.
//!
//! A table of `k` entries: a key in the table counts one more; a key not in it takes the
//! place of the entry with the smallest count and starts from that count plus one, which is
//! also the bound of its overcount. Every key asked for more often than a `1/k` share of the
//! hot requests is in the table. The counts halve when the sketch ages, so that the list
//! follows what is hot lately. The table is behind a mutex taken with `try_lock`: a request
//! that finds it taken is not counted (the list is a view; a request never waits for it), and
//! a replaced entry reuses its key's buffer.

use std::fmt::Write as _;
use std::sync::Mutex;

/// The table.
#[derive(Debug)]
pub struct TopK {
    table: Mutex<Table>,
    k: usize,
}

#[derive(Debug, Default)]
struct Table {
    entries: Vec<Entry>,
    /// The sketch's generation the counts were last halved for.
    generation: u64,
}

#[derive(Debug)]
struct Entry {
    key: Vec<u8>,
    count: u64,
    /// How much of `count` may belong to the keys it replaced.
    overcount: u64,
}

/// One key of [`TopK::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hot {
    pub key: Vec<u8>,
    /// Requests counted for it (halved at each of the sketch's agings).
    pub count: u64,
    /// The most of `count` that may be other keys' (the key's requests are at least
    /// `count - overcount`).
    pub overcount: u64,
}

impl TopK {
    /// A table of the `k` hottest keys.
    pub fn new(k: usize) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            k: k.max(1),
        }
    }

    /// Counts a request for hot `key`; `generation` is the sketch's (see
    /// [`super::sketch::Sketch::generation`]).
    pub fn record(&self, key: &[u8], generation: u64) {
        let Ok(mut table) = self.table.try_lock() else {
            return;
        };
        table.age_to(generation);
        if let Some(e) = table.entries.iter_mut().find(|e| e.key == key) {
            e.count += 1;
            return;
        }
        if table.entries.len() < self.k {
            table.entries.push(Entry {
                key: key.to_vec(),
                count: 1,
                overcount: 0,
            });
            return;
        }
        if let Some(e) = table.entries.iter_mut().min_by_key(|e| e.count) {
            e.overcount = e.count;
            e.count += 1;
            e.key.clear();
            e.key.extend_from_slice(key);
        }
    }

    /// The keys counted since their counts last faded to nothing, hottest first.
    pub fn snapshot(&self, generation: u64) -> Vec<Hot> {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.age_to(generation);
        let mut hot: Vec<Hot> = table
            .entries
            .iter()
            .filter(|e| e.count > 0)
            .map(|e| Hot {
                key: e.key.clone(),
                count: e.count,
                overcount: e.overcount,
            })
            .collect();
        hot.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        hot
    }
}

impl Table {
    /// Halves the counts once per aging of the sketch since the last call.
    fn age_to(&mut self, generation: u64) {
        let halvings = generation.wrapping_sub(self.generation).min(63) as u32;
        if halvings == 0 {
            return;
        }
        self.generation = generation;
        for e in &mut self.entries {
            e.count >>= halvings;
            e.overcount >>= halvings;
        }
    }
}

/// `hot` as the JSON document of `GET /hot`:
/// `{"keys":[{"key":"...","count":N,"overcount":N},...]}`, keys as text (bytes that are not
/// UTF-8 replaced).
pub fn to_json(hot: &[Hot]) -> String {
    let mut out = String::from("{\"keys\":[");
    for (i, h) in hot.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":\"");
        for c in String::from_utf8_lossy(&h.key).chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        let _ = write!(
            out,
            "\",\"count\":{},\"overcount\":{}}}",
            h.count, h.overcount
        );
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heaviest_keys_stay_and_light_ones_take_turns_at_the_bottom() {
        let top = TopK::new(3);
        for round in 0..100 {
            for _ in 0..5 {
                top.record(b"/a", 0);
            }
            for _ in 0..3 {
                top.record(b"/b", 0);
            }
            top.record(format!("/light-{round}").as_bytes(), 0);
        }
        let hot = top.snapshot(0);
        assert_eq!(hot.len(), 3);
        assert_eq!((hot[0].key.as_slice(), hot[0].count), (&b"/a"[..], 500));
        assert_eq!((hot[1].key.as_slice(), hot[1].count), (&b"/b"[..], 300));
        assert_eq!(hot[0].overcount, 0);
        // The third place went from light key to light key; its count says so.
        assert!(hot[2].key.starts_with(b"/light-"));
        assert_eq!(hot[2].overcount, hot[2].count - 1);
    }

    #[test]
    fn counts_halve_with_the_sketch_and_fade_out() {
        let top = TopK::new(1);
        for _ in 0..8 {
            top.record(b"/x", 7);
        }
        assert_eq!(top.snapshot(7)[0].count, 8);
        assert_eq!(top.snapshot(8)[0].count, 4);
        assert_eq!(top.snapshot(10)[0].count, 1);
        assert!(top.snapshot(11).is_empty());
        // A faded entry is replaced first.
        top.record(b"/y", 11);
        assert_eq!(top.snapshot(11)[0].key, b"/y");
    }

    #[test]
    fn json_escapes_what_it_must() {
        let hot = [
            Hot {
                key: b"h/\"q\"\\\x01\xff".to_vec(),
                count: 3,
                overcount: 1,
            },
            Hot {
                key: b"h/b".to_vec(),
                count: 2,
                overcount: 0,
            },
        ];
        assert_eq!(
            to_json(&hot),
            "{\"keys\":[{\"key\":\"h/\\\"q\\\"\\\\\\u0001\u{fffd}\",\"count\":3,\"overcount\":1},\
             {\"key\":\"h/b\",\"count\":2,\"overcount\":0}]}\n"
        );
        assert_eq!(to_json(&[]), "{\"keys\":[]}\n");
    }
}
