//! `l7-sidecar route`: prints the owner of each key under a scheme, one per line, so that
//! operators can check where a URL lives and scripts can pre-warm the right cache.
//!
//! ```text
//! $ l7-sidecar route --scheme ketama --members h1:80,h2:80,h3:80 /a.jpg /b.jpg
//! h3:80
//! h2:80
//! $ printf '/a.jpg\n' | l7-sidecar route --scheme ketama --members h1:80,h2:80,h3:80 --explain
//! /a.jpg -> h3:80 (candidates: h3:80,h2:80,h1:80)
//! ```

use std::io::{self, BufRead, BufWriter, Write};

use anyhow::{Context, bail};
use clap::Args;
use l7_sidecar::scheme::{self, Member, Scheme};

/// Arguments of `route`.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Hashing scheme (rr, md5, mit-ch, carp, mod-ch, ht-rr, ketama, nginx, rendezvous, jump,
    /// maglev, bounded).
    #[arg(long)]
    scheme: String,
    /// Comma-separated member names, e.g. 10.0.0.1:80,10.0.0.2:80; printed exactly as given.
    #[arg(long)]
    members: String,
    /// Comma-separated weights, one per member (default: all 1).
    #[arg(long)]
    weights: Option<String>,
    /// Also print the failover order: `KEY -> OWNER (candidates: A,B,C)`.
    #[arg(long)]
    explain: bool,
    /// Keys to route; read from stdin, one per line, when none are given.
    keys: Vec<String>,
}

/// Parses `--members` and `--weights` into a member list.
fn parse_members(members: &str, weights: Option<&str>) -> anyhow::Result<Vec<Member>> {
    let names: Vec<&str> = members.split(',').collect();
    let weights: Vec<u32> = match weights {
        None => vec![1; names.len()],
        Some(list) => list
            .split(',')
            .map(|w| {
                w.trim().parse::<u32>().with_context(|| {
                    format!(
                        "--weights: {w:?} is not a whole number from 0 to {}",
                        u32::MAX
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if weights.len() != names.len() {
        bail!(
            "--weights has {} values but --members has {} members",
            weights.len(),
            names.len()
        );
    }
    Ok(names
        .into_iter()
        .zip(weights)
        .map(|(n, w)| Member::new(n, w))
        .collect())
}

/// Writes the answer for one key.
fn route_one(
    out: &mut impl Write,
    s: &dyn Scheme,
    members: &[Member],
    key: &[u8],
    explain: bool,
    order: &mut Vec<usize>,
) -> io::Result<()> {
    if !explain {
        return writeln!(out, "{}", members[s.pick(key)].name);
    }
    s.candidates(key, order);
    let names: Vec<&str> = order.iter().map(|&i| members[i].name.as_str()).collect();
    writeln!(
        out,
        "{} -> {} (candidates: {})",
        String::from_utf8_lossy(key),
        names[0],
        names.join(",")
    )
}

/// Runs `route`.
pub fn run(args: RouteArgs) -> anyhow::Result<()> {
    let info = scheme::lookup(&args.scheme)?;
    let members = parse_members(&args.members, args.weights.as_deref())?;
    let s = info.build(&members)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut order = Vec::with_capacity(members.len());
    let result = if args.keys.is_empty() {
        route_stdin(&mut out, s.as_ref(), &members, args.explain, &mut order)
    } else {
        args.keys.iter().try_for_each(|k| {
            route_one(
                &mut out,
                s.as_ref(),
                &members,
                k.as_bytes(),
                args.explain,
                &mut order,
            )
        })
    };
    match result.and_then(|()| out.flush()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Routes every line of stdin (bytes, not necessarily UTF-8; a trailing CR is dropped).
fn route_stdin(
    out: &mut impl Write,
    s: &dyn Scheme,
    members: &[Member],
    explain: bool,
    order: &mut Vec<usize>,
) -> io::Result<()> {
    for line in io::stdin().lock().split(b'\n') {
        let line = line?;
        let key = line.strip_suffix(b"\r").unwrap_or(&line);
        route_one(out, s, members, key, explain, order)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_default_to_one_and_must_match() {
        let m = parse_members("a,b", None).unwrap();
        assert_eq!(m, vec![Member::new("a", 1), Member::new("b", 1)]);
        assert_eq!(parse_members("a,b", Some("2, 3")).unwrap()[1].weight, 3);
        assert!(parse_members("a,b", Some("1")).is_err());
        assert!(parse_members("a,b", Some("1,x")).is_err());
        assert!(parse_members("a,b", Some("1,-1")).is_err());
    }

    #[test]
    fn explain_format() {
        let members = [Member::new("a", 1)];
        let s = scheme::build("md5", &members).unwrap();
        let mut out = Vec::new();
        route_one(&mut out, s.as_ref(), &members, b"/k", true, &mut Vec::new()).unwrap();
        assert_eq!(out, b"/k -> a (candidates: a)\n");
    }
}
