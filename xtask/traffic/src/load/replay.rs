//! Request logs replayed by `cargo xtask load --replay FILE`.
//!
//! Formats (detected from the first line that is neither blank nor a `#` comment, unless
//! `--replay-format` names one):
//! - `urls`: one URL per line, a path (`/a/b?c`) or an absolute URL (`http://host/a/b`) (with
//!   `--replay-format urls`, the first word of each line);
//! - `squid`: Squid's native access.log (`time elapsed client code/status bytes method URL
//!   ...`): the URL is the 7th field, the size the 5th;
//! - `clf`: Common or Combined Log Format (`host ident user [date] "GET /a HTTP/1.1" status
//!   bytes ...`): the request line is the first quoted field, the size follows the status.
//!
//! Only GET and HEAD requests are replayed (others are skipped and counted). Absolute URLs are
//! sent as their path and query. When the log gives a response size (Squid, CLF) and the URL
//! has no `size=` parameter, `size=<bytes>` is appended (capped at the origin's maximum) so
//! that the synthetic origin serves objects of the logged sizes.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::origin;

/// A log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Detect from the first line.
    Auto,
    /// One URL per line.
    Urls,
    /// Squid's native access.log.
    Squid,
    /// Common or Combined Log Format.
    Clf,
}

/// One request to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// HEAD instead of GET.
    pub head: bool,
    /// Path and query.
    pub target: String,
}

/// A parsed log.
#[derive(Debug)]
pub struct Log {
    /// The format used (never `Auto`).
    pub format: LogFormat,
    pub entries: Vec<Entry>,
    /// Lines that are not requests to replay (other methods, unparsable lines).
    pub skipped: usize,
}

/// Reads and parses the log at `path`.
pub fn read(path: &Path, format: LogFormat) -> Result<Log> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&String::from_utf8_lossy(&bytes), format)
        .with_context(|| format!("replaying {}", path.display()))
}

/// Parses a log's text.
pub fn parse(text: &str, format: LogFormat) -> Result<Log> {
    let lines = || {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
    };
    let format = match format {
        LogFormat::Auto => match lines().next() {
            None => bail!("the log has no requests"),
            Some(first) => detect(first).with_context(|| {
                format!("cannot tell the log's format from its first line {first:?}: use --replay-format")
            })?,
        },
        f => f,
    };
    let mut entries = Vec::new();
    let mut skipped = 0;
    for line in lines() {
        match parse_line(format, line) {
            Some(entry) => entries.push(entry),
            None => skipped += 1,
        }
    }
    ensure!(!entries.is_empty(), "no GET or HEAD request in the log");
    Ok(Log {
        format,
        entries,
        skipped,
    })
}

fn detect(line: &str) -> Option<LogFormat> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if line.contains('"') && clf(line).is_some() {
        Some(LogFormat::Clf)
    } else if fields.len() >= 7 && fields[0].parse::<f64>().is_ok() && fields[3].contains('/') {
        Some(LogFormat::Squid)
    } else if fields.len() == 1 {
        Some(LogFormat::Urls)
    } else {
        None
    }
}

fn parse_line(format: LogFormat, line: &str) -> Option<Entry> {
    let (method, url, size) = match format {
        LogFormat::Auto | LogFormat::Urls => ("GET", line.split_whitespace().next()?, None),
        LogFormat::Squid => {
            let f: Vec<&str> = line.split_whitespace().collect();
            (
                *f.get(5)?,
                *f.get(6)?,
                f.get(4).and_then(|b| b.parse().ok()),
            )
        }
        LogFormat::Clf => clf(line)?,
    };
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let target = origin_form(url)?;
    Some(Entry {
        head,
        target: with_size(target, size),
    })
}

/// The method, URL and response size of a Common/Combined Log Format line.
fn clf(line: &str) -> Option<(&str, &str, Option<u64>)> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut request = request.split_whitespace();
    let (method, url) = (request.next()?, request.next()?);
    let mut after = rest.split_whitespace();
    let _status: u16 = after.next()?.parse().ok()?;
    Some((method, url, after.next().and_then(|b| b.parse().ok())))
}

