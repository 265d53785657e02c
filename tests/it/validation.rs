//! Bad input for every endpoint: each answer is a clear error in the API.md shape, and nothing
//! the user can see changes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const U: &str = "u_v";

/// Data set up before the bad requests, and the checker that compares state after each of them.
struct V<'a> {
    app: &'a TestApp,
    pending: String,
    balance: String,
    before: Value,
    fails: Vec<String>,
    cases: usize,
}

impl<'a> V<'a> {
    async fn new(app: &'a TestApp) -> V<'a> {
        app.subscribe(SK_TEST, U, "pro").await;
        let balance = app.grant_one(SK_TEST, U, "cpk_gemini_topup", "cs_v").await;
        app.consume_ok(SK_TEST, U, GEMINI, 1).await;
        let body = json!({"userId": U, "model": DALLE, "amount": 2, "ttlSeconds": 86400});
        let r = app.reserve_with(SK_TEST, body).await;
        assert_eq!(r["allowed"], true, "{r}");
        let pending = r["reservationId"].as_str().unwrap().to_string();
        app.grant_one(SK_LIVE, U, "cpk_gemini_topup", "cs_v_live")
            .await;
        let mut v = V {
            app,
            pending,
            balance,
            before: Value::Null,
            fails: vec![],
            cases: 0,
        };
        v.before = v.state().await;
        v
    }

    /// Everything a user could look at.
    async fn state(&self) -> Value {
        let a = self.app;
        let mut parts = Vec::new();
        for (key, path) in [
            (SK_TEST, format!("/v1/users/{U}/usage")),
            (SK_TEST, format!("/v1/users/{U}/ledger?limit=500")),
            (SK_TEST, format!("/v1/users/{U}/subscription")),
            (SK_TEST, format!("/v1/reservations/{}", self.pending)),
            (SK_TEST, format!("/v1/credits/balances/{}", self.balance)),
            (SK_LIVE, format!("/v1/users/{U}/usage")),
            (SK_LIVE, format!("/v1/users/{U}/ledger?limit=500")),
            (SK_TEST, "/v1/plans".to_string()),
            (SK_TEST, "/v1/credit-packs?includeArchived=true".to_string()),
        ] {
            let r = a.get(&path, key).await;
            parts.push(json!({"path": path, "status": r.0.as_u16(), "body": r.1}));
        }
        Value::Array(parts)
    }

    async fn expect(
        &mut self,
        what: &str,
        r: Resp,
        status: u16,
        ty: &str,
        code: Option<&str>,
        param: Param,
    ) {
        self.cases += 1;
        if let Some(m) = error_mismatch(&r, status, ty, code, param) {
            self.fails.push(format!("{what}: {m}"));
        }
        let now = self.state().await;
        if now != self.before {
            self.fails.push(format!(
                "{what}: state changed:\n before {}\n after  {now}",
                self.before
            ));
            self.before = now;
        }
    }

    async fn invalid(&mut self, what: &str, r: Resp, param: Param) {
        self.expect(what, r, 400, "invalid_request", None, param)
            .await
    }

    async fn unknown_field(&mut self, what: &str, r: Resp, field: &'static str) {
        self.expect(
            what,
            r,
            400,
            "invalid_request",
            Some("unknown_parameter"),
            Param::Is(field),
        )
        .await
    }

    async fn not_found(&mut self, what: &str, r: Resp, code: Option<&str>) {
        self.expect(what, r, 404, "not_found", code, Param::Any)
            .await
    }

    #[track_caller]
    fn finish(self) {
        assert!(
            self.fails.is_empty(),
            "{} of {} bad requests were not answered as API.md says:\n- {}",
            self.fails.len(),
            self.cases,
            self.fails.join("\n- ")
        );
    }
}

fn with(base: &Value, field: &str, v: Value) -> Value {
    let mut b = base.clone();
    b[field] = v;
    b
}

fn without(base: &Value, field: &str) -> Value {
    let mut b = base.clone();
    b.as_object_mut().unwrap().remove(field);
    b
}

/// Raw JSON text with `field` set to the raw `value` text (so that numbers serde_json cannot
/// represent, like 2^64, can be sent).
fn raw_with(base: &Value, field: &str, value: &str) -> String {
    let marker = "\"__RAW__\"";
    with(base, field, json!("__RAW__"))
        .to_string()
        .replace(marker, value)
}

const BAD_AMOUNTS: &[&str] = &[
    "\"1\"",
    "null",
    "true",
    "[1]",
    "{\"n\": 1}",
    "0",
    "-1",
    "1.5",
    "-0.5",
    "9007199254740992",
    "18446744073709551616",
    "1e20",
];

fn bad_model_keys() -> Vec<Value> {
    let long = format!("image.{}", "a".repeat(123)); // 129 characters
    vec![
        json!("dall-e-3"),
        json!("Image.dall-e-3"),
        json!("image.DALL-E-3"),
        json!("image."),
        json!(".dall-e-3"),
        json!("image"),
        json!("image.*"),
        json!("*"),
        json!("image..x"),
        json!("-image.x"),
        json!("image.dall e"),
        json!(""),
        json!(long),
        json!(5),
        json!(null),
    ]
}

fn bad_user_ids() -> Vec<Value> {
    vec![
        json!(""),
        json!("a b"),
        json!("x".repeat(129)),
        json!("ü"),
        json!("a/b"),
        json!("a#b"),
        json!(5),
        json!(null),
    ]
}

#[tokio::test]
async fn bad_reserve_check_and_consume_requests_name_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let mut v = V::new(&app).await;
    for path in ["/v1/reservations", "/v1/check", "/v1/consume"] {
        let base = json!({"userId": U, "model": GEMINI, "amount": 1});
        for a in BAD_AMOUNTS {
            let r = app
                .post_raw(path, SK_TEST, raw_with(&base, "amount", a))
                .await;
            v.invalid(&format!("POST {path} amount {a}"), r, Param::Is("amount"))
                .await;
        }
        let r = app.post(path, SK_TEST, without(&base, "amount")).await;
        v.invalid(
            &format!("POST {path} without amount"),
            r,
            Param::Is("amount"),
        )
        .await;
        for m in bad_model_keys() {
            let r = app
                .post(path, SK_TEST, with(&base, "model", m.clone()))
                .await;
            v.invalid(&format!("POST {path} model {m}"), r, Param::Is("model"))
                .await;
        }
        let r = app.post(path, SK_TEST, without(&base, "model")).await;
        v.invalid(&format!("POST {path} without model"), r, Param::Is("model"))
            .await;
        for id in bad_user_ids() {
            let r = app
                .post(path, SK_TEST, with(&base, "userId", id.clone()))
                .await;
            v.invalid(&format!("POST {path} userId {id}"), r, Param::Is("userId"))
                .await;
        }
        let r = app.post(path, SK_TEST, without(&base, "userId")).await;
        v.invalid(
            &format!("POST {path} without userId"),
            r,
            Param::Is("userId"),
        )
        .await;
        let r = app.post(path, SK_TEST, with(&base, "foo", json!(1))).await;
        v.unknown_field(&format!("POST {path} foo"), r, "foo").await;
        let r = app
            .post(path, SK_TEST, with(&base, "user_id", json!(U)))
            .await;
        v.unknown_field(&format!("POST {path} user_id"), r, "user_id")
            .await;
    }
    let base = json!({"userId": U, "model": GEMINI, "amount": 1});
    for t in ["0", "-1", "86401", "1.5", "\"60\"", "true"] {
        let r = app
            .post_raw(
                "/v1/reservations",
                SK_TEST,
                raw_with(&base, "ttlSeconds", t),
            )
            .await;
        v.invalid(
            &format!("reserve ttlSeconds {t}"),
            r,
            Param::Is("ttlSeconds"),
        )
        .await;
    }
    // `check` takes {"userId", "model", "amount"} only.
    for f in ["ttlSeconds", "metadata"] {
        let r = app
            .post("/v1/check", SK_TEST, with(&base, f, json!(60)))
            .await;
        v.unknown_field(&format!("check {f}"), r, f).await;
    }
    let r = app
        .post("/v1/consume", SK_TEST, with(&base, "ttlSeconds", json!(60)))
        .await;
    v.unknown_field("consume ttlSeconds", r, "ttlSeconds").await;

