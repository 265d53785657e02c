//! One test per rule of the commands: commit, release, expiry, periods, grants, revokes and
//! subscriptions. Every command runs through `World::run`, which checks the invariants after it.

use super::*;
use crate::engine::event::{Event, PlanHold};
use crate::engine::ledger::LEDGER_PAGE_LINES;

fn plans() -> Vec<Plan> {
    vec![
        plan(
            "free",
            vec![limit("images", &["image.*"], 3, Period::Lifetime)],
        ),
        plan(
            "pro",
            vec![
                limit("images", &["image.*"], 5, Period::Month),
                limit("clips", &["video.*"], 4, Period::Week),
                limit("words", &["text.*"], 2, Period::Day),
            ],
        ),
    ]
}

fn packs() -> Vec<Pack> {
    vec![
        pack(
            "bundle",
            &[("dalle", "image.dall-e-3", 10), ("veo", "video.veo-3", 5)],
            Some(90),
        ),
        pack("small", &[("s", "image.dall-e-3", 2)], None),
        pack("img", &[("img", "image.*", 5)], None),
    ]
}

fn world() -> World {
    World::with(plans(), packs())
}

fn not_pending(id: &str, status: &'static str) -> Rejection {
    Rejection::ReservationNotPending {
        id: id.into(),
        status,
    }
}

fn last(w: &World) -> &Event {
    w.ledger.last().unwrap()
}

#[test]
fn the_test_start_is_the_last_day_of_january_2028() {
    assert_eq!(at("2028-01-31T10:00:00Z"), START);
}

/// pro with 2 units of room left, then `small` (2, model key) and `img` (5, category): a
/// reservation of 7 dall-e is plan 2, small 2, img 3.
fn split_world() -> (World, Name, Name, Name) {
    let mut w = world();
    w.subscribe("pro").result.unwrap();
    w.consume("image.flux", 3).unwrap();
    let small = w.grant_one("small", "r1");
    let img = w.grant_one("img", "r2");
    let id = w.reserve_ok("image.dall-e-3", 7);
    let r = w.res(&id);
    assert_eq!(r.plan_amount(), 2);
    assert_eq!(
        r.credits
            .iter()
            .map(|c| (c.balance_id.as_str(), c.amount))
            .collect::<Vec<_>>(),
        [(small.as_str(), 2), (img.as_str(), 3)]
    );
    (w, id, small, img)
}

#[test]
fn a_partial_commit_keeps_the_plan_first_then_credits_in_order_and_returns_the_rest() {
    // committed amount → (plan, small, img) kept
    let table = [
        (1, (1, 0, 0)),
        (2, (2, 0, 0)),
        (3, (2, 1, 0)),
        (4, (2, 2, 0)),
        (5, (2, 2, 1)),
        (7, (2, 2, 3)),
    ];
    for (amount, (plan_kept, small_kept, img_kept)) in table {
        let (mut w, id, small, img) = split_world();
        w.commit(&id, Some(amount)).unwrap();
        let EventKind::UsageCommitted {
            amount: committed,
            plan_amount,
            credits,
            ..
        } = &last(&w).kind
        else {
            panic!("commit {amount}: the last entry is {:?}", last(&w));
        };
        assert_eq!(
            (*committed, *plan_amount),
            (amount, plan_kept),
            "commit {amount}"
        );
        let mut expected_credits = vec![];
        if small_kept > 0 {
            expected_credits.push((small.clone(), small_kept));
        }
        if img_kept > 0 {
            expected_credits.push((img.clone(), img_kept));
        }
        let got: Vec<_> = credits
            .iter()
            .map(|c| (c.balance_id.clone(), c.amount))
            .collect();
        assert_eq!(
            got, expected_credits,
            "commit {amount}: credits kept, in order"
        );
        assert_eq!(
            w.used("pro", "images"),
            (3 + plan_kept, 0),
            "commit {amount}"
        );
        assert_eq!(w.parts(&small), (2 - small_kept, 0, small_kept, 0, 0));
        assert_eq!(w.parts(&img), (5 - img_kept, 0, img_kept, 0, 0));
        let r = w.res(&id);
        assert_eq!(r.status, ReservationStatus::Committed);
        assert_eq!(r.committed_amount, Some(amount));
    }
}

