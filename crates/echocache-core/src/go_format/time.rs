//! Go's `time.Time` as `encoding/json` writes and reads it: RFC 3339 with up to nine
//! fractional digits, the `CreatedAt` of the Go echocache's stale-while-revalidate entries.
//!
//! Written here with std only: the two conversions (civil date ⇄ days since the epoch) are
//! a dozen lines, and a date crate (chrono, time) would add a dependency to every user of
//! the store for them, with parsing rules that differ from Go's in small ways (leap
//! seconds, lowercase `t`/`z`, more than nine digits). This module follows Go's
//! `time.parseStrictRFC3339` instead.
//!
//! - **Writing**: UTC, `Z`, nanoseconds with trailing zeros trimmed and no fraction when
//!   they are zero (`2025-02-21T21:01:30.12Z`, `2025-02-21T21:01:30Z`): Go's
//!   `time.RFC3339Nano` output for a UTC time. Years outside 0000–9999 are an error, as in
//!   Go's `MarshalJSON`.
//! - **Reading**: `YYYY-MM-DDTHH:MM:SS`, then optionally `.` and one or more digits (beyond
//!   nine they are truncated, as Go does), then `Z` or `±hh:mm` (hours 00–23, minutes
//!   00–59). Uppercase `T` and `Z` only, seconds 00–59 (no leap second), the day checked
//!   against its month: what Go accepts, nothing more.

use std::fmt;
use std::time::{Duration, SystemTime};

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// An instant as seconds and nanoseconds since the Unix epoch; `secs` is negative before
/// 1970 (`nanos` always counts forward from `secs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct UnixTime {
    pub(crate) secs: i64,
    pub(crate) nanos: u32,
}

/// A time that Go's JSON cannot hold, or text that is not one; its `Display` says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError(&'static str);

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TimeError {}

impl UnixTime {
    /// `t` as seconds and nanoseconds since the epoch, before 1970 included.
    pub(crate) fn from_system_time(t: SystemTime) -> Result<Self, TimeError> {
        const RANGE: TimeError = TimeError("time is outside the range of i64 seconds");
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => Ok(Self {
                secs: i64::try_from(after.as_secs()).map_err(|_| RANGE)?,
                nanos: after.subsec_nanos(),
            }),
            Err(before) => {
                let before = before.duration();
                let secs = i64::try_from(before.as_secs()).map_err(|_| RANGE)?;
                Ok(match before.subsec_nanos() {
                    0 => Self {
                        secs: -secs,
                        nanos: 0,
                    },
                    nanos => Self {
                        secs: -secs - 1,
                        nanos: NANOS_PER_SEC - nanos,
                    },
                })
            }
        }
    }

    /// The instant as a [`SystemTime`]; any time before the Unix epoch becomes
    /// [`SystemTime::UNIX_EPOCH`].
    ///
    /// Such times are never a real write time: the one that occurs is Go's zero time
    /// (`0001-01-01T00:00:00Z`, a missing or null `CreatedAt`), which Go treats as always
    /// stale. The epoch is stale for any sensible `refresh_after` too, and is representable
    /// on every platform (Windows' `SystemTime` starts in 1601).
    pub(crate) fn to_system_time(self) -> SystemTime {
        match u64::try_from(self.secs) {
            Ok(secs) => SystemTime::UNIX_EPOCH
                .checked_add(Duration::new(secs, self.nanos))
                .unwrap_or(SystemTime::UNIX_EPOCH),
            Err(_) => SystemTime::UNIX_EPOCH,
        }
    }
}

/// Formats `t` as Go writes a UTC `time.Time` in JSON (without the quotes).
pub(crate) fn format(t: SystemTime) -> Result<String, TimeError> {
    format_unix(UnixTime::from_system_time(t)?)
}

/// [`format`] on seconds and nanoseconds since the epoch.
pub(crate) fn format_unix(t: UnixTime) -> Result<String, TimeError> {
    let days = t.secs.div_euclid(SECS_PER_DAY);
    let of_day = t.secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(TimeError(
            "time is outside the years 0000-9999 that Go's time.Time JSON can hold",
        ));
    }
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if t.nanos != 0 {
        let digits = format!("{:09}", t.nanos);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    Ok(out)
}

/// Parses a Go `time.Time` JSON string (without the quotes) into a [`SystemTime`]; see
/// [`UnixTime::to_system_time`] for times before 1970.
pub(crate) fn parse(text: &str) -> Result<SystemTime, TimeError> {
    parse_unix(text).map(UnixTime::to_system_time)
}

