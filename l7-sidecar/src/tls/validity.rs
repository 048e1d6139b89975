//! A certificate's notAfter, read from its DER with a few lines instead of an X.509 crate:
//! `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
//! signature, issuer, validity SEQUENCE { notBefore, notAfter }, .. }, .. }` (RFC 5280
//! 4.1), the times as `UTCTime` (`YYMMDDHHMMSSZ`, years 1950 to 2049) or `GeneralizedTime`
//! (`YYYYMMDDHHMMSSZ`).

use crate::http::date;

/// DER tags read here.
const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The notAfter of the DER certificate `der`, Unix time; `None` when it cannot be read.
pub fn not_after(der: &[u8]) -> Option<u64> {
    let (SEQUENCE, certificate, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let (tag, _, mut rest) = tlv(tbs)?;
    if tag == VERSION {
        // That was the version: skip the serial number too.
        rest = tlv(rest)?.2;
    }
    // The signature algorithm, then the issuer.
    let rest = tlv(tlv(rest)?.2)?.2;
    let (SEQUENCE, validity, _) = tlv(rest)? else {
        return None;
    };
    let after_not_before = tlv(validity)?.2;
    let (tag, time, _) = tlv(after_not_before)?;
    let (year, rest) = match tag {
        UTC_TIME => {
            let yy = digits(time.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &time[2..])
        }
        GENERALIZED_TIME => (digits(time.get(..4)?)?, &time[4..]),
        _ => return None,
    };
    if rest.len() != 11 || rest[10] != b'Z' || year < 1970 {
        return None;
    }
    let part = |at: usize| digits(&rest[at..at + 2]);
    let (month, day, h, m, s) = (part(0)?, part(2)?, part(4)?, part(6)?, part(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(date::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// One DER element: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| len << 8 | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // 2030-01-02T00:00:00Z (UTCTime) and 2055-06-30 (GeneralizedTime, after 2049).
        assert_eq!(not_after(&certificate((2030, 1, 2))), Some(1_893_542_400));
        assert_eq!(not_after(&certificate((2055, 6, 30))), Some(2_697_926_400));
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        let der = certificate((2030, 1, 2));
        assert_eq!(not_after(&der[..der.len() / 2]), None);
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
