//! The dashboard over HTTP, as a browser without JavaScript would use it: sign-in throttling,
//! revocable sessions and the security headers of its pages.

use crate::support::*;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use std::net::IpAddr;
use std::time::Duration;

pub(crate) const PASSWORD: &str = "it-dashboard-password";

/// A browser from one address: no redirects followed, cookies passed by hand.
pub(crate) struct Browser {
    client: reqwest::Client,
    base: String,
}

pub(crate) struct Page {
    pub(crate) status: StatusCode,
    headers: HeaderMap,
    pub(crate) body: String,
}

impl Page {
    /// The value of the hidden `csrf` field of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field")
            + 19;
        self.body[at..].split('"').next().unwrap().to_owned()
    }

    /// `name=value` of the cookie the page sets under `name`, if it sets one.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(|v| v.split(';').next().unwrap().to_owned())
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Browser {
    pub(crate) fn new(app: &TestApp, from: &str) -> Browser {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(from.parse::<IpAddr>().unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Browser {
            client,
            base: app.base.clone(),
        }
    }

    pub(crate) async fn get(&self, path: &str, cookie: &str) -> Page {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    /// Signs in and returns the answer; on success it carries the session cookie.
    async fn sign_in(&self, password: &str) -> Page {
        let form = self.get("/dashboard/sign-in", "").await;
        let cookie = form
            .cookie("vevee_dashboard_signin")
            .expect("a sign-in cookie");
        let csrf = form.csrf();
        self.post(
            "/dashboard/sign-in",
            &cookie,
            &[("csrf", &csrf), ("app", APP_ID), ("password", password)],
        )
        .await
    }

    /// A session cookie, or a panic with the page that refused it.
    pub(crate) async fn session(&self, password: &str) -> String {
        let page = self.sign_in(password).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        page.cookie("vevee_dashboard").expect("a session cookie")
    }
}

/// Whether `cookie` is a live session: its plans page is shown rather than the sign-in page.
async fn signed_in(b: &Browser, cookie: &str) -> bool {
    let page = b.get("/dashboard/test/plans", cookie).await;
    match page.status {
        StatusCode::OK => true,
        StatusCode::SEE_OTHER => false,
        other => panic!("plans page answered {other}: {}", page.body),
    }
}

#[tokio::test]
async fn wrong_passwords_from_one_address_never_hold_up_a_right_one() {
    let app = spawn_app().await;
    let attacker = std::sync::Arc::new(Browser::new(&app, "127.0.0.2"));
    let operator = Browser::new(&app, "127.0.0.1");
    let mut wrong = tokio::task::JoinSet::new();
    for i in 0..20 {
        let attacker = attacker.clone();
        wrong.spawn(async move { attacker.sign_in(&format!("guess-{i}")).await.status });
    }
    // Let the guesses reach the server first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let page = operator.sign_in(PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let mut statuses = Vec::new();
    while let Some(status) = wrong.try_join_next() {
        statuses.push(status.unwrap());
    }
    assert!(
        statuses.len() < 20,
        "all 20 wrong sign-ins were answered before the right one"
    );
    while let Some(status) = wrong.join_next().await {
        statuses.push(status.unwrap());
    }
    // None got in, and past the per-address budget they were turned away without a check.
    assert!(
        statuses.iter().all(|s| *s != StatusCode::SEE_OTHER),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "20 guesses at once were all checked: {statuses:?}"
    );
    // The throttled address cannot even try the right password for now; the operator's can.
    let page = attacker.sign_in(PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(
        page.header("retry-after")
            .parse::<u64>()
            .is_ok_and(|s| s > 0)
    );
    operator.session(PASSWORD).await;
}

#[tokio::test]
async fn a_right_password_is_not_queued_behind_wrong_ones_from_the_same_address() {
    let app = spawn_app().await;
    let browser = std::sync::Arc::new(Browser::new(&app, "127.0.0.3"));
    let mut wrong = tokio::task::JoinSet::new();
    for i in 0..4 {
        let browser = browser.clone();
        wrong.spawn(async move { browser.sign_in(&format!("typo-{i}")).await.status });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let page = browser.sign_in(PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let mut finished_first = 0;
    while let Some(status) = wrong.try_join_next() {
        assert_eq!(status.unwrap(), StatusCode::UNAUTHORIZED);
        finished_first += 1;
    }
    assert!(
        finished_first < 4,
        "the right password waited for the wrong ones"
    );
    while let Some(status) = wrong.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn signing_out_ends_the_session_on_the_server_also_across_a_restart() {
    let mut app = spawn_app().await;
    let b = Browser::new(&app, "127.0.0.1");
    let kept = b.session(PASSWORD).await;
    let cookie = b.session(PASSWORD).await;
    assert!(signed_in(&b, &cookie).await);
    let page = b.get("/dashboard/test/plans", &cookie).await;
    let csrf = page.csrf();
    let out = b
        .post("/dashboard/sign-out", &cookie, &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);

    // A copy of the old cookie reads nothing and changes nothing.
    assert!(!signed_in(&b, &cookie).await);
    let grant = b
        .post(
            "/dashboard/test/users/u_dash/grant",
            &cookie,
            &[("csrf", &csrf), ("pack_id", "cpk_gemini_topup")],
        )
        .await;
    assert_eq!(grant.status, StatusCode::UNAUTHORIZED, "{}", grant.body);
    assert!(signed_in(&b, &kept).await, "another session was ended too");

    // A restart with the same password keeps sessions, and keeps the signed-out one ended.
    app.restart().await;
    let b = Browser::new(&app, "127.0.0.1");
    assert!(signed_in(&b, &kept).await, "a restart ended a live session");
    assert!(
        !signed_in(&b, &cookie).await,
        "a restart revived a signed-out session"
    );
}

#[tokio::test]
async fn a_new_dashboard_password_ends_every_session_of_the_app() {
    let mut app = spawn_app().await;
    let b = Browser::new(&app, "127.0.0.1");
    let old = b.session(PASSWORD).await;
    app.tweaks.dashboard_password = "a-brand-new-password".into();
    app.stop();
    app.start_again().await;
    let b = Browser::new(&app, "127.0.0.1");
    assert!(
        !signed_in(&b, &old).await,
        "a session of the old password lives on"
    );
    assert_eq!(b.sign_in(PASSWORD).await.status, StatusCode::UNAUTHORIZED);
    let new = b.session("a-brand-new-password").await;
    assert!(signed_in(&b, &new).await);
}

#[tokio::test]
async fn dashboard_pages_refuse_framing_and_signed_in_pages_are_not_cached() {
    let app = spawn_app().await;
    let b = Browser::new(&app, "127.0.0.1");
    let cookie = b.session(PASSWORD).await;
    let sign_in = b.get("/dashboard/sign-in", "").await;
    let plans = b.get("/dashboard/test/plans", &cookie).await;
    let user = b.get("/dashboard/test/users?user=u_h", &cookie).await;
    let refused = b.get("/dashboard/test/plans", "").await;
    for page in [&sign_in, &plans, &user, &refused] {
        assert_eq!(page.header("x-frame-options"), "DENY");
        assert!(
            page.header("content-security-policy")
                .contains("frame-ancestors 'none'"),
            "{:?}",
            page.headers
        );
    }
    for page in [&plans, &user] {
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.header("cache-control"), "no-store");
    }
}

#[tokio::test]
async fn only_the_catalog_reads_answer_a_page_on_another_origin() {
    let app = spawn_app().await;
    let origin = [("origin", "https://shop.example")];
    let allowed = |r: &Resp| r.2.get("access-control-allow-origin").is_some();
    for path in [
        "/v1/plans",
        "/v1/plans/free",
        "/v1/credit-packs",
        "/v1/credit-packs/cpk_gemini_topup",
    ] {
        let r = app
            .send(reqwest::Method::GET, path, Some(PK_TEST), None, &origin)
            .await;
        assert!(allowed(&r), "GET {path}: {:?}", r.2);
        let preflight = app
            .send(
                reqwest::Method::OPTIONS,
                path,
                None,
                None,
                &[
                    ("origin", "https://shop.example"),
                    ("access-control-request-method", "GET"),
                ],
            )
            .await;
        assert!(allowed(&preflight), "OPTIONS {path}: {:?}", preflight.2);
    }
    let plan = serde_json::json!({"id": "p_cors", "name": "P",
        "price": {"amount": 0, "currency": "usd", "interval": null}, "limits": []});
    let others = [
        (
            reqwest::Method::POST,
            "/v1/plans",
            Some(plan.to_string().into_bytes()),
        ),
        (reqwest::Method::GET, "/v1/users/u_cors/usage", None),
        (reqwest::Method::POST, "/v1/consume", Some(b"{}".to_vec())),
        (reqwest::Method::GET, "/dashboard/sign-in", None),
        (reqwest::Method::GET, "/healthz", None),
    ];
    for (method, path, body) in others {
        let r = app
            .send(method.clone(), path, Some(SK_TEST), body, &origin)
            .await;
        assert!(!allowed(&r), "{method} {path}: {:?}", r.2);
    }
    let preflight = app
        .send(
            reqwest::Method::OPTIONS,
            "/v1/consume",
            None,
            None,
            &[
                ("origin", "https://shop.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert!(!allowed(&preflight), "{:?}", preflight.2);
}

#[tokio::test]
async fn the_sign_in_page_names_no_app_unless_the_config_says_so() {
    let app = spawn_app().await;
    let page = Browser::new(&app, "127.0.0.1")
        .get("/dashboard/sign-in", "")
        .await;
    assert!(!page.body.contains(APP_ID), "{}", page.body);
    // Typing the id signs in as before.
    Browser::new(&app, "127.0.0.1").session(PASSWORD).await;

    let listed = spawn_app_tweaked(Tweaks {
        server_lines: "dashboard_sign_in_lists_apps = true\n".into(),
        ..Tweaks::default()
    })
    .await;
    let page = Browser::new(&listed, "127.0.0.1")
        .get("/dashboard/sign-in", "")
        .await;
    assert!(
        page.body.contains(&format!("<option value=\"{APP_ID}\"")),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn many_pending_reservations_are_shown_a_page_at_a_time() {
    let app = spawn_app().await;
    create_pack(&app, "cpk_many", "image.*", 1_000, None).await;
    app.grant_one(SK_TEST, "u_many", "cpk_many", "cs_many")
        .await;
    for _ in 0..120 {
        app.reserve_ok(SK_TEST, "u_many", DALLE, 1).await;
    }
    let b = Browser::new(&app, "127.0.0.1");
    let cookie = b.session(PASSWORD).await;
    let rows = |page: &Page| page.body.matches("<td><code class=\"small\">res_").count();
    let first = b.get("/dashboard/test/users?user=u_many", &cookie).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(rows(&first), 50, "{}", first.body.len());
    assert!(
        first.body.contains("1–50 of 120"),
        "the page says how many there are"
    );
    let last = b
        .get("/dashboard/test/users?user=u_many&pending=100", &cookie)
        .await;
    assert_eq!(rows(&last), 20);
    assert!(last.body.contains("101–120 of 120"));
    assert!(!last.body.contains("Older reservations"));
    assert!(first.body.contains("pending=50"), "a link to the next page");
}

#[tokio::test]
async fn the_webhooks_page_adds_an_endpoint_shows_its_secret_once_lists_deliveries_and_resends() {
    use crate::webhooks_out::{FAST_RETRIES, all_events, receiver};
    let app = spawn_app_tweaked(Tweaks {
        app_lines: FAST_RETRIES.into(),
        ..Tweaks::default()
    })
    .await;
    let rx = receiver(0).await;
    let b = Browser::new(&app, "127.0.0.1");
    let cookie = b.session(PASSWORD).await;
    let page = b.get("/dashboard/test/webhooks", &cookie).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page.csrf();
    let created = b
        .post(
            "/dashboard/test/webhooks/new",
            &cookie,
            &[
                ("csrf", &csrf),
                ("url", &rx.url),
                ("events", "*"),
                ("description", ""),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let list = ok(&app.get("/v1/webhook-endpoints", SK_TEST).await, 200).clone();
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["data"][0]["url"], rx.url.as_str());
    assert!(
        created.body.contains("whsec_"),
        "the secret is shown on creation"
    );
    let again = b.get("/dashboard/test/webhooks", &cookie).await;
    assert!(!again.body.contains("whsec_"), "and only then");
    // Live mode's page has its own endpoints.
    let live = b.get("/dashboard/live/webhooks", &cookie).await;
    assert!(!live.body.contains(&id));

    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_dash")
        .await;
    let event = all_events(&app, SK_TEST).await.pop().unwrap();
    let event_id = event["id"].as_str().unwrap().to_owned();
    rx.wait_delivered(&event_id).await;
    // The deliverer records an attempt once the endpoint's answer is back, a moment after the
    // endpoint has the event: the page lists it within seconds, as on a reload.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = loop {
        let page = b.get("/dashboard/test/webhooks", &cookie).await;
        if page.body.contains(&event_id) || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(page.body.contains(&event_id), "the delivery is listed");
    assert!(page.body.contains("delivered"));

    let resent = b
        .post(
            &format!("/dashboard/test/webhooks/{id}/resend"),
            &cookie,
            &[("csrf", &csrf), ("event_id", &event_id)],
        )
        .await;
    assert_eq!(resent.status, StatusCode::SEE_OTHER, "{}", resent.body);
    rx.wait_for("the resent event", |all| {
        all.iter()
            .filter(|d| d.id == event_id && d.status == 200)
            .count()
            == 2
    })
    .await;

    let disabled = b
        .post(
            &format!("/dashboard/test/webhooks/{id}/disable"),
            &cookie,
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER);
    let endpoint = ok(
        &app.get(&format!("/v1/webhook-endpoints/{id}"), SK_TEST)
            .await,
        200,
    )
    .clone();
    assert_eq!(endpoint["enabled"], false);
    let deleted = b
        .post(
            &format!("/dashboard/test/webhooks/{id}/delete"),
            &cookie,
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    let list = ok(&app.get("/v1/webhook-endpoints", SK_TEST).await, 200).clone();
    assert_eq!(list["data"], serde_json::json!([]));
}

#[tokio::test]
async fn the_pack_form_keeps_and_changes_an_items_low_balance_threshold() {
    let app = spawn_app().await;
    let pack = serde_json::json!({"id": "cpk_low", "name": "Low",
        "price": {"amount": 100, "currency": "usd"}, "expiresInDays": null,
        "items": [{"id": "g", "match": DALLE, "amount": 10, "unit": "count", "lowBalanceThreshold": 2}]});
    ok(&app.post("/v1/credit-packs", SK_TEST, pack).await, 201);
    let b = Browser::new(&app, "127.0.0.1");
    let cookie = b.session(PASSWORD).await;
    let edit = b.get("/dashboard/test/packs/cpk_low/edit", &cookie).await;
    assert_eq!(edit.status, StatusCode::OK);
    assert!(
        edit.body
            .contains("name=\"item_low\" type=\"text\" value=\"2\""),
        "the edit form shows the threshold"
    );
    let csrf = edit.csrf();
    let form = |low: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("op", "save".to_owned()),
            ("name", "Low".to_owned()),
            ("id", "cpk_low".to_owned()),
            ("price", "1.00".to_owned()),
            ("currency", "usd".to_owned()),
            ("expires", "never".to_owned()),
            ("expires_days", String::new()),
            ("stripe_price_id", String::new()),
            ("item_match", DALLE.to_owned()),
            ("item_amount", "10".to_owned()),
            ("item_unit", "count".to_owned()),
            ("item_low", low.to_owned()),
            ("item_id", "g".to_owned()),
        ]
    };
    let threshold = || async {
        let p = ok(&app.get("/v1/credit-packs/cpk_low", SK_TEST).await, 200).clone();
        p["items"][0]["lowBalanceThreshold"].clone()
    };
    let send = |fields: Vec<(&'static str, String)>| {
        let b = &b;
        let cookie = &cookie;
        async move {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            b.post("/dashboard/test/packs/cpk_low/edit", cookie, &pairs)
                .await
        }
    };
    assert_eq!(send(form("2")).await.status, StatusCode::SEE_OTHER);
    assert_eq!(threshold().await, 2, "an edit keeps it");
    assert_eq!(send(form("4")).await.status, StatusCode::SEE_OTHER);
    assert_eq!(threshold().await, 4, "and can change it");
    let refused = send(form("11")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "above the amount");
    assert!(
        refused.body.contains("Low-balance alert"),
        "{}",
        refused.body
    );
    assert_eq!(threshold().await, 4);
    assert_eq!(send(form("")).await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        threshold().await,
        serde_json::Value::Null,
        "blank removes it"
    );
}
