//! The matcher of API.md, one row per rule and per denial reason.
//!
//! Each row builds a user from scratch: balances first (each from its own one-item pack, so a row
//! names a balance by its pack), then the subscription and the plan usage, then one request. The
//! request is checked through `matcher::find` and through `step`, and a denial must hold nothing.

use super::*;
use crate::engine::matcher;

/// Plans of the matcher rows.
fn matcher_plans() -> Vec<Plan> {
    vec![
        plan(
            "pro",
            vec![
                limit("images", &["image.*"], 10, Period::Month),
                limit("dalle", &["image.dall-e-3"], 4, Period::Day),
            ],
        ),
        plan(
            "text",
            vec![limit("words", &["text.*"], 100, Period::Month)],
        ),
        plan(
            "multi",
            vec![limit("media", &["image.*", "video.*"], 6, Period::Month)],
        ),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Sub {
    None,
    Active(&'static str),
    Canceled(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Live,
    Revoked,
    /// Needs `expires`: the request comes an hour after the start.
    Expired,
    /// Consumed whole with the row's model before the subscription exists.
    UsedUp,
}

#[derive(Clone, Debug)]
struct Bal {
    name: &'static str,
    pattern: &'static str,
    amount: u64,
    /// Milliseconds after the start at which it is granted.
    created: i64,
    /// Milliseconds after the start at which it expires.
    expires: Option<i64>,
    fate: Fate,
}

fn bal(name: &'static str, pattern: &'static str, amount: u64) -> Bal {
    Bal {
        name,
        pattern,
        amount,
        created: 0,
        expires: None,
        fate: Fate::Live,
    }
}

impl Bal {
    fn created(mut self, ms: i64) -> Bal {
        self.created = ms;
        self
    }
    fn expires(mut self, ms: i64) -> Bal {
        self.expires = Some(ms);
        self
    }
    fn fate(mut self, fate: Fate) -> Bal {
        if fate == Fate::Expired && self.expires.is_none() {
            self.expires = Some(SECOND);
        }
        self.fate = fate;
        self
    }
}

#[derive(Clone, Debug)]
enum Want {
    Allow {
        plan: u64,
        limits: &'static [&'static str],
        credits: &'static [(&'static str, u64)],
    },
    Deny(&'static [&'static str]),
}

#[derive(Clone, Debug)]
struct Row {
    name: &'static str,
    sub: Sub,
    /// Consumed under the plan (before the request, after the balances).
    used: &'static [(&'static str, u64)],
    balances: Vec<Bal>,
    model: &'static str,
    amount: u64,
    want: Want,
    /// `available` (plan, credits) as `find` reports it.
    available: (u64, u64),
}

fn row(name: &'static str, sub: Sub, model: &'static str, amount: u64, want: Want) -> Row {
    Row {
        name,
        sub,
        used: &[],
        balances: vec![],
        model,
        amount,
        want,
        available: (0, 0),
    }
}

impl Row {
    fn used(mut self, used: &'static [(&'static str, u64)]) -> Row {
        self.used = used;
        self
    }
    fn bals(mut self, balances: Vec<Bal>) -> Row {
        self.balances = balances;
        self
    }
    fn avail(mut self, plan: u64, credits: u64) -> Row {
        self.available = (plan, credits);
        self
    }
}

fn allow(
    plan: u64,
    limits: &'static [&'static str],
    credits: &'static [(&'static str, u64)],
) -> Want {
    Want::Allow {
        plan,
        limits,
        credits,
    }
}

fn credits_only(credits: &'static [(&'static str, u64)]) -> Want {
    allow(0, &[], credits)
}

