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

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 (and jiff) can write.
const LAST_WRITABLE_MS: i64 = 253_402_300_799_999;
/// What is ever measured forward from "now": a pack's longest expiry (36,500 days), a year's
/// period, a day's reservation TTL or stored answer, with a day to spare.
const ROOM_AFTER_NOW_MS: i64 = (36_500 + 366 + 2) * MS_PER_DAY;
/// The latest instant a clock may show, so that every deadline computed from it can still be
/// written as a timestamp.
pub const LATEST_NOW: Ts = Ts(LAST_WRITABLE_MS - ROOM_AFTER_NOW_MS);

/// The test clock's offset after moving it `seconds` forward from `offset_ms`, if the clock then
/// reads no later than [`LATEST_NOW`] at `real_now`.
pub fn advanced_offset_ms(real_now: Ts, offset_ms: i64, seconds: u64) -> Option<i64> {
    let step_ms = i64::try_from(seconds).ok()?.checked_mul(MS_PER_SECOND)?;
    let offset = offset_ms.checked_add(step_ms)?;
    let now = real_now.0.checked_add(offset)?;
    (now <= LATEST_NOW.0).then_some(offset)
}

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
/// An instant past what any clock can show gives a window from the anchor that never ends: it is
/// an answer, not a panic.
pub fn window_at(period: Period, anchor: Ts, now: Ts) -> (Ts, Option<Ts>) {
    match period {
        Period::Lifetime => (Ts(0), None),
        Period::Day => fixed_window(anchor, now, MS_PER_DAY),
        Period::Week => fixed_window(anchor, now, 7 * MS_PER_DAY),
        Period::Month => calendar_window(anchor, now, 1),
        Period::Year => calendar_window(anchor, now, 12),
    }
}

fn fixed_window(anchor: Ts, now: Ts, len: i64) -> (Ts, Option<Ts>) {
    let window = || {
        let k = now.0.checked_sub(anchor.0)?.div_euclid(len);
        let start = anchor.0.checked_add(k.checked_mul(len)?)?;
        Some((Ts(start), start.checked_add(len).map(Ts)))
    };
    window().unwrap_or((anchor, None))
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
    // Years are within ±9999 here, so these cannot overflow; checked all the same, like every
    // other time computation.
    let months = (i64::from(n.year()) - i64::from(a.year()))
        .checked_mul(12)
        .and_then(|m| m.checked_add(i64::from(n.month()) - i64::from(a.month())));
    let Some(months) = months else {
        return (anchor, None);
    };
    // The estimate is at most one period late (day of month and time of day are ignored).
    let mut k = months.div_euclid(months_per_period);
    loop {
        match boundary(anchor, k, months_per_period) {
            Some(start) if start > now => match k.checked_sub(1) {
                Some(earlier) => k = earlier,
                None => return (anchor, None),
            },
            Some(start) => {
                let next = k
                    .checked_add(1)
                    .and_then(|k| boundary(anchor, k, months_per_period));
                return (start, next);
            }
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
    fn windows_at_the_ends_of_time_are_answers_not_panics() {
        for period in [Period::Day, Period::Week, Period::Month, Period::Year] {
            for (anchor, now) in [
                (Ts(i64::MIN), Ts(i64::MAX)),
                (Ts(i64::MAX), Ts(i64::MIN)),
                (Ts(-1), Ts(i64::MAX)),
                (Ts(i64::MAX - 1), Ts(i64::MAX)),
            ] {
                let (start, _) = window_at(period, anchor, now);
                assert!(start <= now.max(anchor), "{period:?} {anchor:?} {now:?}");
            }
        }
    }

    #[test]
    fn from_the_latest_now_every_deadline_is_still_a_timestamp() {
        let latest = LATEST_NOW;
        for period in [Period::Day, Period::Week, Period::Month, Period::Year] {
            let (_, next) = window_at(period, latest, latest);
            let next = next.expect("a next boundary");
            assert_ne!(next.rfc3339(), "invalid", "{period:?}");
        }
        assert_ne!(latest.plus_ms(36_500 * MS_PER_DAY).rfc3339(), "invalid");
        assert_ne!(latest.plus_ms(366 * MS_PER_DAY).rfc3339(), "invalid");
    }

    #[test]
    fn the_test_clock_moves_up_to_the_latest_now_and_no_further() {
        let real = at("2026-11-22T21:40:00Z");
        let to_latest_s = u64::try_from((LATEST_NOW.0 - real.0) / MS_PER_SECOND).unwrap();
        let offset = advanced_offset_ms(real, 0, to_latest_s).expect("up to the latest is fine");
        assert!(Ts(real.0 + offset) <= LATEST_NOW);
        assert_eq!(advanced_offset_ms(real, offset, 1), None);
        assert_eq!(advanced_offset_ms(real, 0, to_latest_s + 1), None);
        assert_eq!(advanced_offset_ms(real, 0, u64::MAX), None);
        assert_eq!(advanced_offset_ms(real, i64::MAX - 5, 1), None);
        assert_eq!(advanced_offset_ms(real, 5_000, 2), Some(7_000));
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
