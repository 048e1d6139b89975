//! What the front's BGP speaker (BIRD 2) says about its sessions, read from its control
//! socket the way `birdc show protocols` reads it, for the daemon's metrics.
//!
//! The control protocol is line based: every line starts with a four-digit code and a dash
//! (more lines follow) or a space (the last line); a line that starts with a space continues
//! the previous code. `show protocols` answers a `2002` header and one `1002` row per
//! protocol: name, protocol, table, state, since, info. A BGP protocol is `up` exactly when
//! its session is established.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
    time::timeout,
};

/// Where Debian's bird2 package puts the control socket.
pub const DEFAULT_SOCKET: &str = "/run/bird/bird.ctl";
/// The longest a query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// The most lines a reply may have (a front has a handful of protocols).
const MAX_LINES: usize = 4096;

/// One protocol of `show protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    /// `BGP`, `BFD`, `Direct`, `Kernel`, ...
    pub proto: String,
    /// `up`, `down`, `start`, ...
    pub state: String,
}

impl Protocol {
    /// A BGP session that is established.
    pub fn is_bgp_up(&self) -> bool {
        self.proto == "BGP" && self.state == "up"
    }
}

/// `show protocols` through the control socket at `socket`.
pub async fn protocols(socket: &Path) -> Result<Vec<Protocol>> {
    timeout(QUERY_TIMEOUT, query(socket, "show protocols"))
        .await
        .with_context(|| {
            format!(
                "{} did not answer within {QUERY_TIMEOUT:?}",
                socket.display()
            )
        })?
        .map(|lines| parse_protocols(&lines))
}

/// Sends `command` and returns the reply's lines as (code, text).
async fn query(socket: &Path, command: &str) -> Result<Vec<(u16, String)>> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to BIRD at {}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // The greeting: `0001 BIRD 2.0.12 ready.`
    read_reply(&mut lines).await?;
    write.write_all(format!("{command}\n").as_bytes()).await?;
    read_reply(&mut lines).await
}

async fn read_reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<Vec<(u16, String)>> {
    let mut reply = Vec::new();
    let mut code = 0u16;
    while reply.len() < MAX_LINES {
        let Some(line) = lines.next_line().await? else {
            bail!("BIRD closed the control connection mid-reply");
        };
        match parse_line(&line, code) {
            Some((c, last, text)) => {
                code = c;
                if c >= 8000 {
                    bail!("BIRD: {text}");
                }
                reply.push((c, text.to_owned()));
                if last {
                    return Ok(reply);
                }
            }
            None => bail!("BIRD sent a line that is not its protocol: {line:?}"),
        }
    }
    bail!("BIRD's reply has more than {MAX_LINES} lines")
}

/// (code, is the last line, text) of one reply line; `previous` is the code a continuation
/// line (one that starts with a space) belongs to.
fn parse_line(line: &str, previous: u16) -> Option<(u16, bool, &str)> {
    if let Some(text) = line.strip_prefix(' ') {
        return (previous != 0).then_some((previous, false, text));
    }
    let code: u16 = line.get(..4)?.parse().ok()?;
    match line.as_bytes().get(4) {
        Some(b'-') => Some((code, false, &line[5..])),
        Some(b' ') => Some((code, true, &line[5..])),
        None => Some((code, true, "")),
        _ => None,
    }
}

fn parse_protocols(lines: &[(u16, String)]) -> Vec<Protocol> {
    lines
        .iter()
        .filter(|(code, _)| *code == 1002)
        .filter_map(|(_, text)| {
            let mut fields = text.split_whitespace();
            let name = fields.next()?;
            let proto = fields.next()?;
            let _table = fields.next()?;
            let state = fields.next()?;
            Some(Protocol {
                name: name.to_owned(),
                proto: proto.to_owned(),
                state: state.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_protocols_rows_and_continuations() {
        let reply = "2002-Name       Proto      Table      State  Since         Info\n\
                     1002-device1    Device     ---        up     10:07:12.123  \n \
                     vips       Direct     ---        up     10:07:12.123  \n \
                     router     BGP        ---        up     10:07:13.456  Established   \n \
                     backup     BGP        ---        start  10:07:12.123  Active        Socket: Connection refused\n\
                     0000 ";
        let mut code = 0;
        let mut lines = Vec::new();
        for line in reply.lines() {
            let (c, last, text) = parse_line(line, code).expect("a protocol line");
            code = c;
            lines.push((c, text.to_owned()));
            assert_eq!(last, line.starts_with("0000"));
        }
        let protocols = parse_protocols(&lines);
        assert_eq!(protocols.len(), 4);
        assert!(protocols[2].is_bgp_up());
        assert_eq!(protocols[3].name, "backup");
        assert!(!protocols[3].is_bgp_up());
        assert!(!protocols[0].is_bgp_up(), "only BGP sessions count");
    }

    #[test]
    fn lines_outside_the_protocol_are_refused() {
        assert_eq!(parse_line("0001 BIRD 2.0.12 ready.", 0).unwrap().0, 1);
        assert!(parse_line("hello", 0).is_none());
        assert!(parse_line(" orphan continuation", 0).is_none());
        assert!(parse_line("12x4-oops", 0).is_none());
    }
}