/// Builds the row's user and checks its request.
fn check(row: &Row) {
    let name = row.name;
    let mut w = World::with(matcher_plans(), vec![]);
    let mut by_name: BTreeMap<&str, Name> = BTreeMap::new();
    for b in &row.balances {
        w.put_pack(pack(b.name, &[("item", b.pattern, b.amount)], None));
        w.now = START.plus_ms(b.created);
        let expires_at = b.expires.map(|ms| START.plus_ms(ms));
        let (_, ids) = w.grant_until(b.name, "ref", expires_at).unwrap();
        let id = ids[0].clone();
        match b.fate {
            Fate::Live | Fate::Expired => {}
            Fate::Revoked => {
                w.revoke(&id).result.unwrap();
            }
            Fate::UsedUp => {
                let r = w.consume(row.model, b.amount).unwrap();
                assert_eq!(w.parts(&id).0, 0, "{name}: {} used up by {r}", b.name);
            }
        }
        by_name.insert(b.name, id);
    }
    let requested_at = START.plus_ms(HOUR);
    w.advance(requested_at.0 - w.now.0);
    match row.sub {
        Sub::None => {}
        Sub::Active(p) | Sub::Canceled(p) => {
            w.subscribe(p).result.unwrap();
        }
    }
    for (m, n) in row.used {
        let r = w.consume(m, *n).unwrap();
        assert!(
            w.res(&r).credits.is_empty(),
            "{name}: setup usage took credits"
        );
    }
    if let Sub::Canceled(_) = row.sub {
        w.cancel().result.unwrap();
    }
    for b in &row.balances {
        let status = w.balance(&by_name[b.name]).status;
        let want = match b.fate {
            Fate::Live | Fate::UsedUp => BalanceStatus::Active,
            Fate::Revoked => BalanceStatus::Revoked,
            Fate::Expired => BalanceStatus::Expired,
        };
        assert_eq!(status, want, "{name}: status of {}", b.name);
    }

    let found = matcher::find(&w.state, &w.catalog, &model(row.model), row.amount, w.now);
    assert_eq!(
        (found.available.plan, found.available.credits),
        row.available,
        "{name}: available"
    );
    let before = w.state.clone();
    let plan_id = match row.sub {
        Sub::Active(p) => p,
        _ => "",
    };
    let counters_before: Vec<(u64, u64)> = match &row.want {
        Want::Allow { limits, .. } => limits.iter().map(|l| w.used(plan_id, l)).collect(),
        Want::Deny(_) => vec![],
    };
    let outcome = w.reserve(row.model, row.amount);
    match &row.want {
        Want::Deny(reasons) => {
            let got = found.result.expect_err(name);
            assert_eq!(names(&got), *reasons, "{name}: reasons from find");
            let (got, available) = outcome.expect_err(name);
            assert_eq!(got, *reasons, "{name}: reasons from step");
            assert_eq!(available, found.available, "{name}: available from step");
            assert_eq!(w.state, before, "{name}: a denial holds nothing");
        }
        Want::Allow {
            plan,
            limits,
            credits,
        } => {
            let got = found.result.expect(name);
            let id = outcome.unwrap_or_else(|d| panic!("{name}: denied {d:?}"));
            let r = w.res(&id);
            assert_eq!(r.plan, got.plan, "{name}: step holds what find found");
            assert_eq!(r.credits, got.credits, "{name}: step holds what find found");
            assert_eq!(r.plan_amount(), *plan, "{name}: plan part");
            let held_limits: Vec<&str> = r
                .plan
                .iter()
                .flat_map(|p| p.limits.iter().map(|l| l.limit_id.as_str()))
                .collect();
            assert_eq!(held_limits, *limits, "{name}: limits charged");
            let held: Vec<(&str, u64)> = r
                .credits
                .iter()
                .map(|c| {
                    let n = by_name.iter().find(|(_, id)| **id == c.balance_id).unwrap();
                    (*n.0, c.amount)
                })
                .collect();
            assert_eq!(held, *credits, "{name}: credits in matcher order");
            for (l, (used, reserved)) in limits.iter().zip(counters_before) {
                assert_eq!(
                    w.used(plan_id, l),
                    (used, reserved + plan),
                    "{name}: limit {l} is charged the whole plan part"
                );
            }
        }
    }
}

