//! Helpers shared by the scheme tests: member lists, keys, shares and moved fractions.

use super::contract::{Member, Scheme};

/// `n` members named like real servers, with weights from `weight(i)`.
pub(crate) fn members(n: usize, weight: impl Fn(usize) -> u32) -> Vec<Member> {
    (0..n)
        .map(|i| Member::new(format!("10.0.{}.{}:80", i / 200, i % 200 + 1), weight(i)))
        .collect()
}

/// The `i`-th test key: URL-like, with path and query.
pub(crate) fn key(i: u64) -> String {
    format!("/objects/{i:x}/index.html?rev={}", i % 13)
}

/// Fraction of `keys` keys each member owns.
pub(crate) fn shares(s: &dyn Scheme, members: usize, keys: u64) -> Vec<f64> {
    let mut count = vec![0u64; members];
    for i in 0..keys {
        count[s.pick(key(i).as_bytes())] += 1;
    }
    count.iter().map(|&c| c as f64 / keys as f64).collect()
}

/// The owner's name for each of `keys` keys.
pub(crate) fn owners<'a>(s: &dyn Scheme, members: &'a [Member], keys: u64) -> Vec<&'a str> {
    (0..keys)
        .map(|i| members[s.pick(key(i).as_bytes())].name.as_str())
        .collect()
}

/// Fraction of positions where the two owner lists differ.
pub(crate) fn moved(a: &[&str], b: &[&str]) -> f64 {
    let n = a.iter().zip(b).filter(|(x, y)| x != y).count();
    n as f64 / a.len() as f64
}