/// Parses RFC 3339 as Go's `time.parseStrictRFC3339` does, into seconds and nanoseconds
/// since the epoch (UTC).
pub(crate) fn parse_unix(text: &str) -> Result<UnixTime, TimeError> {
    const SHAPE: TimeError = TimeError("not an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.digits]Z)");
    let b = text.as_bytes();
    if b.len() < "2006-01-02T15:04:05Z".len() {
        return Err(SHAPE);
    }
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(SHAPE);
    }
    let year = digits(&b[0..4]).ok_or(SHAPE)?;
    let month = digits(&b[5..7]).ok_or(SHAPE)?;
    let day = digits(&b[8..10]).ok_or(SHAPE)?;
    let hour = digits(&b[11..13]).ok_or(SHAPE)?;
    let minute = digits(&b[14..16]).ok_or(SHAPE)?;
    let second = digits(&b[17..19]).ok_or(SHAPE)?;
    if !(1..=12).contains(&month) {
        return Err(TimeError("month out of range"));
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return Err(TimeError("day out of range"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(TimeError("time of day out of range"));
    }

    let mut rest = &b[19..];
    let mut nanos = 0;
    if let [b'.', fraction @ ..] = rest {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return Err(SHAPE);
        }
        // Go reads at most nine digits and ignores the rest.
        for (i, &c) in fraction[..len.min(9)].iter().enumerate() {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &fraction[len..];
    }

    let offset_secs = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2]).ok_or(SHAPE)?;
            let minutes = digits(&[*m1, *m2]).ok_or(SHAPE)?;
            if hours > 23 || minutes > 59 {
                return Err(TimeError("zone offset out of range"));
            }
            let secs = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return Err(SHAPE),
    };

    let days = days_from_civil(i64::from(year), month, day);
    let local = days * SECS_PER_DAY + i64::from(hour * 3600 + minute * 60 + second);
    Ok(UnixTime {
        secs: local - offset_secs,
        nanos,
    })
}