#[test]
fn a_repeated_commit_with_the_same_amount_answers_the_same_and_another_amount_is_refused() {
    let (mut w, id, _, _) = split_world();
    w.commit(&id, Some(3)).unwrap();
    let n = w.ledger.len();
    let state = w.state.clone();
    assert_eq!(w.commit(&id, Some(3)), Ok(Outcome::Reservation(id.clone())));
    assert_eq!(w.state, state, "a repeat changes nothing");
    assert_eq!(w.commit(&id, Some(2)), Err(not_pending(&id, "committed")));
    assert_eq!(
        w.commit(&id, None),
        Err(not_pending(&id, "committed")),
        "no amount means the whole reservation, which is another amount"
    );
    assert_eq!(w.release(&id), Err(not_pending(&id, "committed")));
    assert_eq!(w.ledger.len(), n);

    let (mut w, id, _, _) = split_world();
    w.commit(&id, None).unwrap();
    assert_eq!(w.res(&id).committed_amount, Some(7));
    assert_eq!(w.commit(&id, None), Ok(Outcome::Reservation(id.clone())));
    assert_eq!(w.commit(&id, Some(7)), Ok(Outcome::Reservation(id.clone())));
    assert_eq!(w.commit(&id, Some(6)), Err(not_pending(&id, "committed")));
}

#[test]
fn a_commit_above_the_reserved_amount_is_refused_and_changes_nothing() {
    let (mut w, id, _, _) = split_world();
    let state = w.state.clone();
    assert_eq!(
        w.commit(&id, Some(8)),
        Err(Rejection::CommitAboveReserved {
            asked: 8,
            reserved: 7
        })
    );
    assert_eq!(w.state, state);
    assert_eq!(w.res(&id).status, ReservationStatus::Pending);
}

#[test]
fn a_release_returns_every_unit_to_its_exact_source_and_a_repeat_answers_the_same() {
    let (mut w, id, small, img) = split_world();
    assert_eq!(w.used("pro", "images"), (3, 2));
    assert_eq!(w.parts(&small), (0, 2, 0, 0, 0));
    assert_eq!(w.parts(&img), (2, 3, 0, 0, 0));
    let n = w.ledger.len();
    w.release(&id).unwrap();
    assert_eq!(w.types_since(n), ["usage.released"]);
    assert_eq!(w.used("pro", "images"), (3, 0));
    assert_eq!(w.parts(&small), (2, 0, 0, 0, 0));
    assert_eq!(w.parts(&img), (5, 0, 0, 0, 0));
    assert_eq!(w.res(&id).status, ReservationStatus::Released);

    let state = w.state.clone();
    assert_eq!(w.release(&id), Ok(Outcome::Reservation(id.clone())));
    assert_eq!(w.state, state);
    assert_eq!(w.commit(&id, None), Err(not_pending(&id, "released")));
    assert_eq!(
        w.release("res_nope"),
        Err(Rejection::ReservationNotFound("res_nope".into()))
    );
    assert_eq!(
        w.commit("res_nope", None),
        Err(Rejection::ReservationNotFound("res_nope".into()))
    );
}

#[test]
fn a_release_after_a_revoke_writes_the_units_off_with_a_revoked_entry_for_the_reservation() {
    let mut w = world();
    let img = w.grant_one("img", "r");
    let id = w.reserve_ok("image.flux", 4);
    let n = w.ledger.len();
    w.revoke(&img).result.unwrap();
    assert_eq!(w.types_since(n), ["credits.revoked"]);
    assert!(matches!(
        &last(&w).kind,
        EventKind::CreditsRevoked {
            amount: 1,
            reservation_id: None,
            ..
        }
    ));
    assert_eq!(w.parts(&img), (0, 4, 0, 1, 0));
    assert_eq!(w.balance(&img).status, BalanceStatus::Revoked);

    let n = w.ledger.len();
    w.release(&id).unwrap();
    assert_eq!(w.types_since(n), ["usage.released", "credits.revoked"]);
    let EventKind::CreditsRevoked {
        balance_id,
        amount,
        reservation_id,
        ..
    } = &last(&w).kind
    else {
        unreachable!()
    };
    assert_eq!((balance_id, *amount), (&img, 4));
    assert_eq!(reservation_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        w.parts(&img),
        (0, 0, 0, 5, 0),
        "nothing comes back to a revoked balance"
    );
    assert_eq!(w.balance(&img).status, BalanceStatus::Revoked);
}

