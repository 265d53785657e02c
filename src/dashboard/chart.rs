//! The last 30 days of a user's consumption as a small server-rendered SVG bar chart.

use crate::engine::Ts;
use crate::engine::event::EventKind;
use crate::engine::ledger::LedgerLine;
use crate::engine::time::MS_PER_DAY;
use maud::{Markup, html};
use std::collections::BTreeMap;

pub const DAYS: usize = 30;

/// Committed amounts per model category, per UTC day, oldest day first, the last being `now`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumption {
    pub first_day: Ts,
    pub by_category: BTreeMap<String, [u64; DAYS]>,
}

/// Sums the `usage.committed` entries of the last [`DAYS`] days by the category of their model.
/// Categories, not units: one model's units are all the same, and a category's almost always are.
pub fn consumption(lines: &[LedgerLine], now: Ts) -> Consumption {
    let today = now.0.div_euclid(MS_PER_DAY);
    let first = today - (DAYS as i64 - 1);
    let mut by_category: BTreeMap<String, [u64; DAYS]> = BTreeMap::new();
    for line in lines {
        let EventKind::UsageCommitted { amount, .. } = &line.event.kind else {
            continue;
        };
        let day = line.event.at.0.div_euclid(MS_PER_DAY);
        if day < first || day > today {
            continue;
        }
        let Some(reservation) = &line.reservation else {
            continue;
        };
        let category = reservation.model.category().to_owned();
        let slot = &mut by_category.entry(category).or_insert([0; DAYS])[(day - first) as usize];
        *slot = slot.saturating_add(*amount);
    }
    Consumption {
        first_day: Ts(first * MS_PER_DAY),
        by_category,
    }
}

const WIDTH: u64 = 600;
const HEIGHT: u64 = 120;
const BAR_GAP: u64 = 4;

fn day_text(day: Ts) -> String {
    day.rfc3339().get(..10).unwrap_or_default().to_owned()
}

/// One bar chart per category, each scaled to its own largest day.
pub fn render(c: &Consumption) -> Markup {
    let step = WIDTH / DAYS as u64;
    html! {
        @if c.by_category.is_empty() {
            p.muted { "No usage committed in the last 30 days." }
        }
        @for (category, days) in &c.by_category {
            // Saturating, as the days are: a month of the largest legal consumes passes u64.
            @let total = days.iter().fold(0u64, |sum, day| sum.saturating_add(*day));
            @let max = days.iter().copied().max().unwrap_or(0).max(1);
            figure.chart {
                figcaption {
                    strong { (category) ".*" } " · " (super::number(total)) " committed in 30 days, busiest day "
                    (super::number(max))
                }
                svg viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 16)) role="img"
                    aria-label=(format!("{category}: {total} committed over the last 30 days"))
                    preserveAspectRatio="none" {
                    line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) class="axis" {}
                    @for (i, amount) in days.iter().enumerate() {
                        @let height = (u128::from(*amount) * u128::from(HEIGHT) / u128::from(max)) as u64;
                        @let day = Ts(c.first_day.0 + i as i64 * MS_PER_DAY);
                        rect.col x=(i as u64 * step) y=(HEIGHT - height) width=(step - BAR_GAP)
                            height=(height) {
                            title { (day_text(day)) ": " (amount) }
                        }
                    }
                    text x="0" y=(HEIGHT + 14) class="tick" { (day_text(c.first_day)) }
                    text x=(WIDTH) y=(HEIGHT + 14) text-anchor="end" class="tick" {
                        (day_text(Ts(c.first_day.0 + (DAYS as i64 - 1) * MS_PER_DAY)))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::number;
    use crate::engine::event::Event;
    use crate::engine::ids::ModelKey;
    use crate::engine::user::{Reservation, ReservationStatus};
    use std::sync::Arc;

    fn committed(at: Ts, model: &str, amount: u64) -> LedgerLine {
        LedgerLine {
            event: Arc::new(Event {
                id: "le_1".into(),
                at,
                kind: EventKind::UsageCommitted {
                    reservation_id: "res_1".into(),
                    amount,
                    plan_amount: amount,
                    credits: vec![],
                    response: None,
                },
            }),
            reservation: Some(Box::new(Reservation {
                id: "res_1".into(),
                model: ModelKey::parse(model).unwrap(),
                amount,
                plan: None,
                credits: vec![],
                status: ReservationStatus::Committed,
                expires_at: at,
                created_at: at,
                metadata: None,
                request_key: None,
                committed_amount: Some(amount),
                response: None,
                error_code: None,
            })),
            pack_id: None,
        }
    }

    #[test]
    fn committed_usage_is_summed_per_category_and_day_within_thirty_days() {
        let now = Ts(100 * MS_PER_DAY + 5_000);
        let lines = [
            committed(now, "image.dall-e-3", 2),
            committed(Ts(100 * MS_PER_DAY), "image.flux", 3),
            committed(Ts(99 * MS_PER_DAY + 1), "video.veo-3", 5),
            committed(Ts(71 * MS_PER_DAY), "image.flux", 7),
            committed(Ts(70 * MS_PER_DAY), "image.flux", 1000),
        ];
        let c = consumption(&lines, now);
        assert_eq!(c.first_day, Ts(71 * MS_PER_DAY));
        let image = c.by_category["image"];
        assert_eq!(image[DAYS - 1], 5, "today's two image entries");
        assert_eq!(image[0], 7, "the first day is in, the day before is out");
        assert_eq!(image.iter().sum::<u64>(), 12);
        assert_eq!(c.by_category["video"][DAYS - 2], 5);
        let svg = render(&c).into_string();
        assert_eq!(svg.matches("<figure").count(), 2);
        assert!(
            svg.contains("image: 12 committed over the last 30 days"),
            "{svg}"
        );
    }

    #[test]
    fn a_month_of_the_largest_legal_consumes_renders_without_overflow() {
        use crate::engine::ids::AMOUNT_MAX;
        let now = Ts(100 * MS_PER_DAY);
        // 2^11 consumes of 2^53 − 1 pass u64 on one day; the days after add to that.
        let lines: Vec<LedgerLine> = (0..DAYS as i64)
            .flat_map(|d| {
                (0..2_100).map(move |_| committed(Ts((71 + d) * MS_PER_DAY), "image.x", AMOUNT_MAX))
            })
            .collect();
        let c = consumption(&lines, now);
        assert!(c.by_category["image"].iter().all(|&d| d == u64::MAX));
        let svg = render(&c).into_string();
        assert!(
            svg.contains(&number(u64::MAX)),
            "the total is shown, capped: {svg}"
        );
    }

    #[test]
    fn no_usage_says_so() {
        let c = consumption(&[], Ts(0));
        assert!(render(&c).into_string().contains("No usage committed"));
    }
}
