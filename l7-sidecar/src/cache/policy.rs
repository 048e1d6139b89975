//! What RFC 9111 lets a shared cache store, and for how long: the response's `Cache-Control`
//! directives (5.2.2), whether it may be stored at all (3), its freshness lifetime (4.2.1,
//! with the heuristic of 4.2.2 where the RFC allows one) and its age when it arrived
//! (4.2.3). Pure functions of the head and the clock readings around the exchange, so that
//! every rule is tested on its own.
//!
//! Where the RFC leaves a choice, this cache takes the conservative one: a directive with an
//! invalid or repeated value makes the response stale (4.2.1), an `Expires` that is not a date
//! is in the past (5.3), the qualified forms of `no-cache` and `private` act as unqualified
//! (5.2.2.4, 5.2.2.7), and an `Age` whose first member is not a non-negative integer makes the
//! response stale (5.1 says to ignore it; a shared cache that cannot tell how old a response is
//! assumes the worst).
//!
//! Whose directives count: `CDN-Cache-Control` (RFC 9213) when the response has one, else
//! `Surrogate-Control` (Edge Architecture 1.0) when it has directives for this cache
//! (untargeted, or targeted at [`SURROGATE_TOKEN`], which the cache announces in
//! `Surrogate-Capability`), else `Cache-Control`.

use crate::http::Field;
use crate::http::date;
use crate::http::fields::{self, Kind};

/// A year: no lifetime or age is taken as longer (it keeps sums far from overflow).
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;
/// This cache's device token (Edge Architecture 1.0): announced to origins as
/// `Surrogate-Capability: dl7="Surrogate/1.0"`, and the target (`max-age=60;dl7`) of the
/// `Surrogate-Control` directives meant for it.
pub const SURROGATE_TOKEN: &str = "dl7";
/// The `Surrogate-Capability` value the cache sends its origin: its token, Edge Architecture
/// 1.0's surrogate capability.
pub const SURROGATE_CAPABILITY: &str = "dl7=\"Surrogate/1.0\"";
/// The heuristic lifetime is this share of the time since `Last-Modified` (4.2.2's typical
/// 10 %)...
const HEURISTIC_PERCENT: u64 = 10;
/// ...and at most a day.
const HEURISTIC_MAX: u64 = 24 * 3600;

/// A delta-seconds directive's value, as far as freshness is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seconds {
    /// Absent.
    Absent,
    /// A valid value (capped at [`MAX_SECONDS`]).
    Valid(u64),
    /// Present with no value, a value that is not a number, or given twice: the response
    /// is treated as stale.
    Invalid,
}

impl Seconds {
    fn set(&mut self, value: Option<&[u8]>) {
        *self = match (*self, value.and_then(|v| fields::decimal(unquote(v)))) {
            (Seconds::Absent, Some(n)) => Seconds::Valid(n.min(MAX_SECONDS)),
            // A second occurrence (RFC 9111 4.2.1: "or the response should be considered
            // stale"), or no number.
            _ => Seconds::Invalid,
        };
    }

    /// True when the directive was given (validly or not).
    pub fn is_present(self) -> bool {
        self != Seconds::Absent
    }

    /// The lifetime it gives: its value, 0 when invalid.
    fn lifetime(self) -> Option<u64> {
        match self {
            Seconds::Absent => None,
            Seconds::Valid(n) => Some(n),
            Seconds::Invalid => Some(0),
        }
    }
}

/// The `Cache-Control` directives of a response that a shared cache acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    pub max_age: Seconds,
    pub s_maxage: Seconds,
    pub no_store: bool,
    /// `no-cache`, qualified or not: stored, but never served without revalidation.
    pub no_cache: bool,
    /// `private`, qualified or not: not stored by a shared cache.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub stale_while_revalidate: Seconds,
    pub stale_if_error: Seconds,
    /// `must-understand`: stored only when the cache knows the status code's semantics.
    pub must_understand: bool,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            max_age: Seconds::Absent,
            s_maxage: Seconds::Absent,
            no_store: false,
            no_cache: false,
            private: false,
            public: false,
            must_revalidate: false,
            proxy_revalidate: false,
            stale_while_revalidate: Seconds::Absent,
            stale_if_error: Seconds::Absent,
            must_understand: false,
        }
    }
}

