//! Member lists as operators write them, shared by `route` and `serve` so that both read
//! `--members` and `--weights` the same way.
//!
//! `--members` is comma separated. For `route` each entry is a name; for `serve` an entry is
//! `NAME=ADDR:PORT` (the name is what the scheme hashes, the address is where the member's
//! peer port, or in central mode the backend, listens), and a bare `ADDR:PORT` means the name
//! is the address. `--weights` is a comma-separated list of whole numbers, one per member.
//!
//! ```
//! use l7_sidecar::members;
//!
//! let m = members::parse("a,b", Some("1,3")).unwrap();
//! assert_eq!((m[1].name.as_str(), m[1].weight), ("b", 3));
//! assert_eq!(members::split_entry("a=10.0.0.1:8081"), ("a", "10.0.0.1:8081"));
//! assert_eq!(members::split_entry("10.0.0.1:80"), ("10.0.0.1:80", "10.0.0.1:80"));
//! ```

use crate::scheme::Member;

/// Why a member list or weight list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    /// A weight that is not a whole number in `u32`.
    #[error("--weights: {0:?} is not a whole number from 0 to {max}", max = u32::MAX)]
    BadWeight(String),
    /// Not one weight per member.
    #[error("--weights has {weights} values but --members has {members} members")]
    CountMismatch {
        /// How many weights were given.
        weights: usize,
        /// How many members were given.
        members: usize,
    },
}

/// Names from a `route`-style list plus optional weights (default: all 1).
pub fn parse(members: &str, weights: Option<&str>) -> Result<Vec<Member>, MembersError> {
    with_weights(members.split(',').map(str::to_owned).collect(), weights)
}

/// Attaches the weights of a `--weights` list (default: all 1) to `names`, in order.
pub fn with_weights(
    names: Vec<String>,
    weights: Option<&str>,
) -> Result<Vec<Member>, MembersError> {
    let weights: Vec<u32> = match weights {
        None => vec![1; names.len()],
        Some(list) => list
            .split(',')
            .map(|w| {
                w.trim()
                    .parse::<u32>()
                    .map_err(|_| MembersError::BadWeight(w.to_owned()))
            })
            .collect::<Result<_, _>>()?,
    };
    if weights.len() != names.len() {
        return Err(MembersError::CountMismatch {
            weights: weights.len(),
            members: names.len(),
        });
    }
    Ok(names
        .into_iter()
        .zip(weights)
        .map(|(n, w)| Member::new(n, w))
        .collect())
}

/// Splits a `serve` entry into (name, address): `NAME=ADDR:PORT`, or `ADDR:PORT` for both.
pub fn split_entry(entry: &str) -> (&str, &str) {
    let entry = entry.trim();
    entry.split_once('=').unwrap_or((entry, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_default_to_one_and_must_match() {
        let m = parse("a,b", None).unwrap();
        assert_eq!(m, vec![Member::new("a", 1), Member::new("b", 1)]);
        assert_eq!(parse("a,b", Some("2, 3")).unwrap()[1].weight, 3);
        assert!(matches!(
            parse("a,b", Some("1")),
            Err(MembersError::CountMismatch { .. })
        ));
        assert!(parse("a,b", Some("1,x")).is_err());
        assert!(parse("a,b", Some("1,-1")).is_err());
    }

    #[test]
    fn entries_with_and_without_names() {
        assert_eq!(split_entry(" n=1.2.3.4:5 "), ("n", "1.2.3.4:5"));
        assert_eq!(split_entry("1.2.3.4:5"), ("1.2.3.4:5", "1.2.3.4:5"));
    }
}