#[test]
fn units_held_on_a_revoked_balance_can_still_be_committed_and_the_rest_is_written_off() {
    let mut w = world();
    let img = w.grant_one("img", "r");
    let id = w.reserve_ok("image.flux", 4);
    w.revoke(&img).result.unwrap();
    let n = w.ledger.len();
    w.commit(&id, Some(3)).unwrap();
    assert_eq!(w.types_since(n), ["usage.committed", "credits.revoked"]);
    assert!(matches!(
        &last(&w).kind,
        EventKind::CreditsRevoked { amount: 1, reservation_id: Some(r), .. } if *r == id
    ));
    assert_eq!(w.parts(&img), (0, 0, 3, 2, 0));

    // A whole commit leaves nothing to write off.
    let mut w = world();
    let img = w.grant_one("img", "r");
    let id = w.reserve_ok("image.flux", 4);
    w.revoke(&img).result.unwrap();
    let n = w.ledger.len();
    w.commit(&id, None).unwrap();
    assert_eq!(w.types_since(n), ["usage.committed"]);
    assert_eq!(w.parts(&img), (0, 0, 4, 1, 0));
}

#[test]
fn a_release_after_the_balance_expired_writes_the_units_off_with_an_expired_entry() {
    let mut w = world();
    let (_, ids) = w
        .grant_until("img", "r", Some(START.plus_ms(HOUR)))
        .unwrap();
    let img = ids[0].clone();
    let id = w
        .reserve_with(reserve_cmd("image.flux", 4, 2 * HOUR, false))
        .unwrap();
    let n = w.ledger.len();
    w.advance(HOUR);
    assert_eq!(w.types_since(n), ["credits.expired"]);
    assert!(matches!(
        &last(&w).kind,
        EventKind::CreditsExpired {
            amount: 1,
            reservation_id: None,
            ..
        }
    ));
    assert_eq!(w.parts(&img), (0, 4, 0, 0, 1));
    assert_eq!(w.balance(&img).status, BalanceStatus::Expired);

    let n = w.ledger.len();
    w.release(&id).unwrap();
    assert_eq!(w.types_since(n), ["usage.released", "credits.expired"]);
    assert!(matches!(
        &last(&w).kind,
        EventKind::CreditsExpired { amount: 4, reservation_id: Some(r), balance_id }
            if *r == id && *balance_id == img
    ));
    assert_eq!(w.parts(&img), (0, 0, 0, 0, 5));
}

#[test]
fn a_balance_expires_when_the_clock_reaches_its_expires_at_and_a_grant_uses_the_pack_default() {
    let mut w = world();
    let (_, ids) = w.grant("bundle", "cs_1");
    let expiry = START.plus_ms(90 * DAY);
    for id in &ids {
        assert_eq!(w.balance(id).expires_at, Some(expiry));
    }
    w.advance(90 * DAY - 1);
    assert!(
        ids.iter()
            .all(|id| w.balance(id).status == BalanceStatus::Active)
    );
    let n = w.ledger.len();
    w.advance(1);
    assert_eq!(w.types_since(n), ["credits.expired", "credits.expired"]);
    assert_eq!(w.parts(&ids[0]), (0, 0, 0, 0, 10));
    assert_eq!(w.parts(&ids[1]), (0, 0, 0, 0, 5));
    assert_eq!(
        w.reserve("image.dall-e-3", 1).unwrap_err().0,
        ["no_subscription", "credits_exhausted"]
    );
}

#[test]
fn a_pending_reservation_expires_at_its_ttl_and_its_units_come_back() {
    let mut w = world();
    w.subscribe("pro").result.unwrap();
    let img = w.grant_one("img", "r");
    let id = w
        .reserve_with(reserve_cmd("image.flux", 7, 10 * SECOND, false))
        .unwrap();
    assert_eq!(w.res(&id).expires_at, START.plus_ms(10 * SECOND));
    assert_eq!(w.used("pro", "images"), (0, 5));
    assert_eq!(w.parts(&img), (3, 2, 0, 0, 0));
    w.advance(10 * SECOND - 1);
    assert_eq!(w.res(&id).status, ReservationStatus::Pending);
    let n = w.ledger.len();
    w.advance(1);
    assert_eq!(w.types_since(n), ["usage.expired"]);
    assert_eq!(w.res(&id).status, ReservationStatus::Expired);
    assert_eq!(w.used("pro", "images"), (0, 0));
    assert_eq!(w.parts(&img), (5, 0, 0, 0, 0));
    assert_eq!(w.commit(&id, None), Err(not_pending(&id, "expired")));
    assert_eq!(w.release(&id), Err(not_pending(&id, "expired")));
}