impl Directives {
    /// Reads the directives of a head: those of its `CDN-Cache-Control` fields when it has any
    /// (RFC 9213: a shared cache that honours them uses them instead of `Cache-Control`), else
    /// the `Surrogate-Control` directives for this cache when there are any (targeted at it
    /// when some are, else the untargeted ones), else those of `Cache-Control` (directive
    /// names are case-insensitive; unknown directives are ignored, RFC 9111 5.2.3).
    pub fn of(fields: &[Field], buf: &[u8]) -> Self {
        let of_kind = |kind: Kind| {
            fields
                .iter()
                .filter(move |f| f.kind == kind)
                .flat_map(|f| cache_control_list(f.value.of(buf)))
        };
        let mut d = Directives::default();
        if fields.iter().any(|f| f.kind == Kind::CdnCacheControl) {
            of_kind(Kind::CdnCacheControl).for_each(|e| d.set(e));
            return d;
        }
        let targeted = |target: Option<&'static [u8]>| {
            of_kind(Kind::SurrogateControl).filter_map(move |element| {
                let (directive, to) = match element.iter().position(|&b| b == b';') {
                    Some(i) => (&element[..i], Some(fields::trim(&element[i + 1..]))),
                    None => (element, None),
                };
                let ours = match (to, target) {
                    (Some(to), Some(target)) => to.eq_ignore_ascii_case(target),
                    (None, None) => true,
                    _ => false,
                };
                ours.then(|| fields::trim(directive))
            })
        };
        let token = Some(SURROGATE_TOKEN.as_bytes());
        if targeted(token).next().is_some() {
            targeted(token).for_each(|e| d.set_surrogate(e));
        } else if targeted(None).next().is_some() {
            targeted(None).for_each(|e| d.set_surrogate(e));
        } else {
            of_kind(Kind::CacheControl).for_each(|e| d.set(e));
        }
        d
    }

    /// Applies one `Cache-Control` (or `CDN-Cache-Control`) directive.
    fn set(&mut self, directive: &[u8]) {
        let (name, value) = split_directive(directive);
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if is("max-age") {
            self.max_age.set(value);
        } else if is("s-maxage") {
            self.s_maxage.set(value);
        } else if is("no-store") {
            self.no_store = true;
        } else if is("no-cache") {
            self.no_cache = true;
        } else if is("private") {
            self.private = true;
        } else if is("public") {
            self.public = true;
        } else if is("must-revalidate") {
            self.must_revalidate = true;
        } else if is("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if is("stale-while-revalidate") {
            self.stale_while_revalidate.set(value);
        } else if is("stale-if-error") {
            self.stale_if_error.set(value);
        } else if is("must-understand") {
            self.must_understand = true;
        }
    }

    /// Applies one `Surrogate-Control` directive (its target already stripped): `no-store`,
    /// and `max-age=N[+M]`, whose `+M` is how long the response may stand in for a failing
    /// origin once stale (as `stale-if-error`). The others (`content`, `no-store-remote`) are
    /// for surrogates that process content.
    fn set_surrogate(&mut self, directive: &[u8]) {
        let (name, value) = split_directive(directive);
        if name.eq_ignore_ascii_case(b"no-store") {
            self.no_store = true;
        } else if name.eq_ignore_ascii_case(b"max-age") {
            let (fresh, stale) = match value.and_then(|v| v.iter().position(|&b| b == b'+')) {
                Some(i) => {
                    let v = value.unwrap_or_default();
                    (Some(&v[..i]), Some(&v[i + 1..]))
                }
                None => (value, None),
            };
            self.max_age.set(fresh);
            if stale.is_some() {
                self.stale_if_error.set(stale);
            }
        }
    }
}

