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

use anyhow::Context;
use clap::Args;
use l7_sidecar::members;
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
    let members = members::parse(&args.members, args.weights.as_deref())?;
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
    fn explain_format() {
        let members = [Member::new("a", 1)];
        let s = scheme::build("md5", &members).unwrap();
        let mut out = Vec::new();
        route_one(&mut out, s.as_ref(), &members, b"/k", true, &mut Vec::new()).unwrap();
        assert_eq!(out, b"/k -> a (candidates: a)\n");
    }
}
