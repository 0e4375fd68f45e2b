//! Points in time: [`Timestamp`], microseconds since the Unix epoch in UTC.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A point in time: microseconds since the Unix epoch (1970-01-01T00:00:00Z), UTC, never before it.
///
/// Every time the store keeps is one — when an item was received (IMAP INTERNALDATE), deleted or submitted,
/// when a mailbox was created, when a backup was taken, when a copy last heard from its source. Times that reach
/// the state are decided before logging and travel inside operations, so replay gives the same answer.
///
/// It prints and parses as RFC 3339 (`2026-12-03T17:20:00.123456Z`); [`Timestamp::as_micros`] and
/// [`SystemTime`] conversions give the number. It is stored as the bare `u64`, so the encoding of every record
/// and table that holds one is that of the integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The current time (the epoch if the clock is before it).
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// The time `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0)
    }

    /// The time `d` later, saturating at the largest representable time.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
    }

    /// The time `d` earlier, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl From<SystemTime> for Timestamp {
    /// Truncated to microseconds; a time before the epoch gives the epoch, one past year 586,912 the largest.
    fn from(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            Err(_) => Timestamp::EPOCH,
        }
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, with the microseconds when there are any: `2026-12-03T17:20:00Z`,
    /// `2026-12-03T17:20:00.500000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000;
        let micros = self.0 % 1_000_000;
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)?;
        if micros != 0 {
            write!(f, ".{micros:06}")?;
        }
        f.write_str("Z")
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    /// An RFC 3339 time: `2026-12-03T17:20:00Z`, `2026-12-03T17:20:00.123456+01:00` (digits past the sixth of
    /// a fraction are dropped). One before the epoch, or not RFC 3339, is [`Error::InvalidArgument`].
    fn from_str(text: &str) -> Result<Timestamp, Error> {
        let bad = || Error::InvalidArgument(format!("{text:?} is not an RFC 3339 time (e.g. 2026-12-03T17:20:00Z)"));
        let b = text.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| {
            text.get(r).filter(|s| s.bytes().all(|c| c.is_ascii_digit())).and_then(|s| s.parse::<i64>().ok())
        };
        let field = |r| num(r).ok_or_else(bad);
        let (y, mo, d) = (field(0..4)?, field(5..7)?, field(8..10)?);
        let (h, mi, s) = (field(11..13)?, field(14..16)?, field(17..19)?);
        let mut rest = &text[19..];
        let mut micros = 0i64;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            micros = format!("{:0<6}", &frac[..digits.min(6)]).parse().map_err(|_| bad())?;
            rest = &frac[digits..];
        }
        let offset_secs = match rest.as_bytes() {
            b"Z" | b"z" => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let digits = |r: std::ops::Range<usize>| {
                    let part = &rest[r];
                    part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse::<i64>().ok()).flatten()
                };
                let secs = digits(1..3).ok_or_else(bad)? * 3600 + digits(4..6).ok_or_else(bad)? * 60;
                if *sign == b'-' { -secs } else { secs }
            }
            _ => return Err(bad()),
        };
        if !(1..=12).contains(&mo) || !(1..=days_in_month(y, mo)).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return Err(bad());
        }
        let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
        u64::try_from(secs * 1_000_000 + micros).map(Timestamp).map_err(|_| bad())
    }
}

/// Days since the epoch of a civil date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day since the epoch (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub(crate) fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Serde for a [`Duration`] kept as a bare `u64` of microseconds (the encoding of the fields that held one).
pub(crate) mod duration_micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

/// Serde for an `Option<Duration>` kept as an optional `u64` of microseconds.
pub(crate) mod option_duration_micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|m| m.map(Duration::from_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    fn parse(s: &str) -> Option<u64> {
        s.parse::<Timestamp>().ok().map(Timestamp::as_micros)
    }

    #[test]
    fn rfc3339_parses() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2000-03-01T00:00:00.5Z"), Some(951_868_800_500_000));
        assert_eq!(parse("2026-12-03T18:20:00+01:00"), parse("2026-12-03T17:20:00Z"));
        assert_eq!(parse("2026-12-03T16:20:00.1234567-01:00"), Some(parse("2026-12-03T17:20:00Z").unwrap() + 123_456));
        for bad in [
            "",
            "2026-12-03",
            "2026-13-03T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-12-03T24:00:00Z",
            "2026-12-03T00:00:00",
            "2026-12-03T00:00:00.Z",
            "2026-12-03T00:00:00+1:00",
            "2026-12-03T00:00:00+0a:00",
            "+026-12-03T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-12-03T00:00:00Zjunk",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse("2024-02-29T00:00:00Z"), Some(1_709_164_800_000_000));
    }

    #[test]
    fn display_round_trips() {
        for micros in [0, 1, 951_868_800_500_000, 1_709_164_800_000_000, 4_102_444_799_999_999, 253_402_300_799_000_000]
        {
            let t = Timestamp::from_micros(micros);
            assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t, "{t}");
        }
        assert_eq!(Timestamp::from_micros(951_868_800_500_000).to_string(), "2000-03-01T00:00:00.500000Z");
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn system_time_conversions() {
        let t = Timestamp::from_micros(1_764_782_400_123_456);
        assert_eq!(Timestamp::from(t.to_system_time()), t);
        assert_eq!(Timestamp::from(std::time::UNIX_EPOCH - std::time::Duration::from_secs(1)), Timestamp::EPOCH);
    }
}