#[test]
fn a_command_after_the_ttl_sees_the_reservation_expired_even_without_a_timer() {
    let mut w = world();
    w.grant_one("img", "r");
    let id = w
        .reserve_with(reserve_cmd("image.flux", 2, 10 * SECOND, false))
        .unwrap();
    w.now = w.now.plus_ms(10 * SECOND);
    let s = w.run(Command::Commit {
        reservation_id: id.clone(),
        amount: None,
        response: None,
    });
    assert_eq!(s.result, Err(not_pending(&id, "expired")));
    assert_eq!(
        entry_types(&s),
        ["usage.expired"],
        "a refused step still returns the deadlines it ran"
    );
}

#[test]
fn a_balance_expiring_with_a_reservation_expires_first_and_the_returned_units_are_written_off() {
    let mut w = world();
    let (_, ids) = w
        .grant_until("img", "r", Some(START.plus_ms(HOUR)))
        .unwrap();
    let img = ids[0].clone();
    let id = w
        .reserve_with(reserve_cmd("image.flux", 2, HOUR, false))
        .unwrap();
    let n = w.ledger.len();
    w.advance(HOUR);
    assert_eq!(
        w.types_since(n),
        ["credits.expired", "usage.expired", "credits.expired"]
    );
    assert_eq!(w.res(&id).status, ReservationStatus::Expired);
    assert_eq!(w.parts(&img), (0, 0, 0, 0, 5));
}

#[test]
fn a_release_into_a_counter_whose_period_has_reset_is_dropped() {
    let mut w = world();
    w.subscribe("pro").result.unwrap();
    let old = w
        .reserve_with(reserve_cmd("image.flux", 3, 40 * DAY, false))
        .unwrap();
    let also_old = w
        .reserve_with(reserve_cmd("image.flux", 2, 40 * DAY, false))
        .unwrap();
    assert_eq!(w.used("pro", "images"), (0, 5));
    // Jan 31 + 1 month = Feb 29 (2028 is a leap year): a new window.
    w.advance(at("2028-02-29T10:00:00Z").0 - w.now.0);
    assert_eq!(w.used("pro", "images"), (0, 0));
    let new = w.reserve_ok("image.flux", 5);
    w.release(&old).unwrap();
    assert_eq!(
        w.used("pro", "images"),
        (0, 5),
        "the old window's units do not come back"
    );
    w.commit(&also_old, None).unwrap();
    assert_eq!(
        w.used("pro", "images"),
        (0, 5),
        "a commit held in the old window does not count in the new one"
    );
    w.commit(&new, Some(4)).unwrap();
    assert_eq!(w.used("pro", "images"), (4, 0));
}

#[test]
fn a_release_after_a_reset_with_no_new_hold_leaves_the_new_window_empty() {
    let mut w = world();
    w.subscribe("pro").result.unwrap();
    let old = w
        .reserve_with(reserve_cmd("text.gpt-4.1", 2, 3 * DAY, false))
        .unwrap();
    w.advance(DAY);
    assert_eq!(w.used("pro", "words"), (0, 0));
    w.release(&old).unwrap();
    assert_eq!(w.used("pro", "words"), (0, 0));
    assert!(w.reserve("text.gpt-4.1", 3).is_err());
    w.reserve_ok("text.gpt-4.1", 2);
}

#[test]
fn a_lifetime_counter_survives_plan_changes_from_free_to_pro_and_back() {
    let mut w = world();
    w.subscribe("free").result.unwrap();
    w.consume("image.flux", 2).unwrap();
    w.advance(40 * DAY);
    w.subscribe("pro").result.unwrap();
    assert_eq!(w.used("pro", "images"), (0, 0));
    w.consume("image.flux", 5).unwrap();
    w.advance(400 * DAY);
    w.subscribe("free").result.unwrap();
    assert_eq!(
        w.used("free", "images"),
        (2, 0),
        "leaving Free and coming back gives nothing"
    );
    assert_eq!(
        w.reserve("image.flux", 2).unwrap_err(),
        (
            vec!["plan_exhausted"],
            Available {
                plan: 1,
                credits: 0
            }
        )
    );
    w.cancel().result.unwrap();
    w.subscribe("free").result.unwrap();
    assert_eq!(
        w.used("free", "images"),
        (2, 0),
        "nor does a cancel and a new subscription"
    );
    w.consume("image.flux", 1).unwrap();
    assert_eq!(
        w.reserve("image.flux", 1).unwrap_err().0,
        ["plan_exhausted"]
    );
}