#[test]
fn the_plan_pays_first_and_every_covering_limit_is_charged_the_whole_plan_part() {
    let rows = [
        row(
            "plan before credits",
            Sub::Active("pro"),
            "image.flux",
            3,
            allow(3, &["images"], &[]),
        )
        .bals(vec![bal("a", "image.*", 5)])
        .avail(10, 5),
        row(
            "a model under two limits is charged to both",
            Sub::Active("pro"),
            "image.dall-e-3",
            3,
            allow(3, &["images", "dalle"], &[]),
        )
        .avail(4, 0),
        row(
            "the smallest room wins: the category limit",
            Sub::Active("pro"),
            "image.dall-e-3",
            2,
            allow(2, &["images", "dalle"], &[]),
        )
        .used(&[("image.flux", 8)])
        .avail(2, 0),
        row(
            "the smallest room wins: the model limit",
            Sub::Active("pro"),
            "image.dall-e-3",
            1,
            allow(1, &["images", "dalle"], &[]),
        )
        .used(&[("image.dall-e-3", 3)])
        .avail(1, 0),
        row(
            "a limit covers the model through any of its patterns",
            Sub::Active("multi"),
            "video.veo-3",
            2,
            allow(2, &["media"], &[]),
        )
        .avail(6, 0),
        row(
            "a limit with no room leaves it all to credits",
            Sub::Active("pro"),
            "image.flux",
            2,
            credits_only(&[("a", 2)]),
        )
        .used(&[("image.flux", 10)])
        .bals(vec![bal("a", "image.*", 3)])
        .avail(0, 3),
    ];
    rows.iter().for_each(check);
}

#[test]
fn the_plan_gives_what_it_can_and_credits_the_rest_so_a_reservation_splits() {
    let rows = [
        row(
            "split at the smallest room",
            Sub::Active("pro"),
            "image.dall-e-3",
            4,
            allow(1, &["images", "dalle"], &[("a", 3)]),
        )
        .used(&[("image.dall-e-3", 3)])
        .bals(vec![bal("a", "image.dall-e-3", 5)])
        .avail(1, 5),
        row(
            "split over plan and two balances, an exact fit",
            Sub::Active("pro"),
            "image.flux",
            5,
            allow(2, &["images"], &[("a", 1), ("b", 2)]),
        )
        .used(&[("image.flux", 8)])
        .bals(vec![bal("a", "image.*", 1), bal("b", "*", 2)])
        .avail(2, 3),
        row(
            "a canceled plan gives nothing but credits still pay",
            Sub::Canceled("pro"),
            "image.flux",
            2,
            credits_only(&[("a", 2)]),
        )
        .bals(vec![bal("a", "image.*", 2)])
        .avail(0, 2),
        row(
            "a plan without the model gives nothing but credits still pay",
            Sub::Active("text"),
            "image.flux",
            2,
            credits_only(&[("a", 2)]),
        )
        .bals(vec![bal("a", "image.*", 4)])
        .avail(0, 4),
    ];
    rows.iter().for_each(check);
}

#[test]
fn credits_go_most_specific_then_soonest_expiring_then_oldest_then_by_id() {
    let rows = [
        row(
            "model key, then category, then everything",
            Sub::None,
            "image.dall-e-3",
            5,
            credits_only(&[("key", 2), ("cat", 2), ("any", 1)]),
        )
        .bals(vec![
            bal("any", "*", 2),
            bal("cat", "image.*", 2),
            bal("key", "image.dall-e-3", 2),
        ])
        .avail(0, 6),
        row(
            "specificity before expiry",
            Sub::None,
            "image.dall-e-3",
            3,
            credits_only(&[("key", 2), ("cat", 1)]),
        )
        .bals(vec![
            bal("cat", "image.*", 2).expires(2 * DAY),
            bal("key", "image.dall-e-3", 2),
        ])
        .avail(0, 4),
        row(
            "soonest expiresAt first, never-expiring last",
            Sub::None,
            "image.flux",
            5,
            credits_only(&[("soon", 2), ("late", 2), ("never", 1)]),
        )
        .bals(vec![
            bal("never", "image.*", 2),
            bal("late", "image.*", 2).expires(10 * DAY),
            bal("soon", "image.*", 2).expires(2 * DAY),
        ])
        .avail(0, 6),
        row(
            "expiry before age",
            Sub::None,
            "image.flux",
            3,
            credits_only(&[("young", 2), ("old", 1)]),
        )
        .bals(vec![
            bal("old", "image.*", 2).created(0).expires(5 * DAY),
            bal("young", "image.*", 2).created(500).expires(3 * DAY),
        ])
        .avail(0, 4),
        row(
            "oldest createdAt first at equal expiry, whatever the ids",
            Sub::None,
            "image.flux",
            3,
            credits_only(&[("old", 2), ("young", 1)]),
        )
        .bals(vec![
            bal("young", "image.*", 2).created(500),
            bal("old", "image.*", 2).created(100),
        ])
        .avail(0, 4),
        row(
            "the id breaks a tie of specificity, expiry and createdAt",
            Sub::None,
            "image.flux",
            3,
            credits_only(&[("first", 2), ("second", 1)]),
        )
        .bals(vec![
            bal("first", "image.*", 2).expires(DAY),
            bal("second", "image.*", 2).expires(DAY),
        ])
        .avail(0, 4),
        row(
            "revoked and expired balances are skipped",
            Sub::None,
            "image.flux",
            2,
            credits_only(&[("live", 2)]),
        )
        .bals(vec![
            bal("rev", "image.*", 5).fate(Fate::Revoked),
            bal("exp", "image.flux", 5).fate(Fate::Expired),
            bal("live", "*", 2),
        ])
        .avail(0, 2),
        row(
            "a used-up balance is skipped",
            Sub::None,
            "image.flux",
            3,
            credits_only(&[("live", 3)]),
        )
        .bals(vec![
            bal("gone", "image.flux", 2).fate(Fate::UsedUp),
            bal("live", "image.*", 3),
        ])
        .avail(0, 3),
        row(
            "balances for other models never pay",
            Sub::None,
            "image.flux",
            1,
            credits_only(&[("any", 1)]),
        )
        .bals(vec![
            bal("video", "video.*", 5),
            bal("other", "image.gpt-image", 5),
            bal("any", "*", 1),
        ])
        .avail(0, 1),
    ];
    rows.iter().for_each(check);
}