    // The edges that are valid: 2^53 − 1, a 128-character model key and user id.
    let edge = [
        json!({"userId": U, "model": GEMINI, "amount": MAX_QTY}),
        json!({"userId": U, "model": format!("image.{}", "a".repeat(122)), "amount": 1}),
        json!({"userId": "x".repeat(128), "model": GEMINI, "amount": 1}),
        json!({"userId": "a.B:c@d-e_9", "model": "text.gpt-4.1", "amount": 1}),
    ];
    for body in edge {
        for path in ["/v1/check", "/v1/reservations", "/v1/consume"] {
            let r = app.post(path, SK_TEST, body.clone()).await;
            // Valid input is answered, allowed or denied by the user's quota, never refused.
            if r.0.as_u16() != 200 || r.1.get("allowed").and_then(|a| a.as_bool()).is_none() {
                v.fails.push(format!(
                    "POST {path} {body}: want 200 with allowed true or false, got {} {}",
                    r.0, r.1
                ));
            }
        }
    }
    v.finish();
}

#[tokio::test]
async fn bad_commit_release_and_reservation_lookups_change_nothing() {
    let app = spawn_app().await;
    let mut v = V::new(&app).await;
    let commit = format!("/v1/reservations/{}/commit", v.pending);
    let release = format!("/v1/reservations/{}/release", v.pending);
    // (A null amount is left out: "a field with no value is present as null" may mean "absent".)
    for a in BAD_AMOUNTS.iter().filter(|a| **a != "null") {
        let r = app
            .post_raw(&commit, SK_TEST, format!("{{\"amount\": {a}}}"))
            .await;
        v.invalid(&format!("commit amount {a}"), r, Param::Is("amount"))
            .await;
    }
    let r = app.post(&commit, SK_TEST, json!({"amount": 3})).await;
    v.expect(
        "commit above reserved",
        r,
        400,
        "invalid_request",
        Some("invalid_amount"),
        Param::Is("amount"),
    )
    .await;
    let r = app
        .post(&commit, SK_TEST, json!({"amount": 1, "foo": true}))
        .await;
    v.unknown_field("commit foo", r, "foo").await;
    let r = app
        .post(&release, SK_TEST, json!({"errorCode": "x", "foo": true}))
        .await;
    v.unknown_field("release foo", r, "foo").await;
    let r = app.post(&release, SK_TEST, json!({"errorCode": 5})).await;
    v.invalid("release errorCode 5", r, Param::Is("errorCode"))
        .await;
    let r = app.post_raw(&commit, SK_TEST, "{\"amount\": ").await;
    v.expect(
        "commit malformed",
        r,
        400,
        "invalid_request",
        Some("invalid_json"),
        Param::Any,
    )
    .await;
    let r = app.post_raw(&release, SK_TEST, "nope").await;
    v.expect(
        "release malformed",
        r,
        400,
        "invalid_request",
        Some("invalid_json"),
        Param::Any,
    )
    .await;

    for p in [
        "/v1/reservations/res_doesnotexist/commit",
        "/v1/reservations/res_doesnotexist/release",
    ] {
        let r = app.post(p, SK_TEST, json!({})).await;
        v.not_found(&format!("POST {p}"), r, None).await;
    }
    let r = app.get("/v1/reservations/res_doesnotexist", SK_TEST).await;
    v.not_found("GET unknown reservation", r, None).await;
    // Another mode's reservation is not there.
    let r = app.post(&commit, SK_LIVE, json!({})).await;
    v.not_found("commit with the live key", r, None).await;
    let r = app.post(&release, SK_LIVE, json!({})).await;
    v.not_found("release with the live key", r, None).await;
    v.finish();
}

