//! Outgoing events: each fires when its condition is crossed, and only then.

use super::*;
use crate::engine::catalog::CatalogChange;
use crate::engine::notice::{NoticeData, NoticeType};

/// A world with a plan of 3 images a month and a pack of 10 with a low-balance threshold of 3.
fn world() -> World {
    let mut w = World::with(
        vec![plan(
            "free",
            vec![limit("img", &["image.*"], 3, Period::Month)],
        )],
        vec![pack("cpk_ten", &[("img", "image.*", 10)], Some(30))],
    );
    let mut pack = (*w.catalog.packs["cpk_ten"]).clone();
    pack.items[0].low_balance_threshold = Some(3);
    w.catalog.apply(&CatalogChange::PackPut(pack));
    w
}

#[test]
fn ledger_entries_of_note_are_echoed_once_each_with_their_object() {
    let mut w = world();
    w.subscribe("free");
    let balance = w.grant_one("cpk_ten", "cs_1");
    w.revoke(&balance);
    w.cancel();
    assert_eq!(
        w.notices_since(0),
        [
            "subscription.updated",
            "credits.granted",
            "credits.revoked",
            "subscription.canceled"
        ]
    );
    let NoticeData::Balance(granted) = &w.notices[1].notice.data else {
        panic!("credits.granted carries a balance");
    };
    assert_eq!(
        (granted.id.as_str(), granted.remaining),
        (balance.as_str(), 10)
    );
    let NoticeData::Balance(revoked) = &w.notices[2].notice.data else {
        panic!("credits.revoked carries a balance");
    };
    assert_eq!(revoked.status, BalanceStatus::Revoked);
    assert!(w.notices.iter().all(|n| n.id.starts_with("evt_")));
    // Notices are not ledger entries.
    assert!(w.ledger.iter().all(|e| SentNotice::of(e).is_none()));
}

#[test]
fn low_and_depleted_fire_on_the_crossing_and_again_only_after_rising_above() {
    let mut w = world();
    w.grant_one("cpk_ten", "cs_1");
    let start = w.notices.len();
    w.consume("image.a", 6).unwrap(); // 10 → 4: above 3
    assert_eq!(w.notices_since(start), Vec::<&str>::new());
    w.consume("image.a", 1).unwrap(); // 4 → 3: crosses
    assert_eq!(w.notices_since(start), ["credits.low"]);
    w.consume("image.a", 1).unwrap(); // 3 → 2: still below, nothing new
    assert_eq!(w.notices_since(start), ["credits.low"]);
    // A reservation holds the rest: remaining reaches 0.
    let held = w.reserve_ok("image.a", 2);
    assert_eq!(w.notices_since(start), ["credits.low", "credits.depleted"]);
    // Released, it rises above the line; the next drop is a new crossing.
    w.release(&held).unwrap();
    assert_eq!(w.notices.len() - start, 2);
    w.consume("image.a", 2).unwrap();
    assert_eq!(
        w.notices_since(start),
        ["credits.low", "credits.depleted", "credits.depleted"],
        "2 → 0 crosses zero again but not the low line (it was below it already)"
    );
}

#[test]
fn a_balance_without_a_threshold_sends_no_low_event() {
    let mut w = World::with(vec![], vec![pack("p", &[("i", "image.*", 5)], None)]);
    w.grant_one("p", "x");
    let start = w.notices.len();
    w.consume("image.a", 4).unwrap();
    assert_eq!(w.notices_since(start), Vec::<&str>::new());
    w.consume("image.a", 1).unwrap();
    assert_eq!(w.notices_since(start), ["credits.depleted"]);
}

#[test]
fn limit_reached_fires_once_per_period() {
    let mut w = world();
    w.subscribe("free");
    let start = w.notices.len();
    w.consume("image.a", 2).unwrap();
    assert_eq!(w.notices_since(start), Vec::<&str>::new());
    let held = w.reserve_ok("image.a", 1);
    assert_eq!(w.notices_since(start), ["plan.limit_reached"]);
    let NoticeData::Counter(counter) = &w.notices[start].notice.data else {
        panic!("plan.limit_reached carries a counter");
    };
    assert_eq!(
        (
            counter.limit.id.as_str(),
            counter.used,
            counter.reserved,
            counter.remaining
        ),
        ("img", 2, 1, 0)
    );
    // Room again, then none again: the same period, no second event.
    w.release(&held).unwrap();
    w.consume("image.a", 1).unwrap();
    assert_eq!(w.notices_since(start), ["plan.limit_reached"]);
    // The next month's counter starts over.
    w.advance(31 * DAY);
    let next = w.notices.len();
    w.consume("image.a", 3).unwrap();
    assert_eq!(w.notices_since(next), ["plan.limit_reached"]);
}

#[test]
fn expiring_fires_once_the_notice_days_before_expiry_then_expired() {
    let mut w = world();
    let expires = w.now.plus_ms(10 * DAY);
    let (_, ids) = w.grant_until("cpk_ten", "cs_1", Some(expires)).unwrap();
    let start = w.notices.len();
    w.advance(7 * DAY - SECOND);
    assert_eq!(w.notices_since(start), Vec::<&str>::new());
    w.advance(SECOND);
    assert_eq!(w.notices_since(start), ["credits.expiring"]);
    let NoticeData::Balance(b) = &w.notices[start].notice.data else {
        panic!("credits.expiring carries a balance");
    };
    assert_eq!(
        (b.id.as_str(), b.expires_at),
        (ids[0].as_str(), Some(expires))
    );
    w.advance(DAY);
    assert_eq!(
        w.notices_since(start),
        ["credits.expiring"],
        "once per balance"
    );
    w.advance(3 * DAY);
    assert_eq!(
        w.notices_since(start),
        ["credits.expiring", "credits.expired"]
    );
}

#[test]
fn a_revoked_balance_is_not_announced_as_expiring() {
    let mut w = world();
    let expires = w.now.plus_ms(10 * DAY);
    let (_, ids) = w.grant_until("cpk_ten", "cs_1", Some(expires)).unwrap();
    w.revoke(&ids[0]);
    let start = w.notices.len();
    w.advance(20 * DAY);
    assert_eq!(w.notices_since(start), Vec::<&str>::new());
}

#[test]
fn an_expired_reservation_is_announced_with_the_reservation() {
    let mut w = world();
    w.grant_one("cpk_ten", "cs_1");
    let id = w.reserve_ok("image.a", 1);
    let start = w.notices.len();
    w.advance(TTL);
    assert_eq!(w.notices_since(start), ["reservation.expired"]);
    let NoticeData::Reservation(r) = &w.notices[start].notice.data else {
        panic!("reservation.expired carries a reservation");
    };
    assert_eq!(
        (r.id.as_str(), r.status),
        (id.as_str(), ReservationStatus::Expired)
    );
    assert_eq!(w.notices[start].notice.kind, NoticeType::ReservationExpired);
}