#[test]
fn a_denial_holds_nothing_and_names_the_reasons_of_the_api() {
    use Fate::*;
    const NO_SUB: Want = Want::Deny(&["no_subscription", "credits_exhausted"]);
    const NOT_IN_PLAN: Want = Want::Deny(&["not_in_plan"]);
    const NOT_IN_PLAN_NO_CREDITS: Want = Want::Deny(&["not_in_plan", "credits_exhausted"]);
    const PLAN: Want = Want::Deny(&["plan_exhausted"]);
    const BOTH: Want = Want::Deny(&["plan_and_credits_exhausted"]);
    let rows = [
        row(
            "no subscription, no credits",
            Sub::None,
            "image.flux",
            1,
            NO_SUB,
        ),
        row(
            "no subscription, credits short",
            Sub::None,
            "image.flux",
            3,
            NO_SUB,
        )
        .bals(vec![bal("a", "image.*", 2)])
        .avail(0, 2),
        row(
            "no subscription, only credits for other models",
            Sub::None,
            "image.flux",
            1,
            NO_SUB,
        )
        .bals(vec![bal("a", "video.*", 2)]),
        row(
            "a canceled subscription is none",
            Sub::Canceled("pro"),
            "image.flux",
            1,
            NO_SUB,
        ),
        row(
            "a canceled subscription with short credits is none",
            Sub::Canceled("pro"),
            "image.flux",
            3,
            NO_SUB,
        )
        .bals(vec![bal("a", "image.*", 2)])
        .avail(0, 2),
        row(
            "not in plan, never a balance",
            Sub::Active("text"),
            "image.flux",
            1,
            NOT_IN_PLAN,
        ),
        row(
            "not in plan, only balances for other models",
            Sub::Active("text"),
            "image.flux",
            1,
            NOT_IN_PLAN,
        )
        .bals(vec![bal("a", "video.*", 3), bal("b", "image.dall-e-3", 3)]),
        row(
            "not in plan, a live balance too short",
            Sub::Active("text"),
            "image.flux",
            3,
            NOT_IN_PLAN_NO_CREDITS,
        )
        .bals(vec![bal("a", "image.*", 2)])
        .avail(0, 2),
        row(
            "not in plan, a used-up balance",
            Sub::Active("text"),
            "image.flux",
            1,
            NOT_IN_PLAN_NO_CREDITS,
        )
        .bals(vec![bal("a", "image.flux", 2).fate(UsedUp)]),
        row(
            "not in plan, an expired balance",
            Sub::Active("text"),
            "image.flux",
            1,
            NOT_IN_PLAN_NO_CREDITS,
        )
        .bals(vec![bal("a", "image.*", 2).fate(Expired)]),
        row(
            "not in plan, a revoked balance",
            Sub::Active("text"),
            "image.flux",
            1,
            NOT_IN_PLAN_NO_CREDITS,
        )
        .bals(vec![bal("a", "*", 2).fate(Revoked)]),
        row(
            "covering plan short, never a balance",
            Sub::Active("pro"),
            "image.flux",
            2,
            PLAN,
        )
        .used(&[("image.flux", 9)])
        .avail(1, 0),
        row(
            "covering plan short by its smallest room, never a balance",
            Sub::Active("pro"),
            "image.dall-e-3",
            3,
            PLAN,
        )
        .used(&[("image.flux", 8)])
        .avail(2, 0),
        row(
            "one full limit denies although another has room",
            Sub::Active("pro"),
            "image.dall-e-3",
            1,
            PLAN,
        )
        .used(&[("image.dall-e-3", 4)]),
        row(
            "covering plan short, only balances for other models",
            Sub::Active("pro"),
            "image.flux",
            2,
            PLAN,
        )
        .used(&[("image.flux", 9)])
        .bals(vec![bal("a", "image.gpt-image", 5), bal("b", "video.*", 5)])
        .avail(1, 0),
        row(
            "covering plan short, a live balance too short",
            Sub::Active("pro"),
            "image.dall-e-3",
            3,
            BOTH,
        )
        .used(&[("image.flux", 9)])
        .bals(vec![bal("a", "image.dall-e-3", 1)])
        .avail(1, 1),
        row(
            "plan and credits one unit short",
            Sub::Active("pro"),
            "image.flux",
            6,
            BOTH,
        )
        .used(&[("image.flux", 8)])
        .bals(vec![bal("a", "image.*", 1), bal("b", "*", 2)])
        .avail(2, 3),
        row(
            "covering plan short, a used-up balance",
            Sub::Active("pro"),
            "image.flux",
            2,
            BOTH,
        )
        .used(&[("image.flux", 9)])
        .bals(vec![bal("a", "*", 3).fate(UsedUp)])
        .avail(1, 0),
        row(
            "covering plan short, an expired balance",
            Sub::Active("pro"),
            "image.flux",
            2,
            BOTH,
        )
        .used(&[("image.flux", 9)])
        .bals(vec![bal("a", "image.*", 3).fate(Expired)])
        .avail(1, 0),
        row(
            "covering plan short, a revoked balance",
            Sub::Active("pro"),
            "image.flux",
            2,
            BOTH,
        )
        .used(&[("image.flux", 9)])
        .bals(vec![bal("a", "image.flux", 3).fate(Revoked)])
        .avail(1, 0),
    ];
    rows.iter().for_each(check);
}