#[tokio::test]
async fn bad_grants_and_revokes_change_nothing() {
    let app = spawn_app().await;
    let mut v = V::new(&app).await;
    let base = json!({"userId": U, "packId": "cpk_gemini_topup", "externalRef": "cs_v_new",
                      "source": "purchase"});
    let g = "/v1/credits/grants";
    for id in bad_user_ids() {
        let r = app
            .post(g, SK_TEST, with(&base, "userId", id.clone()))
            .await;
        v.invalid(&format!("grant userId {id}"), r, Param::Is("userId"))
            .await;
    }
    for f in ["userId", "packId", "externalRef", "source"] {
        let r = app.post(g, SK_TEST, without(&base, f)).await;
        v.invalid(&format!("grant without {f}"), r, Param::Is(f))
            .await;
    }
    for (f, x) in [
        ("packId", json!(5)),
        ("externalRef", json!(5)),
        ("externalRef", json!(null)),
        ("source", json!("gift")),
        ("source", json!(5)),
        ("source", json!("Purchase")),
        ("notes", json!(5)),
        ("expiresAt", json!("tomorrow")),
        ("expiresAt", json!(1900000000)),
        ("expiresAt", json!("2020-01-01T00:00:00Z")),
    ] {
        let r = app.post(g, SK_TEST, with(&base, f, x.clone())).await;
        v.invalid(&format!("grant {f} {x}"), r, Param::Is(f)).await;
    }
    // "must be in the future": the test clock's now is not.
    let now = app.clock_now().await;
    let r = app
        .post(g, SK_TEST, with(&base, "expiresAt", json!(now.to_string())))
        .await;
    v.invalid("grant expiresAt = now", r, Param::Is("expiresAt"))
        .await;
    let r = app
        .post(g, SK_TEST, with(&base, "packId", json!("cpk_nope")))
        .await;
    v.not_found("grant of an unknown pack", r, Some("pack_not_found"))
        .await;
    let r = app.post(g, SK_TEST, with(&base, "foo", json!("bar"))).await;
    v.unknown_field("grant foo", r, "foo").await;
    let r = app
        .post(g, SK_TEST, with(&base, "amount", json!(500)))
        .await;
    v.unknown_field("grant amount", r, "amount").await;
    let r = app.post_raw(g, SK_TEST, "{\"userId\": \"u_v\",").await;
    v.expect(
        "grant malformed",
        r,
        400,
        "invalid_request",
        Some("invalid_json"),
        Param::Any,
    )
    .await;

    let revoke = format!("/v1/credits/balances/{}/revoke", v.balance);
    let r = app.post(&revoke, SK_TEST, json!({"reason": 5})).await;
    v.invalid("revoke reason 5", r, Param::Is("reason")).await;
    // API.md writes the body as `{"reason"}` with no `?`, unlike the optional fields elsewhere.
    let r = app.post(&revoke, SK_TEST, json!({})).await;
    v.invalid("revoke without reason", r, Param::Is("reason"))
        .await;
    let r = app
        .post(&revoke, SK_TEST, json!({"reason": "x", "amount": 5}))
        .await;
    v.unknown_field("revoke amount", r, "amount").await;
    let r = app.post(&revoke, SK_LIVE, json!({"reason": "x"})).await;
    v.not_found("revoke a test balance with the live key", r, None)
        .await;
    let r = app
        .post(
            "/v1/credits/balances/bal_nope/revoke",
            SK_TEST,
            json!({"reason": "x"}),
        )
        .await;
    v.not_found("revoke unknown balance", r, None).await;
    let r = app.get("/v1/credits/balances/bal_nope", SK_TEST).await;
    v.not_found("GET unknown balance", r, None).await;
    v.finish();
}

