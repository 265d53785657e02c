//! The catalog (plans, credit packs) and the operations endpoints.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn the_seeded_catalog_holds_free_pro_and_the_two_packs_readable_with_a_publishable_key() {
    let app = spawn_app().await;
    let plans = ok(&app.get("/v1/plans", PK_TEST).await, 200).clone();
    assert_eq!(plans["hasMore"], false);
    let ids: Vec<&str> = plans["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"free") && ids.contains(&"pro"), "{plans}");

    let free = ok(&app.get("/v1/plans/free", PK_LIVE).await, 200).clone();
    assert_eq!(free["name"], "Free");
    assert_eq!(
        free["price"],
        json!({"amount": 0, "currency": "usd", "interval": null})
    );
    let l = &free["limits"];
    assert_eq!(l.as_array().unwrap().len(), 1);
    assert_eq!(l[0]["id"], "images");
    assert_eq!(l[0]["match"], json!([GEMINI]));
    assert_eq!(l[0]["limit"], 2);
    assert_eq!(l[0]["unit"], "count");
    assert_eq!(l[0]["period"], "lifetime");
    ts(&free["createdAt"]);
    ts(&free["updatedAt"]);

    let pro = ok(&app.get("/v1/plans/pro", PK_TEST).await, 200).clone();
    assert_eq!(pro["name"], "Pro");
    assert_eq!(
        pro["price"],
        json!({"amount": 900, "currency": "usd", "interval": "month"})
    );
    let l = &pro["limits"];
    assert_eq!(l.as_array().unwrap().len(), 1);
    assert_eq!(
        (&l[0]["id"], &l[0]["match"], &l[0]["limit"]),
        (&json!("images"), &json!(["image.*"]), &json!(40))
    );
    assert_eq!(
        (&l[0]["unit"], &l[0]["period"]),
        (&json!("count"), &json!("month"))
    );

    let packs = ok(&app.get("/v1/credit-packs", PK_TEST).await, 200).clone();
    assert_eq!(packs["hasMore"], false);
    let topup = ok(
        &app.get("/v1/credit-packs/cpk_gemini_topup", PK_TEST).await,
        200,
    )
    .clone();
    assert_eq!(topup["price"], json!({"amount": 400, "currency": "usd"}));
    assert_eq!(topup["expiresInDays"], Value::Null);
    assert_eq!(topup["archived"], false);
    assert!(
        topup.get("stripePriceId").is_some(),
        "present, null when unset: {topup}"
    );
    assert_eq!(
        topup["items"],
        json!([{"id": "gemini", "match": GEMINI, "amount": 50, "unit": "count",
                "lowBalanceThreshold": null}])
    );
    let bundle = ok(
        &app.get("/v1/credit-packs/cpk_creator_bundle", PK_TEST)
            .await,
        200,
    )
    .clone();
    assert_eq!(bundle["price"], json!({"amount": 1500, "currency": "usd"}));
    assert_eq!(bundle["expiresInDays"], 90);
    assert_eq!(
        bundle["items"],
        json!([{"id": "dalle", "match": DALLE, "amount": 10, "unit": "count",
                "lowBalanceThreshold": null},
               {"id": "veo", "match": VEO, "amount": 5, "unit": "seconds",
                "lowBalanceThreshold": null}])
    );
    for p in packs["data"].as_array().unwrap() {
        assert_eq!(p["archived"], false);
    }
    let pids: Vec<&Value> = packs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["id"])
        .collect();
    assert!(
        pids.contains(&&json!("cpk_gemini_topup")) && pids.contains(&&json!("cpk_creator_bundle"))
    );
}

#[tokio::test]
async fn creating_a_plan_is_201_put_is_200_and_delete_waits_until_no_active_subscription() {
    let app = spawn_app().await;
    let body = json!({"id": "starter", "name": "Starter",
                      "price": {"amount": 300, "currency": "usd", "interval": "year"},
                      "limits": [{"id": "video", "name": "Video seconds", "match": ["video.*"],
                                  "limit": 60, "unit": "seconds", "period": "week"}]});
    let created = ok(&app.post("/v1/plans", SK_TEST, body.clone()).await, 201).clone();
    for f in ["id", "name", "price", "limits"] {
        assert_eq!(created[f], body[f], "{f}");
    }
    ts(&created["createdAt"]);
    assert_eq!(
        ok(&app.get("/v1/plans/starter", SK_TEST).await, 200),
        &created
    );

    let mut edited = body.clone();
    edited["limits"][0]["limit"] = json!(90);
    let put = ok(&app.put("/v1/plans/starter", SK_TEST, edited).await, 200).clone();
    assert_eq!(put["limits"][0]["limit"], 90);
    assert_eq!(put["createdAt"], created["createdAt"]);
    assert!(ts(&put["updatedAt"]) >= ts(&created["updatedAt"]));

    // PUT creates too (200), and a plan may have no limits.
    let empty = json!({"id": "empty", "name": "Empty",
                       "price": {"amount": 0, "currency": "usd", "interval": null}, "limits": []});
    ok(&app.put("/v1/plans/empty", SK_TEST, empty).await, 200);
    app.subscribe(SK_TEST, "u_empty", "empty").await;
    let d = app.reserve(SK_TEST, "u_empty", IMAGEN, 1).await;
    assert_eq!(d["reasons"], json!(["not_in_plan"]));

    // In use in live mode only: still in use.
    app.subscribe(SK_LIVE, "u_starter", "starter").await;
    let r = app.delete("/v1/plans/starter", SK_TEST).await;
    assert_error(&r, 409, "conflict", Some("plan_in_use"), Param::Any);
    app.cancel(SK_LIVE, "u_starter").await;
    ok(&app.delete("/v1/plans/starter", SK_TEST).await, 200);
    assert_error(
        &app.get("/v1/plans/starter", SK_TEST).await,
        404,
        "not_found",
        None,
        Param::Any,
    );
    let list = ok(&app.get("/v1/plans", SK_LIVE).await, 200).clone();
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["id"] != "starter")
    );
}

