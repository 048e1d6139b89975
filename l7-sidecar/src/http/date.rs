//! HTTP dates (RFC 9110 5.6.7): the three formats a recipient must read, and IMF-fixdate,
//! the one a sender writes. Times are whole seconds since the Unix epoch (UTC); no time zone
//! database, no allocation.
//!
//! ```
//! use l7_sidecar::http::date;
//!
//! let t = date::parse(b"Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
//! assert_eq!(date::parse(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
//! assert_eq!(date::parse(b"Sun Nov  6 08:49:37 1994"), Some(t));
//! assert_eq!(&date::format(t), b"Sun, 06 Nov 1994 08:49:37 GMT");
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

/// The length of an IMF-fixdate.
pub const LEN: usize = 29;

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const LONG_DAYS: [&[u8]; 7] = [
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
    b"Monday",
    b"Tuesday",
    b"Wednesday",
];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Seconds since the epoch now (0 for a clock before 1970).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses an HTTP date in any of the three formats (surrounding whitespace allowed); `None`
/// for anything else, including an impossible date or a weekday that does not match it.
pub fn parse(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.len() == LEN && v[3] == b',' {
        return imf_fixdate(v);
    }
    if v.len() == 24 && v[3] == b' ' {
        return asctime(v);
    }
    rfc850(v)
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(v: &[u8]) -> Option<u64> {
    let fixed = v[4] == b' ' && v[7] == b' ' && v[11] == b' ' && v[16] == b' ';
    if !fixed || &v[25..] != b" GMT" {
        return None;
    }
    let day = digits(&v[5..7])?;
    let month = month(&v[8..11])?;
    let year = digits(&v[12..16])?;
    let t = time_of(year, month, day, &v[17..25])?;
    weekday_is(t, |d| DAYS[d] == &v[..3])
}

/// `Sunday, 06-Nov-94 08:49:37 GMT` (two-digit years: RFC 9110 says a year more than 50 years
/// ahead is the past century's).
fn rfc850(v: &[u8]) -> Option<u64> {
    let comma = v.iter().position(|&b| b == b',')?;
    let (name, rest) = (&v[..comma], &v[comma + 1..]);
    if rest.len() != 23 || rest[0] != b' ' || rest[3] != b'-' || rest[7] != b'-' {
        return None;
    }
    if rest[10] != b' ' || &rest[19..] != b" GMT" {
        return None;
    }
    let day = digits(&rest[1..3])?;
    let month = month(&rest[4..7])?;
    let yy = digits(&rest[8..10])?;
    let this_year = 1970 + now() / 31_556_952;
    let mut year = this_year / 100 * 100 + yy;
    if year > this_year + 50 {
        year -= 100;
    }
    let t = time_of(year, month, day, &rest[11..19])?;
    weekday_is(t, |d| LONG_DAYS[d].eq_ignore_ascii_case(name))
}

/// `Sun Nov  6 08:49:37 1994`
fn asctime(v: &[u8]) -> Option<u64> {
    if v[7] != b' ' || v[10] != b' ' || v[19] != b' ' {
        return None;
    }
    let month = month(&v[4..7])?;
    let day = match v[8] {
        b' ' => digits(&v[9..10])?,
        _ => digits(&v[8..10])?,
    };
    let year = digits(&v[20..24])?;
    let t = time_of(year, month, day, &v[11..19])?;
    weekday_is(t, |d| DAYS[d] == &v[..3])
}

/// `t` when its weekday (0 = Thursday, the epoch's) passes `ok`.
fn weekday_is(t: u64, ok: impl Fn(usize) -> bool) -> Option<u64> {
    ok(((t / 86_400) % 7) as usize).then_some(t)
}

/// Decimal digits only.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// 1 to 12.
fn month(v: &[u8]) -> Option<u64> {
    MONTHS.iter().position(|m| *m == v).map(|i| i as u64 + 1)
}

/// Seconds since the epoch of a date and `HH:MM:SS`; `None` when out of range.
fn time_of(year: u64, month: u64, day: u64, hms: &[u8]) -> Option<u64> {
    if hms.len() != 8 || hms[2] != b':' || hms[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(&hms[..2])?, digits(&hms[3..5])?, digits(&hms[6..])?);
    // 60 for a leap second, as RFC 5322 allows.
    if year < 1970 || h > 23 || m > 59 || s > 60 || day == 0 || day > days_in(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

fn days_in(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date on or after it (Howard Hinnant's algorithm).
pub fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01: (year, month, day).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `t` as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT` (years past 9999 are written
/// as 9999-12-31 23:59:59).
pub fn format(t: u64) -> [u8; LEN] {
    let t = t.min(253_402_300_799);
    let (year, month, day) = civil_from_days(t / 86_400);
    let secs = t % 86_400;
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[((t / 86_400) % 7) as usize]);
    two(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[month as usize - 1]);
    two(&mut out[12..14], year / 100);
    two(&mut out[14..16], year % 100);
    two(&mut out[17..19], secs / 3600);
    two(&mut out[20..22], secs / 60 % 60);
    two(&mut out[23..25], secs % 60);
    out
}

fn two(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn the_three_formats_and_formatting() {
        assert_eq!(parse(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(T));
        assert_eq!(parse(b" Sun, 06 Nov 1994 08:49:37 GMT "), Some(T));
        assert_eq!(parse(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(T));
        assert_eq!(parse(b"Sun Nov  6 08:49:37 1994"), Some(T));
        assert_eq!(&format(T), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        for t in [0, 59, 86_399, 951_782_400, 1_709_164_800, 4_102_444_800, T] {
            assert_eq!(parse(&format(t)), Some(t), "{t}");
        }
        // Leap days.
        assert_eq!(&format(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert!(parse(b"Thu, 29 Feb 2001 00:00:00 GMT").is_none());
    }

    #[test]
    fn anything_else_is_not_a_date() {
        for bad in [
            &b""[..],
            b"0",
            b"-1",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Mon, 06 Nov 1994 08:49:37 GMT",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun, 06 nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 31 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1969 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMT x",
            b"Sunday, 06-Nov-1994 08:49:37 GMT",
            b"Sun Nov 6 08:49:37 1994",
            b"Sun, +6 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