#[tokio::test]
async fn bad_subscription_requests_change_nothing() {
    let app = spawn_app().await;
    let mut v = V::new(&app).await;
    let p = format!("/v1/users/{U}/subscription");
    let r = app.put(&p, SK_TEST, json!({})).await;
    v.invalid("PUT subscription {}", r, Param::Is("planId"))
        .await;
    for x in [json!(5), json!(null), json!(["free"])] {
        let r = app.put(&p, SK_TEST, json!({ "planId": x })).await;
        v.invalid(
            &format!("PUT subscription planId {x}"),
            r,
            Param::Is("planId"),
        )
        .await;
    }
    let r = app.put(&p, SK_TEST, json!({"planId": "nope"})).await;
    v.not_found(
        "PUT subscription to an unknown plan",
        r,
        Some("plan_not_found"),
    )
    .await;
    let r = app
        .put(&p, SK_TEST, json!({"planId": "free", "status": "active"}))
        .await;
    v.unknown_field("PUT subscription status", r, "status")
        .await;
    let r = app
        .send(
            Method::PUT,
            &p,
            Some(SK_TEST),
            Some(b"{planId: free}".to_vec()),
            &[],
        )
        .await;
    v.expect(
        "PUT subscription malformed",
        r,
        400,
        "invalid_request",
        Some("invalid_json"),
        Param::Any,
    )
    .await;
    // A user id outside ^[A-Za-z0-9_.:@-]{1,128}$ in the path.
    for bad in ["a%20b", "%C3%BC", &"x".repeat(129)] {
        let path = format!("/v1/users/{bad}/subscription");
        let r = app.put(&path, SK_TEST, json!({"planId": "free"})).await;
        v.invalid(&format!("PUT {path}"), r, Param::Is("userId"))
            .await;
        let path = format!("/v1/users/{bad}/usage");
        let r = app.get(&path, SK_TEST).await;
        v.invalid(&format!("GET {path}"), r, Param::Is("userId"))
            .await;
    }
    let r = app.get("/v1/users/u_never/subscription", SK_TEST).await;
    v.not_found(
        "GET subscription of a user who never had one",
        r,
        Some("no_subscription"),
    )
    .await;
    // Plan in use (in test mode) cannot be deleted, also with the live key.
    for key in [SK_TEST, SK_LIVE] {
        let r = app.delete("/v1/plans/pro", key).await;
        v.expect(
            "DELETE a plan in use",
            r,
            409,
            "conflict",
            Some("plan_in_use"),
            Param::Any,
        )
        .await;
    }
    v.finish();
}

fn plan_body() -> Value {
    json!({"id": "p_new", "name": "New",
           "price": {"amount": 500, "currency": "usd", "interval": "month"},
           "limits": [{"id": "images", "name": "Images", "match": ["image.*"], "limit": 10,
                       "unit": "count", "period": "month"}]})
}

fn limit_with(field: &str, x: Value) -> Value {
    let mut b = plan_body();
    b["limits"][0][field] = x;
    b
}