#[tokio::test]
async fn packs_can_be_archived_and_edited_and_edits_change_future_grants_only() {
    let app = spawn_app().await;
    let body = json!({"id": "cpk_mix", "name": "Mix", "price": {"amount": 700, "currency": "eur"},
                      "expiresInDays": null, "stripePriceId": "price_mix",
                      "items": [{"match": "image.*", "amount": 3, "unit": "count"},
                                {"match": "text.*", "amount": 1000, "unit": "count"}]});
    let p = ok(&app.post("/v1/credit-packs", SK_TEST, body).await, 201).clone();
    let (a, b) = (&p["items"][0]["id"], &p["items"][1]["id"]);
    assert!(
        a.as_str().is_some_and(|x| !x.is_empty()),
        "item ids are generated: {p}"
    );
    assert!(b.as_str().is_some_and(|x| !x.is_empty()));
    assert_ne!(a, b);
    assert_eq!(p["stripePriceId"], "price_mix");
    assert_eq!(p["archived"], false);

    let arch = ok(
        &app.post("/v1/credit-packs/cpk_mix/archive", SK_TEST, json!({}))
            .await,
        200,
    )
    .clone();
    assert_eq!(arch["archived"], true);
    let listed = ok(&app.get("/v1/credit-packs", SK_TEST).await, 200).clone();
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["id"] != "cpk_mix")
    );
    let all = ok(
        &app.get("/v1/credit-packs?includeArchived=true", SK_TEST)
            .await,
        200,
    )
    .clone();
    assert!(
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "cpk_mix")
    );
    assert_eq!(
        ok(&app.get("/v1/credit-packs/cpk_mix", SK_TEST).await, 200)["archived"],
        true
    );
    // A purchase may complete after archiving.
    let g = app.grant(SK_TEST, "u_mix", "cpk_mix", "cs_mix").await;
    assert_eq!(g["balances"].as_array().unwrap().len(), 2);

    let first = app
        .grant_one(SK_TEST, "u_edit", "cpk_gemini_topup", "cs_e1")
        .await;
    let mut edit = pack_body("cpk_gemini_topup", GEMINI, 60, Some(10));
    edit["items"][0]["id"] = json!("gemini");
    ok(
        &app.put("/v1/credit-packs/cpk_gemini_topup", SK_TEST, edit)
            .await,
        200,
    );
    assert_eq!(
        app.balance(SK_TEST, &first).await["granted"],
        50,
        "an edit changes future grants"
    );
    assert_eq!(app.balance(SK_TEST, &first).await["expiresAt"], Value::Null);
    let g = app
        .grant(SK_TEST, "u_edit", "cpk_gemini_topup", "cs_e2")
        .await;
    let b = &g["balances"][0];
    assert_eq!(b["granted"], 60);
    assert_eq!(
        secs_between(&b["createdAt"], &b["expiresAt"]),
        (10 * DAY) as f64
    );
    let body = json!({"userId": "u_edit", "packId": "cpk_gemini_topup", "externalRef": "cs_e1",
                      "source": "purchase"});
    let again = ok(&app.post("/v1/credits/grants", SK_TEST, body).await, 200).clone();
    assert_eq!(again["created"], false);
    assert_eq!(again["balances"][0]["id"], first.as_str());
    assert_eq!(
        again["balances"][0]["granted"], 50,
        "the first grant's balances"
    );
}

#[tokio::test]
async fn healthz_readyz_and_metrics_answer() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    for p in ["/healthz", "/readyz"] {
        let r = client.get(format!("{}{p}", app.base)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{p}");
    }
    app.consume(SK_TEST, "u_m", GEMINI, 1).await;
    let r = client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE"), "Prometheus text format: {text}");
}

#[tokio::test]
async fn a_page_on_another_origin_may_read_the_catalog_but_is_not_offered_writes() {
    let app = spawn_app().await;
    let origin = [("origin", "https://pixelforge.example")];
    let (status, body, headers) = app
        .send(Method::GET, "/v1/plans", Some(PK_TEST), None, &origin)
        .await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(headers["access-control-allow-origin"], "*");

    let preflight = [
        ("origin", "https://pixelforge.example"),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "authorization"),
    ];
    let (status, _, headers) = app
        .send(Method::OPTIONS, "/v1/plans", None, None, &preflight)
        .await;
    assert_eq!(status.as_u16(), 200);
    let allowed = headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        allowed.contains("GET") && !allowed.contains("POST"),
        "{allowed}"
    );
}