#[test]
fn a_plan_deleted_from_the_catalog_covers_nothing() {
    let mut w = World::with(matcher_plans(), vec![]);
    w.subscribe("pro").result.unwrap();
    w.catalog.apply(&CatalogChange::PlanDeleted("pro".into()));
    assert_eq!(
        w.reserve("image.flux", 1).unwrap_err(),
        (vec!["not_in_plan"], Available::default())
    );
}

#[test]
fn a_balance_past_its_expiry_is_not_offered_even_before_the_expiry_is_recorded() {
    let mut w = World::with(vec![], vec![pack("p", &[("i", "image.*", 3)], None)]);
    let (_, ids) = w
        .grant_until("p", "r", Some(START.plus_ms(SECOND)))
        .unwrap();
    // No catch-up: the balance is still `active` in the state, but the clock reached its expiresAt.
    let now = START.plus_ms(SECOND);
    assert_eq!(w.balance(&ids[0]).status, BalanceStatus::Active);
    let found = matcher::find(&w.state, &w.catalog, &model("image.flux"), 1, now);
    assert_eq!(
        names(&found.result.unwrap_err()),
        ["no_subscription", "credits_exhausted"]
    );
    assert_eq!(found.available, Available::default());
    let found = matcher::find(&w.state, &w.catalog, &model("image.flux"), 1, Ts(now.0 - 1));
    assert!(
        found.result.is_ok(),
        "one millisecond before it is still spendable"
    );
}