#[test]
fn a_monthly_counter_resets_at_each_boundary_with_months_clamped_to_their_end() {
    let mut w = world();
    w.subscribe("pro").result.unwrap();
    let full = |w: &mut World| {
        let found =
            crate::engine::matcher::find(&w.state, &w.catalog, &model("image.flux"), 1, w.now);
        found.result.is_err()
    };
    // (instant, whether the window of that instant is already full before consuming)
    let steps = [
        ("2028-01-31T10:00:00Z", false),
        ("2028-02-29T09:59:59.999Z", true),
        ("2028-02-29T10:00:00Z", false),
        ("2028-03-30T10:00:00Z", true),
        ("2028-03-31T09:59:59.999Z", true),
        ("2028-03-31T10:00:00Z", false),
        ("2028-04-30T10:00:00Z", false),
        // Jan 31 + 4 months is May 31, not Apr 30 + 1 month: boundaries are never chained.
        ("2028-05-30T10:00:00Z", true),
        ("2028-05-31T10:00:00Z", false),
    ];
    for (instant, already_full) in steps {
        w.advance(at(instant).0 - w.now.0);
        assert_eq!(full(&mut w), already_full, "at {instant}");
        if !already_full {
            w.consume("image.flux", 5).unwrap();
            assert!(full(&mut w), "at {instant} after using the month");
        }
    }
}

#[test]
fn weekly_and_daily_counters_reset_every_seven_and_one_times_24_hours() {
    let mut w = world();
    w.subscribe("pro").result.unwrap();
    w.consume("video.veo-3", 4).unwrap();
    w.consume("text.gpt-4.1", 2).unwrap();
    w.advance(DAY - 1);
    assert!(w.reserve("text.gpt-4.1", 1).is_err());
    w.advance(1);
    w.consume("text.gpt-4.1", 2).unwrap();
    w.advance(6 * DAY - 1);
    assert!(w.reserve("video.veo-3", 1).is_err());
    w.advance(1);
    w.consume("video.veo-3", 4).unwrap();
}

#[test]
fn a_grant_is_idempotent_on_pack_and_external_ref_even_after_the_pack_changed() {
    let mut w = world();
    let (created, first) = w.grant("bundle", "cs_1");
    assert!(created);
    assert_eq!(first.len(), 2);
    let items: Vec<_> = first
        .iter()
        .map(|id| (w.balance(id).pack_item_id.clone(), w.balance(id).granted))
        .collect();
    assert_eq!(
        items,
        [("dalle".into(), 10), ("veo".into(), 5)],
        "one balance per item, in order"
    );

    w.put_pack(pack(
        "bundle",
        &[
            ("dalle", "image.dall-e-3", 20),
            ("veo", "video.veo-3", 5),
            ("gpt", "text.*", 7),
        ],
        None,
    ));
    let state = w.state.clone();
    assert_eq!(w.grant("bundle", "cs_1"), (false, first.clone()));
    assert_eq!(w.state, state, "a repeat grants nothing");
    assert_eq!(
        w.grant_until("bundle", "cs_1", Some(Ts(0))),
        Ok((false, first.clone())),
        "a repeat answers the first grant before looking at the new request"
    );
    assert_eq!(w.balance(&first[0]).granted, 10);

    let (created, second) = w.grant("bundle", "cs_2");
    assert!(created);
    let amounts: Vec<_> = second.iter().map(|id| w.balance(id).granted).collect();
    assert_eq!(amounts, [20, 5, 7], "a new grant follows the edited pack");
    let (created, _) = w.grant("img", "cs_1");
    assert!(
        created,
        "the same external ref for another pack is another grant"
    );
    assert_eq!(
        w.grant_until("nope", "cs_1", None),
        Err(Rejection::PackNotFound("nope".into()))
    );
}