/// A directive's name and, after `=`, its value.
pub fn split_directive(directive: &[u8]) -> (&[u8], Option<&[u8]>) {
    match directive.iter().position(|&b| b == b'=') {
        Some(i) => (
            fields::trim(&directive[..i]),
            Some(fields::trim(&directive[i + 1..])),
        ),
        None => (directive, None),
    }
}

/// The elements of a `Cache-Control` value: like [`fields::list`], but a comma inside a
/// quoted string (`no-cache="a, b"`) does not split.
fn cache_control_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let mut quoted = false;
            let mut escaped = false;
            let mut end = rest.len();
            for (i, &b) in rest.iter().enumerate() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let element = fields::trim(&rest[..end]);
            rest = rest.get(end + 1..).unwrap_or_default();
            if !element.is_empty() {
                return Some(element);
            }
        }
    })
}

/// `v` without one pair of surrounding double quotes.
pub fn unquote(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v)
}

/// What a cache decides with, read once from a response head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    pub directives: Directives,
    /// `Date`, when present and valid.
    pub date: Option<u64>,
    /// `Expires`: `None` when absent, `Some(None)` when not a date (already expired).
    pub expires: Option<Option<u64>>,
    /// `Age`: its first member, or [`MAX_SECONDS`] when that is not a non-negative integer.
    pub age: Option<u64>,
    /// `Last-Modified`, when present and valid.
    pub last_modified: Option<u64>,
    /// An `ETag` or a `Last-Modified`: the response can be revalidated.
    pub validator: bool,
    /// `Set-Cookie`: not stored by this cache (cookies are per client).
    pub uncacheable_field: bool,
    /// `Vary: *`: no request can ever match it, so it is not stored.
    pub vary_star: bool,
}

impl Facts {
    /// Reads the facts of a response head.
    pub fn of(fields: &[Field], buf: &[u8]) -> Self {
        let mut facts = Facts {
            directives: Directives::of(fields, buf),
            ..Facts::default()
        };
        for f in fields {
            let value = f.value.of(buf);
            match f.kind {
                Kind::Date => facts.date = facts.date.or(date::parse(value)),
                // Several `Expires`: the first counts (an invalid one means stale anyway).
                Kind::Expires if facts.expires.is_none() => {
                    facts.expires = Some(date::parse(value));
                }
                Kind::Age if facts.age.is_none() => {
                    let first = fields::list(value).next().unwrap_or_default();
                    facts.age =
                        Some(fields::decimal(first).map_or(MAX_SECONDS, |a| a.min(MAX_SECONDS)));
                }
                Kind::LastModified => {
                    facts.last_modified = facts.last_modified.or(date::parse(value));
                    facts.validator = true;
                }
                Kind::ETag => facts.validator = true,
                Kind::Uncacheable => facts.uncacheable_field = true,
                Kind::Vary => {
                    facts.vary_star |= fields::list(value).any(|name| name == b"*");
                }
                _ => {}
            }
        }
        facts
    }

    /// True when the origin said how long the response is fresh (4.2.1).
    pub fn explicit_lifetime(&self) -> bool {
        let d = &self.directives;
        d.s_maxage.is_present() || d.max_age.is_present() || self.expires.is_some()
    }
}