/// The value of two or four ASCII digits.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // In range by construction: month 1..=12, day 1..=31.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-02-21T21:01:30Z, the instant of the golden values.
    const T0: i64 = 1_740_171_690;
    /// 0001-01-01T00:00:00Z, Go's zero time.
    const GO_ZERO: i64 = -62_135_596_800;

    fn unix(secs: i64, nanos: u32) -> UnixTime {
        UnixTime { secs, nanos }
    }

    #[test]
    fn parses_every_form_go_writes() {
        let cases = [
            ("2025-02-21T21:01:30.123456789Z", unix(T0, 123_456_789)),
            ("2025-02-21T22:01:30.123456789+01:00", unix(T0, 123_456_789)),
            ("2025-02-21T16:31:30.123456789-04:30", unix(T0, 123_456_789)),
            ("2025-02-21T21:01:30.12Z", unix(T0, 120_000_000)),
            ("2025-02-21T21:01:30.1Z", unix(T0, 100_000_000)),
            ("2025-02-21T21:01:30.000000001Z", unix(T0, 1)),
            ("2025-02-21T21:01:30.5+00:00", unix(T0, 500_000_000)),
            ("2025-02-21T21:01:30-00:00", unix(T0, 0)),
            ("2025-02-21T21:01:30Z", unix(T0, 0)),
            ("0001-01-01T00:00:00Z", unix(GO_ZERO, 0)),
            ("1970-01-01T00:00:00Z", unix(0, 0)),
            ("1969-12-31T23:59:59.999999999Z", unix(-1, 999_999_999)),
            ("0000-01-01T00:00:00Z", unix(-62_167_219_200, 0)),
            (
                "9999-12-31T23:59:59.999999999Z",
                unix(253_402_300_799, 999_999_999),
            ),
            ("2024-02-29T00:00:00Z", unix(1_709_164_800, 0)),
            ("2000-02-29T12:00:00+12:00", unix(951_782_400, 0)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_unix(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn every_digit_count_from_one_to_nine_and_beyond() {
        for len in 1..=12 {
            let digits = "123456789321"[..len].to_owned();
            let text = format!("2025-02-21T21:01:30.{digits}Z");
            let nanos: u32 = format!("{:0<9}", &digits[..len.min(9)]).parse().unwrap();
            assert_eq!(parse_unix(&text), Ok(unix(T0, nanos)), "{text}");
        }
    }

    #[test]
    fn system_times_before_1970_become_the_epoch() {
        assert_eq!(
            parse("0001-01-01T00:00:00Z"),
            Ok(SystemTime::UNIX_EPOCH),
            "Go's zero time"
        );
        assert_eq!(parse("1969-12-31T23:59:59.5Z"), Ok(SystemTime::UNIX_EPOCH));
        assert_eq!(
            parse("2025-02-21T22:01:30.123456789+01:00"),
            Ok(SystemTime::UNIX_EPOCH + Duration::new(T0 as u64, 123_456_789))
        );
    }

    #[test]
    fn formats_as_go_does_in_utc() {
        let cases = [
            (unix(T0, 123_456_789), "2025-02-21T21:01:30.123456789Z"),
            (unix(T0, 120_000_000), "2025-02-21T21:01:30.12Z"),
            (unix(T0, 100_000_000), "2025-02-21T21:01:30.1Z"),
            (unix(T0, 1_000), "2025-02-21T21:01:30.000001Z"),
            (unix(T0, 1), "2025-02-21T21:01:30.000000001Z"),
            (unix(T0, 0), "2025-02-21T21:01:30Z"),
            (unix(0, 0), "1970-01-01T00:00:00Z"),
            (unix(-1, 999_999_999), "1969-12-31T23:59:59.999999999Z"),
            (unix(GO_ZERO, 0), "0001-01-01T00:00:00Z"),
            (unix(-62_167_219_200, 0), "0000-01-01T00:00:00Z"),
            (
                unix(253_402_300_799, 999_999_999),
                "9999-12-31T23:59:59.999999999Z",
            ),
            (unix(1_709_164_800, 0), "2024-02-29T00:00:00Z"),
        ];
        for (time, want) in cases {
            assert_eq!(format_unix(time).as_deref(), Ok(want), "{time:?}");
        }
    }

    #[test]
    fn formats_system_times_including_before_1970() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::new(T0 as u64, 123_456_789);
        assert_eq!(format(t0).unwrap(), "2025-02-21T21:01:30.123456789Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(1_500);
        assert_eq!(format(before).unwrap(), "1969-12-31T23:59:58.5Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(3);
        assert_eq!(format(before).unwrap(), "1969-12-31T23:59:57Z");
    }

    #[test]
    fn years_go_cannot_write_are_an_error() {
        assert!(format_unix(unix(253_402_300_800, 0)).is_err(), "year 10000");
        assert!(format_unix(unix(-62_167_219_201, 0)).is_err(), "year -1");
        assert!(format_unix(unix(i64::MAX, 999_999_999)).is_err());
        assert!(format_unix(unix(i64::MIN, 0)).is_err());
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert!(format(far).is_err());
    }

    #[test]
    fn round_trips() {
        let mut secs = GO_ZERO;
        // Dates spread over the whole range Go can write, with assorted fractions.
        while secs < 253_402_300_799 {
            for nanos in [0, 1, 10, 120_000_000, 999_999_999, 500_000] {
                let time = unix(secs, nanos);
                let text = format_unix(time).unwrap();
                assert_eq!(parse_unix(&text), Ok(time), "{text}");
            }
            secs += 9_876_543_211; // about 313 years and some odd days
        }
        for secs in [0, 1, 59, 86_399, 86_400, 951_782_400, T0, T0 + 31_622_400] {
            let time = unix(secs, 42);
            assert_eq!(parse_unix(&format_unix(time).unwrap()), Ok(time));
        }
        let now = SystemTime::now();
        assert_eq!(parse(&format(now).unwrap()), Ok(now));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let bad = [
            "",
            "2025",
            "2025-02-21",
            "2025-02-21 21:01:30Z",
            "2025-02-21t21:01:30Z",
            "2025-02-21T21:01:30z",
            "2025-02-21T21:01:30",
            "2025-02-21T21:01:30.Z",
            "2025-02-21T21:01:30,5Z",
            "2025-02-21T21:01:30.5",
            "2025-02-21T21:01:30ZZ",
            "2025-02-21T21:01:30Z ",
            " 2025-02-21T21:01:30Z",
            "2025-02-21T21:01:30+01",
            "2025-02-21T21:01:30+0100",
            "2025-02-21T21:01:30+01:00:00",
            "2025-02-21T21:01:30+24:00",
            "2025-02-21T21:01:30+01:60",
            "2025-02-21T21:01:30*01:00",
            "2025-13-21T21:01:30Z",
            "2025-00-21T21:01:30Z",
            "2025-02-29T21:01:30Z",
            "1900-02-29T21:01:30Z",
            "2025-04-31T21:01:30Z",
            "2025-02-00T21:01:30Z",
            "2025-02-21T24:00:00Z",
            "2025-02-21T21:60:30Z",
            "2025-02-21T21:01:60Z",
            "-025-02-21T21:01:30Z",
            "+2025-02-21T21:01:30Z",
            "20250-02-21T21:01:30Z",
            "2025-2-21T21:01:30Z",
            "2025-02-21T1:01:30Z",
            "２０２５-02-21T21:01:30Z",
            "2025-02-21T21:01:3é",
            "2025-02-21T21:01:30.1é",
            "2025-02-21T21:01:30+0é:00",
            "\"2025-02-21T21:01:30Z\"",
            "null",
        ];
        for text in bad {
            assert!(parse_unix(text).is_err(), "{text:?} was accepted");
            assert!(parse(text).is_err(), "{text:?} was accepted");
        }
        // Every prefix of a valid time, and every single-byte corruption of it.
        let good = "2025-02-21T22:01:30.123456789+01:00";
        for end in 0..good.len() {
            let _ = parse_unix(&good[..end]);
        }
        for i in 0..good.len() {
            for byte in [b'x', b'0', b'9', b'-', b':', b'.', b'Z', b'+', 0, 0x7f] {
                let mut bytes = good.as_bytes().to_vec();
                bytes[i] = byte;
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    let _ = parse_unix(text);
                }
            }
        }
    }

    #[test]
    fn the_error_says_what_is_wrong() {
        assert_eq!(
            parse_unix("2025-02-30T00:00:00Z").unwrap_err().to_string(),
            "day out of range"
        );
        assert!(
            parse_unix("yesterday")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
    }
}