#[test]
fn a_grant_expiring_now_or_in_the_past_is_refused_and_an_override_wins_over_the_pack() {
    let mut w = world();
    let state = w.state.clone();
    for expires_at in [Ts(START.0 - 1), START] {
        assert_eq!(
            w.grant_until("bundle", "cs_1", Some(expires_at)),
            Err(Rejection::ExpiresAtNotInFuture)
        );
    }
    assert_eq!(w.state, state);
    let (_, ids) = w
        .grant_until("bundle", "cs_1", Some(START.plus_ms(1)))
        .unwrap();
    assert_eq!(w.balance(&ids[0]).expires_at, Some(START.plus_ms(1)));
    let id = w.grant_one("img", "r");
    assert_eq!(
        w.balance(&id).expires_at,
        None,
        "a pack without expiry never expires"
    );
}

#[test]
fn a_second_revoke_changes_nothing() {
    let mut w = world();
    let img = w.grant_one("img", "r");
    w.consume("image.flux", 2).unwrap();
    let s = w.revoke(&img);
    assert_eq!(s.result, Ok(Outcome::Balance(img.clone())));
    assert_eq!(entry_types(&s), ["credits.revoked"]);
    assert_eq!(w.parts(&img), (0, 0, 2, 3, 0));
    let state = w.state.clone();
    let s = w.revoke(&img);
    assert_eq!(s.result, Ok(Outcome::Balance(img.clone())));
    assert!(s.events.is_empty());
    assert_eq!(w.state, state);
    assert_eq!(
        w.revoke("bal_nope").result,
        Err(Rejection::BalanceNotFound("bal_nope".into()))
    );
}

#[test]
fn revoking_an_expired_balance_changes_nothing() {
    let mut w = world();
    let (_, ids) = w.grant_until("img", "r", Some(START.plus_ms(1))).unwrap();
    w.advance(1);
    let state = w.state.clone();
    assert!(w.revoke(&ids[0]).events.is_empty());
    assert_eq!(w.state, state);
    assert_eq!(w.balance(&ids[0]).status, BalanceStatus::Expired);
}

#[test]
fn subscribing_to_the_same_plan_again_changes_nothing() {
    let mut w = world();
    let s = w.subscribe("pro");
    assert_eq!(entry_types(&s), ["subscription.updated"]);
    w.advance(DAY);
    let state = w.state.clone();
    let s = w.subscribe("pro");
    assert_eq!(s.result, Ok(Outcome::Subscription));
    assert!(s.events.is_empty());
    assert_eq!(w.state, state);
    assert_eq!(
        w.subscribe("gold").result,
        Err(Rejection::PlanNotFound("gold".into()))
    );
}

#[test]
fn another_plan_starts_a_new_period_now() {
    let mut w = world();
    w.subscribe("free").result.unwrap();
    w.advance(DAY);
    w.subscribe("pro").result.unwrap();
    let s = w.state.subscription.clone().unwrap();
    assert_eq!(s.plan_id, "pro");
    assert_eq!(s.current_period_start, START.plus_ms(DAY));
    assert_eq!(s.created_at, START, "the subscription itself is the same");
}

#[test]
fn a_cancel_makes_the_user_unsubscribed_and_a_later_subscribe_starts_a_new_period() {
    let mut w = world();
    assert_eq!(w.cancel().result, Err(Rejection::NoSubscription));
    w.subscribe("pro").result.unwrap();
    w.consume("image.flux", 5).unwrap();
    w.advance(10 * DAY);
    let s = w.cancel();
    assert_eq!(entry_types(&s), ["subscription.canceled"]);
    assert_eq!(last(&w).kind.type_name(), "subscription.canceled");
    let s = w.cancel();
    assert_eq!(s.result, Ok(Outcome::Subscription));
    assert!(s.events.is_empty(), "a second cancel answers the same");
    assert_eq!(
        w.reserve("image.flux", 1).unwrap_err().0,
        ["no_subscription", "credits_exhausted"]
    );
    w.advance(HOUR);
    let s = w.subscribe("pro");
    assert_eq!(entry_types(&s), ["subscription.updated"]);
    let sub = w.state.subscription.clone().unwrap();
    assert_eq!(sub.current_period_start, START.plus_ms(10 * DAY + HOUR));
    assert_eq!(sub.created_at, START.plus_ms(10 * DAY + HOUR));
    assert_eq!(
        w.used("pro", "images"),
        (0, 0),
        "a new period: the month starts again"
    );
    w.consume("image.flux", 5).unwrap();
}

