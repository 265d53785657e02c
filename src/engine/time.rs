//! Instants and calendar periods.
//!
//! An instant is milliseconds since the Unix epoch in UTC: cheap to copy, compare and store. Calendar
//! arithmetic (months clamped to their last day) goes through `jiff` and nowhere else.

use jiff::{Timestamp, ToSpan, tz::TimeZone};
use serde::{Deserialize, Serialize};

/// An instant in milliseconds since the Unix epoch, UTC.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ts(pub i64);

pub const MS_PER_SECOND: i64 = 1_000;
pub const MS_PER_DAY: i64 = 86_400 * MS_PER_SECOND;

impl Ts {
    pub fn plus_ms(self, ms: i64) -> Ts {
        Ts(self.0.saturating_add(ms))
    }

    /// RFC 3339 in UTC with milliseconds, always three digits so that the strings sort as the
    /// instants do.
    pub fn rfc3339(self) -> String {
        match Timestamp::from_millisecond(self.0) {
            Ok(t) => format!("{t:.3}"),
            Err(_) => String::from("invalid"),
        }
    }

    pub fn parse_rfc3339(text: &str) -> Option<Ts> {
        let t: Timestamp = text.parse().ok()?;
        Some(Ts(t.as_millisecond()))
    }
}

/// How often a plan limit's counter starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Period {
    Lifetime,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    pub fn parse(text: &str) -> Option<Period> {
        Some(match text {
            "lifetime" => Period::Lifetime,
            "day" => Period::Day,
            "week" => Period::Week,
            "month" => Period::Month,
            "year" => Period::Year,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Lifetime => "lifetime",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
        }
    }
}

/// The window of a counter at `now`: `(start, next boundary)`. A lifetime window starts at the epoch
/// and never ends. Periodic windows are anchored at `anchor`; the k-th boundary is computed as
/// `anchor + k periods` from the anchor every time (never chained), so Jan 31 gives Feb 29 and then
/// Mar 31, not Mar 29.
pub fn window_at(period: Period, anchor: Ts, now: Ts) -> (Ts, Option<Ts>) {
    let fixed = |len: i64| {
        let k = (now.0 - anchor.0).div_euclid(len);
        let start = anchor.0 + k * len;
        (Ts(start), Some(Ts(start + len)))
    };
    match period {
        Period::Lifetime => (Ts(0), None),
        Period::Day => fixed(MS_PER_DAY),
        Period::Week => fixed(7 * MS_PER_DAY),
        Period::Month => calendar_window(anchor, now, 1),
        Period::Year => calendar_window(anchor, now, 12),
    }
}

fn calendar_window(anchor: Ts, now: Ts, months_per_period: i64) -> (Ts, Option<Ts>) {
    if now < anchor {
        return (anchor, boundary(anchor, 1, months_per_period));
    }
    let (Ok(a), Ok(n)) = (
        Timestamp::from_millisecond(anchor.0),
        Timestamp::from_millisecond(now.0),
    ) else {
        return (anchor, None);
    };
    let (a, n) = (a.to_zoned(TimeZone::UTC), n.to_zoned(TimeZone::UTC));
    let months = (i64::from(n.year()) - i64::from(a.year())) * 12
        + (i64::from(n.month()) - i64::from(a.month()));
    // The estimate is at most one period late (day of month and time of day are ignored).
    let mut k = months.div_euclid(months_per_period);
    loop {
        match boundary(anchor, k, months_per_period) {
            Some(start) if start > now => k -= 1,
            Some(start) => return (start, boundary(anchor, k + 1, months_per_period)),
            None => return (anchor, None),
        }
    }
}

/// `anchor + k × months_per_period` months, clamped to the end of the month.
fn boundary(anchor: Ts, k: i64, months_per_period: i64) -> Option<Ts> {
    let a = Timestamp::from_millisecond(anchor.0)
        .ok()?
        .to_zoned(TimeZone::UTC);
    let months = k.checked_mul(months_per_period)?;
    let shifted = a.checked_add(months.months()).ok()?;
    Some(Ts(shifted.timestamp().as_millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Ts {
        Ts::parse_rfc3339(text).expect("valid test timestamp")
    }

    #[test]
    fn monthly_windows_are_anchored_and_clamped_to_the_month_end() {
        let anchor = at("2028-01-31T10:00:00Z");
        let cases = [
            (
                "2028-01-31T10:00:00Z",
                "2028-01-31T10:00:00Z",
                "2028-02-29T10:00:00Z",
            ),
            (
                "2028-02-29T09:59:59Z",
                "2028-01-31T10:00:00Z",
                "2028-02-29T10:00:00Z",
            ),
            (
                "2028-02-29T10:00:00Z",
                "2028-02-29T10:00:00Z",
                "2028-03-31T10:00:00Z",
            ),
            (
                "2028-03-30T00:00:00Z",
                "2028-02-29T10:00:00Z",
                "2028-03-31T10:00:00Z",
            ),
            (
                "2028-04-15T00:00:00Z",
                "2028-03-31T10:00:00Z",
                "2028-04-30T10:00:00Z",
            ),
            (
                "2029-02-28T10:00:00Z",
                "2029-02-28T10:00:00Z",
                "2029-03-31T10:00:00Z",
            ),
        ];
        for (now, start, next) in cases {
            let (s, n) = window_at(Period::Month, anchor, at(now));
            assert_eq!(s, at(start), "start at {now}");
            assert_eq!(n, Some(at(next)), "next boundary at {now}");
        }
    }

    #[test]
    fn yearly_windows_clamp_a_leap_day() {
        let anchor = at("2028-02-29T00:00:00Z");
        let (s, n) = window_at(Period::Year, anchor, at("2029-06-01T00:00:00Z"));
        assert_eq!(s, at("2029-02-28T00:00:00Z"));
        assert_eq!(n, Some(at("2030-02-28T00:00:00Z")));
        let (s, _) = window_at(Period::Year, anchor, at("2032-03-01T00:00:00Z"));
        assert_eq!(s, at("2032-02-29T00:00:00Z"));
    }

    #[test]
    fn days_and_weeks_are_fixed_lengths_from_the_anchor() {
        let anchor = at("2026-11-22T21:40:00Z");
        let (s, n) = window_at(Period::Day, anchor, at("2026-11-24T08:00:00Z"));
        assert_eq!(s, at("2026-11-23T21:40:00Z"));
        assert_eq!(n, Some(at("2026-11-24T21:40:00Z")));
        let (s, n) = window_at(Period::Week, anchor, at("2026-12-06T21:39:59Z"));
        assert_eq!(s, at("2026-11-29T21:40:00Z"));
        assert_eq!(n, Some(at("2026-12-06T21:40:00Z")));
    }

    #[test]
    fn a_lifetime_window_never_ends() {
        let (s, n) = window_at(
            Period::Lifetime,
            at("2026-01-01T00:00:00Z"),
            at("2099-01-01T00:00:00Z"),
        );
        assert_eq!((s, n), (Ts(0), None));
    }

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(
            at("2026-11-22T21:40:00Z").rfc3339(),
            "2026-11-22T21:40:00.000Z"
        );
        assert_eq!(Ts(1_500).rfc3339(), "1970-01-01T00:00:01.500Z");
    }
}