/// Status codes that are heuristically cacheable (RFC 9110 15.1): a response with one of them
/// may be stored without explicit freshness.
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The status codes whose semantics this cache knows (RFC 9111 5.2.2.3 `must-understand`):
/// those RFC 9110 defines, and 206 and 304, which it handles itself.
fn understood(status: u16) -> bool {
    matches!(
        status,
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Whether a shared cache may store a response to a `GET` (RFC 9111 3 and 3.5): a final
/// status, no `no-store` or `private`, a request with `Authorization` only when the response
/// says a shared cache may store it, and explicit freshness, `public`, or a heuristically
/// cacheable status. (The request's own `no-store` is the caller's to check.)
pub fn storable(status: u16, facts: &Facts, authorization: bool) -> bool {
    let d = &facts.directives;
    if !(200..600).contains(&status)
        || (d.must_understand && !understood(status))
        || d.no_store
        || d.private
        || facts.uncacheable_field
        || facts.vary_star
    {
        return false;
    }
    if authorization && !(d.public || d.must_revalidate || d.s_maxage.is_present()) {
        return false;
    }
    facts.explicit_lifetime() || d.public || heuristically_cacheable(status)
}

/// The freshness lifetime of a stored response, in seconds (RFC 9111 4.2.1 for a shared
/// cache): `s-maxage`, else `max-age`, else `Expires` minus `Date` (or minus the time it
/// arrived, when it had no `Date`). Without any of them: the operator's `default_ttl` when
/// set, else 10 % of the time since `Last-Modified` (at most a day) for a heuristically
/// cacheable status or a `public` response, else 0 (stored, but stale from the start).
pub fn lifetime(status: u16, facts: &Facts, arrived: u64, default_ttl: Option<u64>) -> u64 {
    let d = &facts.directives;
    let explicit = d.s_maxage.lifetime().or(d.max_age.lifetime()).or_else(|| {
        let expires = facts.expires?;
        let date = facts.date.unwrap_or(arrived);
        Some(expires.map_or(0, |e| e.saturating_sub(date)))
    });
    if let Some(seconds) = explicit {
        return seconds.min(MAX_SECONDS);
    }
    if let Some(ttl) = default_ttl {
        return ttl.min(MAX_SECONDS);
    }
    if !(heuristically_cacheable(status) || d.public) {
        return 0;
    }
    match facts.last_modified {
        Some(modified) => {
            let since = facts.date.unwrap_or(arrived).saturating_sub(modified);
            (since * HEURISTIC_PERCENT / 100).min(HEURISTIC_MAX)
        }
        None => 0,
    }
}

/// The age of a response when it arrived (RFC 9111 4.2.3's `corrected_initial_age`):
/// `requested` and `arrived` are the clock when the request was sent and when the response
/// came. Its current age is this plus the time it has been stored since.
pub fn initial_age(facts: &Facts, requested: u64, arrived: u64) -> u64 {
    let apparent = facts.date.map_or(0, |date| arrived.saturating_sub(date));
    let delay = arrived.saturating_sub(requested);
    let corrected = facts.age.unwrap_or(0) + delay;
    apparent.max(corrected).min(MAX_SECONDS)
}

/// Whether a stored response may be served without contacting the origin.
pub fn fresh(facts: &Facts, lifetime: u64, age: u64) -> bool {
    !facts.directives.no_cache && age < lifetime
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::{self, ResponseHead};

    /// The facts of a response with these header lines (each ending in CRLF).
    fn facts(lines: &str) -> Facts {
        let text = format!("HTTP/1.1 200 OK\r\n{lines}\r\n");
        let mut head = ResponseHead::default();
        assert!(response::parse(text.as_bytes(), 4096, &mut head).unwrap());
        Facts::of(head.fields(), text.as_bytes())
    }

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const T: u64 = 784_111_777;

    #[test]
    fn directives_parse_case_quotes_and_repeats() {
        let d = facts("Cache-Control: Max-Age=\"30\", public\r\ncache-control: no-cache=\"a, b\", s-maxage=5\r\n")
            .directives;
        assert_eq!(
            (d.max_age, d.s_maxage),
            (Seconds::Valid(30), Seconds::Valid(5))
        );
        assert!(d.public && d.no_cache && !d.private && !d.no_store);
        let d = facts("Cache-Control: max-age=30, max-age=60\r\n").directives;
        assert_eq!(d.max_age, Seconds::Invalid, "a repeated directive");
        for bad in [
            "max-age",
            "max-age=",
            "max-age=-1",
            "max-age=1.5",
            "max-age=abc",
        ] {
            let d = facts(&format!("Cache-Control: {bad}\r\n")).directives;
            assert_eq!(d.max_age, Seconds::Invalid, "{bad}");
        }
        let d = facts("Cache-Control: max-age=99999999999999999\r\n").directives;
        assert_eq!(d.max_age, Seconds::Valid(MAX_SECONDS));
        let d = facts("Cache-Control: private=\"x\", must-revalidate, stale-if-error=60\r\n")
            .directives;
        assert!(d.private && d.must_revalidate);
        assert_eq!(d.stale_if_error, Seconds::Valid(60));
    }

    #[test]
    fn cdn_cache_control_goes_first() {
        let d = facts("Cache-Control: no-store\r\nCDN-Cache-Control: max-age=60\r\n").directives;
        assert_eq!((d.max_age, d.no_store), (Seconds::Valid(60), false));
        let d = facts("Cache-Control: max-age=60\r\ncdn-cache-control: no-store\r\n").directives;
        assert_eq!((d.max_age, d.no_store), (Seconds::Absent, true));
    }

    #[test]
    fn surrogate_control_for_this_cache_goes_before_cache_control() {
        let d = |lines: &str| facts(lines).directives;
        let both = d("Cache-Control: no-store\r\nSurrogate-Control: max-age=60\r\n");
        assert_eq!((both.max_age, both.no_store), (Seconds::Valid(60), false));
        let ours = d("Cache-Control: max-age=60\r\nSurrogate-Control: no-store;dl7\r\n");
        assert_eq!((ours.max_age, ours.no_store), (Seconds::Absent, true));
        let theirs = d("Cache-Control: max-age=60\r\nSurrogate-Control: no-store;other\r\n");
        assert_eq!(
            (theirs.max_age, theirs.no_store),
            (Seconds::Valid(60), false),
            "targeted at another surrogate: Cache-Control counts"
        );
        let targeted_first = d("Surrogate-Control: max-age=5, max-age=50;DL7\r\n");
        assert_eq!(targeted_first.max_age, Seconds::Valid(50));
        let plus = d("Surrogate-Control: max-age=30+600\r\n");
        assert_eq!(
            (plus.max_age, plus.stale_if_error),
            (Seconds::Valid(30), Seconds::Valid(600))
        );
        let cdn = d("CDN-Cache-Control: max-age=7\r\nSurrogate-Control: max-age=60\r\n");
        assert_eq!(cdn.max_age, Seconds::Valid(7), "CDN-Cache-Control first");
    }

    #[test]
    fn lifetime_follows_the_order_of_4_2_1() {
        let at = |lines: &str| lifetime(200, &facts(lines), T, None);
        assert_eq!(at("Cache-Control: max-age=30, s-maxage=5\r\n"), 5);
        assert_eq!(
            at(&format!("Cache-Control: max-age=30\r\nExpires: {DATE}\r\n")),
            30
        );
        let expires = date::format(T + 100);
        let expires = std::str::from_utf8(&expires).unwrap();
        assert_eq!(at(&format!("Date: {DATE}\r\nExpires: {expires}\r\n")), 100);
        // No Date: from the time it arrived.
        assert_eq!(
            lifetime(
                200,
                &facts(&format!("Expires: {expires}\r\n")),
                T + 40,
                None
            ),
            60
        );
        assert_eq!(
            at(&format!("Date: {DATE}\r\nExpires: 0\r\n")),
            0,
            "invalid Expires"
        );
        assert_eq!(at("Cache-Control: max-age=abc\r\n"), 0);
        assert_eq!(
            at(""),
            0,
            "nothing: stale, no heuristic without Last-Modified"
        );
        // Heuristic: 10 % of the time since Last-Modified, at most a day.
        let modified = std::str::from_utf8(&date::format(T - 1000))
            .unwrap()
            .to_owned();
        assert_eq!(
            at(&format!("Date: {DATE}\r\nLast-Modified: {modified}\r\n")),
            100
        );
        let old = std::str::from_utf8(&date::format(T - 100 * 86_400))
            .unwrap()
            .to_owned();
        assert_eq!(
            at(&format!("Date: {DATE}\r\nLast-Modified: {old}\r\n")),
            86_400
        );
        let modified_fields = format!("Date: {DATE}\r\nLast-Modified: {modified}\r\n");
        assert_eq!(
            lifetime(302, &facts(&modified_fields), T, None),
            0,
            "not heuristic"
        );
        // The operator's default takes the heuristic's place, never an explicit value's.
        assert_eq!(lifetime(200, &facts(""), T, Some(7)), 7);
        assert_eq!(
            lifetime(200, &facts("Cache-Control: max-age=3\r\n"), T, Some(7)),
            3
        );
    }

    #[test]
    fn what_a_shared_cache_may_store() {
        let ok = |status: u16, lines: &str, auth: bool| storable(status, &facts(lines), auth);
        assert!(ok(200, "", false), "heuristically cacheable");
        assert!(ok(404, "", false));
        assert!(!ok(302, "", false), "302 needs explicit freshness");
        assert!(ok(302, "Cache-Control: max-age=10\r\n", false));
        assert!(
            ok(500, "Expires: 0\r\n", false),
            "explicit, if already expired"
        );
        assert!(!ok(200, "Cache-Control: no-store\r\n", false));
        assert!(!ok(200, "Cache-Control: private\r\n", false));
        assert!(
            ok(200, "Cache-Control: no-cache\r\n", false),
            "stored, revalidated"
        );
        assert!(ok(200, "Vary: Accept\r\n", false), "a variant");
        assert!(
            !ok(200, "Vary: Accept, *\r\n", false),
            "Vary: * never matches"
        );
        assert!(!ok(200, "Set-Cookie: a=b\r\n", false));
        assert!(
            !ok(200, "Cache-Control: max-age=60\r\n", true),
            "Authorization"
        );
        for allows in ["public", "must-revalidate", "s-maxage=60"] {
            assert!(
                ok(200, &format!("Cache-Control: {allows}\r\n"), true),
                "{allows}"
            );
        }
        assert!(
            !ok(101, "Cache-Control: max-age=60\r\n", false),
            "not final"
        );
        let understand = "Cache-Control: max-age=60, must-understand\r\n";
        assert!(ok(200, understand, false));
        assert!(
            !ok(599, understand, false),
            "must-understand, unknown status"
        );
        assert!(ok(599, "Cache-Control: max-age=60\r\n", false));
    }

    #[test]
    fn age_is_corrected_as_4_2_3_says() {
        // The origin's clock is 10 s behind the response's arrival; the exchange took 2 s.
        let f = facts(&format!("Date: {DATE}\r\nAge: 3\r\n"));
        assert_eq!(initial_age(&f, T + 8, T + 10), 10, "apparent age wins");
        let f = facts(&format!("Date: {DATE}\r\nAge: 30, 40\r\n"));
        assert_eq!(
            initial_age(&f, T + 8, T + 10),
            32,
            "first Age member plus the delay"
        );
        let f = facts("Age: abc\r\n");
        assert_eq!(
            initial_age(&f, T, T + 1),
            MAX_SECONDS,
            "an invalid Age makes the response as old as can be"
        );
        // A Date in the future makes no negative age.
        let f = facts(&format!("Date: {DATE}\r\n"));
        assert_eq!(initial_age(&f, T - 20, T - 20), 0);
        assert!(fresh(&f, 10, 9) && !fresh(&f, 10, 10));
        assert!(!fresh(
            &facts("Cache-Control: no-cache, max-age=60\r\n"),
            60,
            0
        ));
    }
}