#[test]
fn a_changed_limit_applies_at_the_next_operation_with_used_carried_over_by_limit_id() {
    let mut w = world();
    w.subscribe("pro").result.unwrap();
    w.consume("image.flux", 3).unwrap();
    let pending = w.reserve_ok("image.flux", 1);
    let mut pro = plans().remove(1);
    pro.limits[0].limit = 10;
    w.put_plan(pro.clone());
    assert_eq!(w.used("pro", "images"), (3, 1));
    let raised = w.reserve("image.flux", 7).unwrap_err();
    assert_eq!(raised.1.plan, 6, "the raised limit is seen at once");
    w.consume("image.flux", 6).unwrap();

    pro.limits[0].limit = 8;
    w.limits_lowered = true;
    w.put_plan(pro.clone());
    assert_eq!(
        w.reserve("image.flux", 1).unwrap_err(),
        (vec!["plan_exhausted"], Available::default()),
        "a lowered limit below what was used leaves no room"
    );
    w.commit(&pending, None).unwrap();
    assert_eq!(w.used("pro", "images"), (10, 0));

    pro.limits[0].id = "pictures".into();
    w.put_plan(pro);
    w.limits_lowered = false;
    assert_eq!(
        w.used("pro", "pictures"),
        (0, 0),
        "another limit id is another counter"
    );
    w.consume("image.flux", 8).unwrap();
}

#[test]
fn consume_reserves_and_commits_in_one_step() {
    let mut w = world();
    w.subscribe("pro").result.unwrap();
    let img = w.grant_one("img", "r");
    let n = w.ledger.len();
    let id = w.consume("image.flux", 7).unwrap();
    assert_eq!(w.types_since(n), ["usage.reserved", "usage.committed"]);
    let r = w.res(&id);
    assert_eq!(
        (r.status, r.committed_amount),
        (ReservationStatus::Committed, Some(7))
    );
    assert_eq!(w.used("pro", "images"), (5, 0));
    assert_eq!(w.parts(&img), (3, 0, 2, 0, 0));
}

#[test]
fn a_reserve_with_a_known_request_key_finds_the_first_reservation() {
    let mut w = world();
    w.grant_one("img", "r");
    let cmd = Command::Reserve {
        model: model("image.flux"),
        amount: 2,
        ttl_ms: TTL,
        metadata: Some("{\"a\":1}".into()),
        request_key: Some("idem-1".into()),
        commit: false,
    };
    let first = w.reserve_with(cmd.clone()).unwrap();
    let state = w.state.clone();
    assert_eq!(w.reserve_with(cmd).unwrap(), first);
    assert_eq!(w.state, state);
    assert_eq!(w.res(&first).metadata.as_deref(), Some("{\"a\":1}"));
}

#[test]
fn a_reservation_records_its_plan_hold_window_per_limit() {
    let mut w = World::with(
        vec![plan(
            "two",
            vec![
                limit("month", &["image.*"], 5, Period::Month),
                limit("ever", &["*"], 50, Period::Lifetime),
            ],
        )],
        vec![],
    );
    w.advance(HOUR);
    w.subscribe("two").result.unwrap();
    w.advance(40 * DAY);
    let id = w.reserve_ok("image.flux", 2);
    let expected = PlanHold {
        plan_id: "two".into(),
        limits: vec![
            crate::engine::event::LimitHold {
                limit_id: "month".into(),
                window: at("2028-02-29T11:00:00Z"),
            },
            crate::engine::event::LimitHold {
                limit_id: "ever".into(),
                window: Ts(0),
            },
        ],
        amount: 2,
    };
    assert_eq!(w.res(&id).plan, Some(expected));
}