/// A URL as path and query; `None` when it has no path (`host:443` of CONNECT, `-`).
fn origin_form(url: &str) -> Option<&str> {
    let url = url.split('#').next()?;
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    if url.starts_with('/') {
        return Some(url);
    }
    let (_, rest) = url.split_once("://")?;
    Some(rest.find('/').map_or("/", |i| &rest[i..]))
}

/// `target` with `size=<bytes>` appended when the log gave a size and the URL names none.
fn with_size(target: &str, size: Option<u64>) -> String {
    let has_size = target
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("size=")));
    match size {
        Some(n) if n > 0 && !has_size => {
            let sep = if target.contains('?') { '&' } else { '?' };
            format!("{target}{sep}size={}", n.min(origin::MAX_SIZE))
        }
        _ => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(log: &Log) -> Vec<(bool, &str)> {
        log.entries
            .iter()
            .map(|e| (e.head, e.target.as_str()))
            .collect()
    }

    #[test]
    fn url_lists() {
        let log = parse(
            "# a comment\n/a/b\n\nhttp://example.com/c?d=1\nhttp://example.com\n/e?size=7\n",
            LogFormat::Auto,
        )
        .unwrap();
        assert_eq!(log.format, LogFormat::Urls);
        assert_eq!(
            targets(&log),
            [
                (false, "/a/b"),
                (false, "/c?d=1"),
                (false, "/"),
                (false, "/e?size=7")
            ]
        );
        assert_eq!(log.skipped, 0);
    }

    #[test]
    fn squid_access_logs() {
        let text = "\
1286536309.634    121 192.168.0.5 TCP_MISS/200 5123 GET http://www.example.com/index.html - DIRECT/93.184.216.34 text/html
1286536310.001      0 192.168.0.5 TCP_HIT/200 311 HEAD http://www.example.com/a.png?x=1 - NONE/- image/png
1286536310.512     85 192.168.0.7 TCP_TUNNEL/200 4411 CONNECT www.example.com:443 - HIER_DIRECT/93.184.216.34 -
1286536311.100     12 192.168.0.7 TCP_MISS/200 0 GET http://www.example.com/empty - DIRECT/93.184.216.34 -
1286536311.300     12 192.168.0.7 TCP_MISS/201 88 POST http://www.example.com/form - DIRECT/93.184.216.34 -
";
        let log = parse(text, LogFormat::Auto).unwrap();
        assert_eq!(log.format, LogFormat::Squid);
        assert_eq!(
            targets(&log),
            [
                (false, "/index.html?size=5123"),
                (true, "/a.png?x=1&size=311"),
                (false, "/empty"),
            ]
        );
        assert_eq!(log.skipped, 2, "CONNECT and POST");
    }

    #[test]
    fn common_and_combined_logs() {
        let text = r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326
10.0.0.2 - - [10/Oct/2000:13:55:37 -0700] "GET /big?size=10 HTTP/1.1" 200 999999 "http://ref.example/" "Mozilla/5.0 (X11)"
10.0.0.3 - - [10/Oct/2000:13:55:38 -0700] "HEAD /h HTTP/1.1" 304 -
10.0.0.3 - - [10/Oct/2000:13:55:39 -0700] "POST /p HTTP/1.1" 200 12
garbage line
"#;
        let log = parse(text, LogFormat::Auto).unwrap();
        assert_eq!(log.format, LogFormat::Clf);
        assert_eq!(
            targets(&log),
            [
                (false, "/apache_pb.gif?size=2326"),
                (false, "/big?size=10"),
                (true, "/h"),
            ]
        );
        assert_eq!(log.skipped, 2, "POST and the garbage line");
    }

    #[test]
    fn formats_can_be_forced_and_bad_logs_fail() {
        let log = parse("/x y\n", LogFormat::Urls).unwrap();
        assert_eq!(targets(&log), [(false, "/x")], "the first word of the line");
        assert!(parse("", LogFormat::Auto).is_err());
        assert!(parse("two words\n", LogFormat::Auto).is_err());
        assert!(parse("-\n", LogFormat::Urls).is_err(), "no request at all");
        assert_eq!(
            with_size("/a", Some(origin::MAX_SIZE * 2)),
            format!("/a?size={}", origin::MAX_SIZE)
        );
    }
}