#[tokio::test]
async fn bad_plan_and_pack_definitions_are_rejected_and_change_nothing() {
    let app = spawn_app().await;
    let mut v = V::new(&app).await;
    let mut cases: Vec<(String, Value, Param, Option<&str>)> = Vec::new();
    for x in [json!(-1), json!(1.5), json!("500"), json!(null)] {
        let mut b = plan_body();
        b["price"]["amount"] = x.clone();
        cases.push((
            format!("price.amount {x}"),
            b,
            Param::Mentions("amount"),
            None,
        ));
    }
    for x in [json!("week"), json!("monthly"), json!(5)] {
        let mut b = plan_body();
        b["price"]["interval"] = x.clone();
        cases.push((
            format!("interval {x}"),
            b,
            Param::Mentions("interval"),
            None,
        ));
    }
    // 0 is a legal limit (a "0-quota free plan", API.md).
    for x in [
        json!(-1),
        json!(1.5),
        json!(9007199254740992u64),
        json!("10"),
    ] {
        cases.push((
            format!("limit {x}"),
            limit_with("limit", x),
            Param::Mentions("limit"),
            None,
        ));
    }
    for x in [json!("fortnight"), json!("Month"), json!(null)] {
        cases.push((
            format!("period {x}"),
            limit_with("period", x),
            Param::Mentions("period"),
            None,
        ));
    }
    for x in [
        json!("image.*"),
        json!(["image"]),
        json!(["Image.*"]),
        json!(["image.**"]),
    ] {
        cases.push((
            format!("match {x}"),
            limit_with("match", x),
            Param::Mentions("match"),
            None,
        ));
    }
    let mut dup = plan_body();
    let l = dup["limits"][0].clone();
    dup["limits"] = json!([l.clone(), l]);
    cases.push((
        "duplicate limit ids".into(),
        dup,
        Param::Mentions("limits"),
        None,
    ));
    let mut many = plan_body();
    many["limits"] = Value::Array(
        (0..101)
            .map(|i| {
                json!({"id": format!("l{i}"), "name": "L", "match": ["image.*"], "limit": 1,
                       "unit": "count", "period": "month"})
            })
            .collect(),
    );
    cases.push(("101 limits".into(), many, Param::Mentions("limits"), None));
    cases.push((
        "limits not a list".into(),
        with(&plan_body(), "limits", json!({})),
        Param::Mentions("limits"),
        None,
    ));
    let mut nested = plan_body();
    nested["limits"][0]["foo"] = json!(1);
    cases.push((
        "limit foo".into(),
        nested,
        Param::Mentions("foo"),
        Some("unknown_parameter"),
    ));
    cases.push((
        "plan foo".into(),
        with(&plan_body(), "foo", json!(1)),
        Param::Is("foo"),
        Some("unknown_parameter"),
    ));
    for (what, body, param, code) in cases {
        let r = app.post("/v1/plans", SK_TEST, body.clone()).await;
        v.expect(
            &format!("POST /v1/plans {what}"),
            r,
            400,
            "invalid_request",
            code,
            param,
        )
        .await;
        let r = app.put("/v1/plans/p_new", SK_TEST, body).await;
        v.expect(
            &format!("PUT /v1/plans/p_new {what}"),
            r,
            400,
            "invalid_request",
            code,
            param,
        )
        .await;
    }
    let r = app
        .post("/v1/plans", SK_TEST, with(&plan_body(), "id", json!("pro")))
        .await;
    v.expect(
        "POST an existing plan id",
        r,
        409,
        "conflict",
        Some("plan_exists"),
        Param::Any,
    )
    .await;
    let r = app.get("/v1/plans/nope", SK_TEST).await;
    v.not_found("GET unknown plan", r, None).await;
    let r = app.delete("/v1/plans/nope", SK_TEST).await;
    v.not_found("DELETE unknown plan", r, None).await;

    // Packs.
    let pack = || pack_body("cpk_new", "image.*", 5, Some(30));
    let mut cases: Vec<(String, Value, Param, Option<&str>)> = Vec::new();
    cases.push((
        "no items".into(),
        with(&pack(), "items", json!([])),
        Param::Mentions("items"),
        None,
    ));
    let mut many = pack();
    many["items"] = Value::Array(
        (0..101)
            .map(|i| json!({"id": format!("i{i}"), "match": "*", "amount": 1, "unit": "count"}))
            .collect(),
    );
    cases.push(("101 items".into(), many, Param::Mentions("items"), None));
    // 0 is a legal limit (a "0-quota free plan", API.md).
    for x in [
        json!(-1),
        json!(1.5),
        json!(9007199254740992u64),
        json!("5"),
    ] {
        let mut b = pack();
        b["items"][0]["amount"] = x.clone();
        cases.push((
            format!("item amount {x}"),
            b,
            Param::Mentions("amount"),
            None,
        ));
    }
    for x in [json!("image"), json!(["image.*"]), json!("IMAGE.*")] {
        let mut b = pack();
        b["items"][0]["match"] = x.clone();
        cases.push((format!("item match {x}"), b, Param::Mentions("match"), None));
    }
    let mut dup = pack();
    let it = dup["items"][0].clone();
    dup["items"] = json!([it.clone(), it]);
    cases.push((
        "duplicate item ids".into(),
        dup,
        Param::Mentions("items"),
        None,
    ));
    for x in [json!(-1), json!(1.5), json!("30")] {
        cases.push((
            format!("expiresInDays {x}"),
            with(&pack(), "expiresInDays", x),
            Param::Is("expiresInDays"),
            None,
        ));
    }
    // The pack() item grants 5.
    for x in [json!(0), json!(6), json!(-1), json!(2.5), json!("3")] {
        let mut b = pack();
        b["items"][0]["lowBalanceThreshold"] = x.clone();
        cases.push((
            format!("item lowBalanceThreshold {x}"),
            b,
            Param::Mentions("lowBalanceThreshold"),
            None,
        ));
    }
    let mut neg = pack();
    neg["price"]["amount"] = json!(-400);
    cases.push((
        "price.amount -400".into(),
        neg,
        Param::Mentions("amount"),
        None,
    ));
    let mut nested = pack();
    nested["items"][0]["bar"] = json!(1);
    cases.push((
        "item bar".into(),
        nested,
        Param::Mentions("bar"),
        Some("unknown_parameter"),
    ));
    cases.push((
        "pack foo".into(),
        with(&pack(), "foo", json!(1)),
        Param::Is("foo"),
        Some("unknown_parameter"),
    ));
    for (what, body, param, code) in cases {
        let r = app.post("/v1/credit-packs", SK_TEST, body.clone()).await;
        v.expect(
            &format!("POST /v1/credit-packs {what}"),
            r,
            400,
            "invalid_request",
            code,
            param,
        )
        .await;
        let r = app.put("/v1/credit-packs/cpk_new", SK_TEST, body).await;
        v.expect(
            &format!("PUT /v1/credit-packs/cpk_new {what}"),
            r,
            400,
            "invalid_request",
            code,
            param,
        )
        .await;
    }
    let body = with(&pack(), "id", json!("cpk_gemini_topup"));
    let r = app.post("/v1/credit-packs", SK_TEST, body).await;
    v.expect(
        "POST an existing pack id",
        r,
        409,
        "conflict",
        Some("pack_exists"),
        Param::Any,
    )
    .await;
    let r = app.get("/v1/credit-packs/cpk_nope", SK_TEST).await;
    v.not_found("GET unknown pack", r, None).await;
    let r = app
        .post("/v1/credit-packs/cpk_nope/archive", SK_TEST, json!({}))
        .await;
    v.not_found("archive unknown pack", r, None).await;
    let r = app
        .post(
            "/v1/credit-packs/cpk_gemini_topup/archive",
            SK_TEST,
            json!({"foo": 1}),
        )
        .await;
    v.unknown_field("archive foo", r, "foo").await;
    let r = app.post_raw("/v1/plans", SK_TEST, "{\"id\": \"x\"").await;
    v.expect(
        "POST /v1/plans malformed",
        r,
        400,
        "invalid_request",
        Some("invalid_json"),
        Param::Any,
    )
    .await;
    let r = app.post_raw("/v1/credit-packs", SK_TEST, "[}").await;
    v.expect(
        "POST /v1/credit-packs malformed",
        r,
        400,
        "invalid_request",
        Some("invalid_json"),
        Param::Any,
    )
    .await;
    v.finish();
}