#[test]
fn quantities_at_the_api_maximum_add_up_without_overflow() {
    use crate::engine::ids::AMOUNT_MAX;
    let mut w = World::with(
        vec![plan(
            "big",
            vec![limit("all", &["*"], AMOUNT_MAX, Period::Lifetime)],
        )],
        vec![pack(
            "huge",
            &[("a", "*", AMOUNT_MAX), ("b", "image.*", AMOUNT_MAX)],
            None,
        )],
    );
    w.subscribe("big").result.unwrap();
    w.grant("huge", "r1");
    w.grant("huge", "r2");
    let found = crate::engine::matcher::find(&w.state, &w.catalog, &model("image.flux"), 1, w.now);
    assert_eq!(
        found.available,
        Available {
            plan: AMOUNT_MAX,
            credits: 4 * AMOUNT_MAX
        }
    );
    for _ in 0..5 {
        w.reserve_ok("image.flux", AMOUNT_MAX);
    }
    let (reasons, available) = w.reserve("image.flux", 1).unwrap_err();
    assert_eq!(reasons, ["plan_and_credits_exhausted"]);
    assert_eq!(available, Available::default());
}

#[test]
fn the_next_deadline_is_the_soonest_active_balance_expiry_or_pending_reservation_ttl() {
    use crate::engine::next_deadline;
    let mut w = world();
    assert_eq!(next_deadline(&w.state), None);
    let (_, ids) = w
        .grant_until("img", "r", Some(START.plus_ms(HOUR)))
        .unwrap();
    // Granted an hour before its expiry, inside the 3 notice days: `credits.expiring` is due now.
    assert_eq!(next_deadline(&w.state), Some(START.plus_ms(HOUR - 3 * DAY)));
    w.advance(0);
    assert_eq!(w.notices_since(w.notices.len() - 1), ["credits.expiring"]);
    assert_eq!(next_deadline(&w.state), Some(START.plus_ms(HOUR)));
    let id = w
        .reserve_with(reserve_cmd("image.flux", 1, 10 * SECOND, false))
        .unwrap();
    assert_eq!(next_deadline(&w.state), Some(START.plus_ms(10 * SECOND)));
    w.commit(&id, None).unwrap();
    assert_eq!(next_deadline(&w.state), Some(START.plus_ms(HOUR)));
    w.revoke(&ids[0]).result.unwrap();
    assert_eq!(
        next_deadline(&w.state),
        None,
        "a revoked balance has no deadline"
    );
}

#[test]
fn a_request_key_finds_its_reservation_after_it_ended_and_left_memory_for_24_hours() {
    let mut w = world();
    w.put_pack(pack("lots", &[("l", "image.*", 1_000)], None));
    w.grant_one("lots", "r");
    let keyed = |key: &str| Command::Reserve {
        model: model("image.flux"),
        amount: 1,
        ttl_ms: TTL,
        metadata: None,
        request_key: Some(key.into()),
        commit: true,
    };
    let first = w.reserve_with(keyed("idem-consume")).unwrap();
    assert!(
        w.state.request_keys.is_empty(),
        "an ended reserve's key leaves memory"
    );
    // Enough operations that the first consume's lines leave memory as a page.
    for _ in 0..LEDGER_PAGE_LINES {
        w.consume("image.flux", 1).unwrap();
    }
    assert!(
        w.state.reservation(&first).is_none(),
        "the reservation left memory"
    );
    let state = w.state.clone();
    assert_eq!(w.reserve_with(keyed("idem-consume")).unwrap(), first);
    assert_eq!(w.state, state, "a retried reserve holds nothing again");
    assert_eq!(w.res(&first).status, ReservationStatus::Committed);

    w.advance(DAY);
    let again = w.reserve_with(keyed("idem-consume")).unwrap();
    assert_ne!(
        again, first,
        "after 24 hours the key makes a new reservation"
    );
}

#[test]
fn a_request_key_finds_its_reservation_when_the_retry_itself_expires_it() {
    // Found by the kill -9 test: a keyed reserve applied but never answered, retried after its
    // TTL. The retry's own catch-up expires the reservation and moves its key out of memory;
    // the decision that follows must still see it.
    let mut w = world();
    w.grant_one("img", "r");
    let keyed = Command::Reserve {
        model: model("image.flux"),
        amount: 1,
        ttl_ms: TTL,
        metadata: None,
        request_key: Some("idem-expiring".into()),
        commit: false,
    };
    let first = w.reserve_with(keyed.clone()).unwrap();
    w.now = w.now.plus_ms(TTL);
    let again = w.reserve_with(keyed).unwrap();
    assert_eq!(
        again, first,
        "the retry finds the reservation its catch-up just expired"
    );
    assert_eq!(w.res(&first).status, ReservationStatus::Expired);
    assert_eq!(w.types_since(w.ledger.len() - 1), ["usage.expired"]);
}
