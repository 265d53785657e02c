//! Criterion bench of the pure engine: the matcher (`matcher::find`) and one `step` for a reserve
//! and for a commit, on a user with a Pro-like plan (`image.*` 40 a month) and six balances (a model
//! key, a category and `*`, each once without and once with an expiry).
//!
//! Run: `cargo bench --bench engine` (add `-- --quick` for a short run).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vevee::engine::catalog::{Catalog, CatalogChange, Limit, Pack, PackItem, Plan, Price};
use vevee::engine::event::GrantSource;
use vevee::engine::ids::{CountingIds, ModelKey, Pattern};
use vevee::engine::matcher;
use vevee::engine::time::Period;
use vevee::engine::{Command, Name, NoPast, Outcome, Ts, UserState, step};

/// 2028-01-31T10:00:00Z, the subscription's start; the bench runs an hour later.
const START: Ts = Ts(1_832_925_600_000);
const NOW: Ts = Ts(START.0 + 3_600_000);
const TTL_MS: i64 = 600_000;

fn pattern(text: &str) -> Pattern {
    Pattern::parse(text).expect("valid pattern")
}

fn model(text: &str) -> ModelKey {
    ModelKey::parse(text).expect("valid model key")
}

fn price(amount: u64) -> Price {
    Price {
        amount,
        currency: "usd".into(),
        interval: None,
    }
}

fn pro_plan() -> Plan {
    Plan {
        id: "pro".into(),
        name: "Pro".into(),
        price: price(2_000),
        limits: vec![Limit {
            id: "images".into(),
            name: "Images".into(),
            patterns: vec![pattern("image.*")],
            limit: 40,
            unit: "image".into(),
            period: Period::Month,
        }],
        created_at: START,
        updated_at: START,
    }
}

/// A pack of three items: one model key, one category, everything.
fn pack(id: &str, expires_in_days: Option<u32>) -> Pack {
    let item = |item: &str, p: &str| PackItem {
        id: item.into(),
        pattern: pattern(p),
        amount: 1_000,
        unit: "credit".into(),
        low_balance_threshold: None,
    };
    Pack {
        id: id.into(),
        name: id.into(),
        price: price(1_500),
        expires_in_days,
        stripe_price_id: None,
        archived: false,
        items: vec![
            item("dalle", "image.dall-e-3"),
            item("images", "image.*"),
            item("any", "*"),
        ],
        created_at: START,
        updated_at: START,
    }
}

fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    catalog.apply(&CatalogChange::PlanPut(pro_plan()));
    catalog.apply(&CatalogChange::PackPut(pack("credits", None)));
    catalog.apply(&CatalogChange::PackPut(pack("promo", Some(30))));
    catalog
}

fn reserve(model_key: &str, amount: u64, commit: bool) -> Command {
    Command::Reserve {
        model: model(model_key),
        amount,
        ttl_ms: TTL_MS,
        metadata: None,
        request_key: None,
        commit,
    }
}

fn run(state: &mut UserState, catalog: &Catalog, ids: &mut CountingIds, command: Command) {
    let done = step(state, &NoPast, catalog, command, START, ids);
    assert!(done.result.is_ok(), "setup command refused");
}

/// The Pro user with six balances; with `plan_used`, the month's 40 images are spent already.
fn pro_user(catalog: &Catalog, plan_used: bool) -> (UserState, CountingIds) {
    let mut state = UserState::default();
    let mut ids = CountingIds::default();
    let subscribe = Command::Subscribe {
        plan_id: "pro".into(),
    };
    run(&mut state, catalog, &mut ids, subscribe);
    for pack_id in ["credits", "promo"] {
        let grant = Command::Grant {
            pack_id: pack_id.into(),
            external_ref: format!("order-{pack_id}").into(),
            source: GrantSource::Purchase,
            notes: None,
            expires_at: None,
            payment_intent: None,
            expiring_notice_days: 3,
        };
        run(&mut state, catalog, &mut ids, grant);
    }
    if plan_used {
        run(
            &mut state,
            catalog,
            &mut ids,
            reserve("image.flux", 40, true),
        );
    }
    (state, ids)
}

/// The user with one pending reservation of one image, and its id.
fn with_pending(catalog: &Catalog) -> (UserState, CountingIds, Name) {
    let (mut state, mut ids) = pro_user(catalog, false);
    let done = step(
        &mut state,
        &NoPast,
        catalog,
        reserve("image.dall-e-3", 1, false),
        START,
        &mut ids,
    );
    let Ok(Outcome::Reservation(id)) = done.result else {
        panic!("setup reserve refused");
    };
    (state, ids, id)
}

fn bench_matcher(c: &mut Criterion) {
    let catalog = catalog();
    let (fresh, _) = pro_user(&catalog, false);
    let (spent, _) = pro_user(&catalog, true);
    let nobody = UserState::default();
    let dalle = model("image.dall-e-3");
    let veo = model("video.veo-3");

    let mut group = c.benchmark_group("matcher::find");
    let cases: [(&str, &UserState, &ModelKey, u64); 5] = [
        ("plan covers it", &fresh, &dalle, 1),
        ("plan spent, model-key credits", &spent, &dalle, 1),
        ("not in plan, `*` credits", &fresh, &veo, 1),
        ("plan + five balances", &fresh, &dalle, 4_500),
        ("denied, no subscription", &nobody, &dalle, 1),
    ];
    for (name, state, model, amount) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                matcher::find(
                    black_box(state),
                    black_box(&catalog),
                    black_box(model),
                    black_box(amount),
                    black_box(NOW),
                )
            })
        });
    }
    group.finish();
}

fn bench_step(c: &mut Criterion) {
    let catalog = catalog();
    let (fresh, ids) = pro_user(&catalog, false);
    let (spent, spent_ids) = pro_user(&catalog, true);
    let (pending, pending_ids, reservation_id) = with_pending(&catalog);

    let mut group = c.benchmark_group("step");
    let reserves = [
        (
            "reserve, plan",
            &fresh,
            ids.0,
            reserve("image.dall-e-3", 1, false),
        ),
        (
            "reserve, credits",
            &spent,
            spent_ids.0,
            reserve("image.dall-e-3", 1, false),
        ),
        (
            "reserve+commit (consume)",
            &fresh,
            ids.0,
            reserve("image.dall-e-3", 1, true),
        ),
    ];
    for (name, state, next_id, command) in reserves {
        group.bench_function(name, |b| {
            b.iter_batched(
                || (state.clone(), CountingIds(next_id), command.clone()),
                |(mut state, mut ids, command)| {
                    let done = step(&mut state, &NoPast, &catalog, command, NOW, &mut ids);
                    (state, done)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("commit", |b| {
        b.iter_batched(
            || {
                let command = Command::Commit {
                    reservation_id: reservation_id.clone(),
                    amount: None,
                    response: None,
                };
                (pending.clone(), CountingIds(pending_ids.0), command)
            },
            |(mut state, mut ids, command)| {
                let done = step(&mut state, &NoPast, &catalog, command, NOW, &mut ids);
                (state, done)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_matcher, bench_step);
criterion_main!(benches);