#[tokio::test]
async fn bad_ledger_usage_and_test_clock_queries_are_400() {
    let app = spawn_app().await;
    let mut v = V::new(&app).await;
    let l = format!("/v1/users/{U}/ledger");
    for q in [
        "limit=501",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=100000000000000000000",
    ] {
        let r = app.get(&format!("{l}?{q}"), SK_TEST).await;
        v.invalid(&format!("ledger ?{q}"), r, Param::Is("limit"))
            .await;
    }
    for q in [
        "startingAfter=le_nope",
        "startingAfter=",
        "startingAfter=bal_x",
    ] {
        let r = app.get(&format!("{l}?{q}"), SK_TEST).await;
        v.invalid(&format!("ledger ?{q}"), r, Param::Is("startingAfter"))
            .await;
    }
    // A match filter is a match pattern: a model key, `category.*` or `*`.
    for q in ["match=image", "match=Image.*", "match=image.**"] {
        let r = app.get(&format!("/v1/users/{U}/usage?{q}"), SK_TEST).await;
        v.invalid(&format!("usage ?{q}"), r, Param::Is("match"))
            .await;
    }
    let adv = "/v1/test/clock/advance";
    for x in ["0", "-1", "1.5", "\"60\"", "null", "9007199254740992"] {
        let r = app
            .post_raw(adv, SK_TEST, format!("{{\"seconds\": {x}}}"))
            .await;
        v.invalid(&format!("clock advance {x}"), r, Param::Is("seconds"))
            .await;
    }
    let r = app.post(adv, SK_TEST, json!({})).await;
    v.invalid("clock advance {}", r, Param::Is("seconds")).await;
    let r = app
        .post(adv, SK_TEST, json!({"seconds": 5, "days": 1}))
        .await;
    v.unknown_field("clock advance days", r, "days").await;
    let r = app.post_raw(adv, SK_TEST, "{\"seconds\": 5").await;
    v.expect(
        "clock advance malformed",
        r,
        400,
        "invalid_request",
        Some("invalid_json"),
        Param::Any,
    )
    .await;
    for key in [SK_LIVE, PK_TEST, PK_LIVE] {
        let r = app.post(adv, key, json!({"seconds": 5})).await;
        v.expect(
            &format!("clock advance with {key}"),
            r,
            403,
            "permission",
            None,
            Param::Any,
        )
        .await;
        let r = app.get("/v1/test/clock", key).await;
        v.expect(
            &format!("clock with {key}"),
            r,
            403,
            "permission",
            None,
            Param::Any,
        )
        .await;
    }
    v.finish();
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_and_publishable_keys_may_only_read_the_catalog() {
    let app = spawn_app().await;
    let mut v = V::new(&app).await;
    let reserve = json!({"userId": U, "model": GEMINI, "amount": 1})
        .to_string()
        .into_bytes();
    let bad_auth: Vec<Option<String>> = vec![
        None,
        Some("Bearer sk_test_wrong".into()),
        Some(format!("Bearer {SK_TEST}x")),
        Some("Bearer ".into()),
        Some(format!("Basic {SK_TEST}")),
        Some(SK_TEST.into()),
    ];
    for auth in &bad_auth {
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = app
            .send(
                Method::POST,
                "/v1/reservations",
                None,
                Some(reserve.clone()),
                &h,
            )
            .await;
        v.expect(
            &format!("reserve with auth {auth:?}"),
            r,
            401,
            "authentication",
            None,
            Param::Any,
        )
        .await;
        let r = app.send(Method::GET, "/v1/plans", None, None, &h).await;
        v.expect(
            &format!("GET /v1/plans with auth {auth:?}"),
            r,
            401,
            "authentication",
            None,
            Param::Any,
        )
        .await;
    }

    for key in [PK_TEST, PK_LIVE] {
        for p in [
            "/v1/plans",
            "/v1/plans/pro",
            "/v1/credit-packs",
            "/v1/credit-packs/cpk_gemini_topup",
        ] {
            let r = app.get(p, key).await;
            if r.0.as_u16() != 200 {
                v.fails
                    .push(format!("GET {p} with {key}: want 200, got {} {}", r.0, r.1));
            }
        }
        let writes: Vec<(Method, String, Option<Value>)> = vec![
            (
                Method::POST,
                "/v1/reservations".into(),
                Some(json!({"userId": U, "model": GEMINI, "amount": 1})),
            ),
            (
                Method::POST,
                "/v1/consume".into(),
                Some(json!({"userId": U, "model": GEMINI, "amount": 1})),
            ),
            (
                Method::POST,
                "/v1/check".into(),
                Some(json!({"userId": U, "model": GEMINI, "amount": 1})),
            ),
            (
                Method::POST,
                format!("/v1/reservations/{}/commit", v.pending),
                Some(json!({})),
            ),
            (
                Method::POST,
                format!("/v1/reservations/{}/release", v.pending),
                Some(json!({})),
            ),
            (Method::GET, format!("/v1/reservations/{}", v.pending), None),
            (
                Method::POST,
                "/v1/credits/grants".into(),
                Some(
                    json!({"userId": U, "packId": "cpk_gemini_topup", "externalRef": "pk",
                            "source": "purchase"}),
                ),
            ),
            (
                Method::GET,
                format!("/v1/credits/balances/{}", v.balance),
                None,
            ),
            (
                Method::POST,
                format!("/v1/credits/balances/{}/revoke", v.balance),
                Some(json!({"reason": "x"})),
            ),
            (
                Method::PUT,
                format!("/v1/users/{U}/subscription"),
                Some(json!({"planId": "free"})),
            ),
            (Method::GET, format!("/v1/users/{U}/subscription"), None),
            (Method::DELETE, format!("/v1/users/{U}/subscription"), None),
            (Method::GET, format!("/v1/users/{U}/usage"), None),
            (Method::GET, format!("/v1/users/{U}/ledger"), None),
            (Method::POST, "/v1/plans".into(), Some(plan_body())),
            (Method::PUT, "/v1/plans/pro".into(), Some(plan_body())),
            (Method::DELETE, "/v1/plans/free".into(), None),
            (
                Method::POST,
                "/v1/credit-packs".into(),
                Some(pack_body("cpk_pk", "*", 1, None)),
            ),
            (
                Method::PUT,
                "/v1/credit-packs/cpk_gemini_topup".into(),
                Some(pack_body("cpk_gemini_topup", "*", 1, None)),
            ),
            (
                Method::POST,
                "/v1/credit-packs/cpk_gemini_topup/archive".into(),
                Some(json!({})),
            ),
        ];
        for (m, p, body) in writes {
            let b = body.map(|b| b.to_string().into_bytes());
            let r = app.send(m.clone(), &p, Some(key), b, &[]).await;
            v.expect(
                &format!("{m} {p} with {key}"),
                r,
                403,
                "permission",
                None,
                Param::Any,
            )
            .await;
        }
    }
    v.finish();
}

#[tokio::test]
async fn an_app_without_live_keys_refuses_live_keys_with_401() {
    let app = spawn_app_with(Options {
        live_keys: false,
        ..Options::default()
    })
    .await;
    for key in [SK_LIVE, PK_LIVE] {
        let r = app.get("/v1/plans", key).await;
        assert_error(&r, 401, "authentication", None, Param::Any);
        let r = app
            .post(
                "/v1/check",
                key,
                json!({"userId": U, "model": GEMINI, "amount": 1}),
            )
            .await;
        assert_error(&r, 401, "authentication", None, Param::Any);
    }
    ok(&app.get("/v1/plans", SK_TEST).await, 200);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_the_error_shape() {
    let app = spawn_app().await;
    let mut v = V::new(&app).await;
    for p in [
        "/v1/nope",
        "/v1/users/u_v/nope",
        "/v1/plans/pro/nope",
        "/v2/plans",
        "/nope",
        "/v1",
    ] {
        let r = app.get(p, SK_TEST).await;
        v.expect(&format!("GET {p}"), r, 404, "not_found", None, Param::Any)
            .await;
        let r = app.post(p, SK_TEST, json!({})).await;
        v.expect(&format!("POST {p}"), r, 404, "not_found", None, Param::Any)
            .await;
    }
    let pending = v.pending.clone();
    let wrong: Vec<(Method, String)> = vec![
        (Method::PATCH, "/v1/plans/pro".into()),
        (Method::POST, "/v1/plans/pro".into()),
        (Method::DELETE, "/v1/credit-packs/cpk_gemini_topup".into()),
        (Method::GET, "/v1/reservations".into()),
        (Method::DELETE, format!("/v1/reservations/{pending}")),
        (Method::GET, format!("/v1/reservations/{pending}/commit")),
        (Method::GET, "/v1/check".into()),
        (Method::PUT, "/v1/consume".into()),
        (Method::GET, "/v1/credits/grants".into()),
        (Method::DELETE, "/v1/credits/balances/bal_x".into()),
        (Method::POST, format!("/v1/users/{U}/usage")),
        (Method::DELETE, format!("/v1/users/{U}/ledger")),
        (Method::POST, format!("/v1/users/{U}/subscription")),
        (Method::GET, "/v1/test/clock/advance".into()),
        (
            Method::GET,
            "/v1/credit-packs/cpk_gemini_topup/archive".into(),
        ),
    ];
    for (m, p) in wrong {
        let body = if m == Method::GET {
            None
        } else {
            Some(b"{}".to_vec())
        };
        let r = app.send(m.clone(), &p, Some(SK_TEST), body, &[]).await;
        v.expect(
            &format!("{m} {p}"),
            r,
            405,
            "method_not_allowed",
            None,
            Param::Any,
        )
        .await;
    }
    v.finish();
}

#[tokio::test]
async fn malformed_json_is_invalid_json_and_a_body_over_1_mib_is_413() {
    let app = spawn_app().await;
    let mut v = V::new(&app).await;
    let posts = [
        ("POST", "/v1/reservations".to_string()),
        ("POST", "/v1/check".to_string()),
        ("POST", "/v1/consume".to_string()),
        ("POST", "/v1/credits/grants".to_string()),
        ("POST", "/v1/plans".to_string()),
        ("PUT", "/v1/plans/pro".to_string()),
        ("POST", "/v1/credit-packs".to_string()),
        ("PUT", format!("/v1/users/{U}/subscription")),
    ];
    for (m, p) in &posts {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        for raw in [
            "{\"userId\": ",
            "not json",
            "{\"a\": 1} trailing",
            "{'a': 1}",
            "{\"a\": 1,}",
        ] {
            let r = app
                .send(
                    method.clone(),
                    p,
                    Some(SK_TEST),
                    Some(raw.as_bytes().to_vec()),
                    &[],
                )
                .await;
            v.expect(
                &format!("{m} {p} {raw:?}"),
                r,
                400,
                "invalid_request",
                Some("invalid_json"),
                Param::Any,
            )
            .await;
        }
        // Over 1 MiB: 413, whatever the content.
        let pad = "x".repeat(1024 * 1024);
        let big = json!({"userId": U, "model": GEMINI, "amount": 1, "metadata": {"pad": pad}});
        let r = app
            .send(
                method.clone(),
                p,
                Some(SK_TEST),
                Some(big.to_string().into_bytes()),
                &[],
            )
            .await;
        v.expect(
            &format!("{m} {p} 1 MiB + body"),
            r,
            413,
            "payload_too_large",
            None,
            Param::Any,
        )
        .await;
    }
    // Just under 1 MiB is read and judged on its content.
    let pad = "x".repeat(1_000_000);
    let under = json!({"userId": U, "model": GEMINI, "amount": 1, "padding": pad});
    let r = app.post("/v1/check", SK_TEST, under).await;
    v.unknown_field("check with a 1,000,000-byte unknown field", r, "padding")
        .await;
    v.finish();
}
