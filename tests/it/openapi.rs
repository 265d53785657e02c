//! `GET /openapi.json`, `GET /docs` and `vevee openapi`: the document describes the server that
//! serves it, route for route, with API.md's errors and auth schemes.

use crate::support::*;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every route of API.md, as (method, path template). The document must hold exactly those the
/// server routes; a route of API.md that is not built yet is in neither.
const API_MD_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/plans"),
    ("POST", "/v1/plans"),
    ("GET", "/v1/plans/{id}"),
    ("PUT", "/v1/plans/{id}"),
    ("DELETE", "/v1/plans/{id}"),
    ("GET", "/v1/credit-packs"),
    ("POST", "/v1/credit-packs"),
    ("GET", "/v1/credit-packs/{id}"),
    ("PUT", "/v1/credit-packs/{id}"),
    ("POST", "/v1/credit-packs/{id}/archive"),
    ("PUT", "/v1/users/{userId}/subscription"),
    ("GET", "/v1/users/{userId}/subscription"),
    ("DELETE", "/v1/users/{userId}/subscription"),
    ("GET", "/v1/users/{userId}/usage"),
    ("GET", "/v1/users/{userId}/ledger"),
    ("POST", "/v1/credits/grants"),
    ("GET", "/v1/credits/balances/{id}"),
    ("POST", "/v1/credits/balances/{id}/revoke"),
    ("POST", "/v1/reservations"),
    ("GET", "/v1/reservations/{id}"),
    ("POST", "/v1/reservations/{id}/commit"),
    ("POST", "/v1/reservations/{id}/release"),
    ("POST", "/v1/check"),
    ("POST", "/v1/consume"),
    ("POST", "/v1/batch"),
    ("POST", "/v1/webhooks/stripe/{appId}"),
    ("POST", "/v1/webhook-endpoints"),
    ("GET", "/v1/webhook-endpoints"),
    ("GET", "/v1/webhook-endpoints/{id}"),
    ("PATCH", "/v1/webhook-endpoints/{id}"),
    ("DELETE", "/v1/webhook-endpoints/{id}"),
    ("POST", "/v1/webhook-endpoints/{id}/rotate-secret"),
    ("GET", "/v1/events"),
    ("GET", "/v1/test/clock"),
    ("POST", "/v1/test/clock/advance"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

async fn document(app: &TestApp) -> Value {
    let (status, doc, headers) = app
        .send(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert_eq!(status, 200, "GET /openapi.json without a key: {doc}");
    assert_eq!(headers["content-type"], "application/json");
    doc
}

/// (METHOD, path) of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    &doc["paths"][path][method.to_lowercase()]
}

/// Follows a `$ref` inside the document.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(doc, doc.pointer(pointer).unwrap_or(&Value::Null))
        }
        None => value,
    }
}

/// Whether the server has a route for (method, path): anything but "no such route" and "not
/// that method" counts, so a request without a key or a body is enough to tell.
async fn routed(app: &TestApp, method: &str, path: &str) -> bool {
    let concrete = path
        .split('/')
        .map(|s| if s.starts_with('{') { "probe" } else { s })
        .collect::<Vec<_>>()
        .join("/");
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (status, body, _) = app.send(method, &concrete, None, None, &[]).await;
    let code = body["error"]["code"].as_str().unwrap_or("");
    !(status == 404 && code == "route_not_found" || status == 405)
}

#[tokio::test]
async fn the_document_holds_exactly_the_routes_the_server_answers() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = operations(&doc);
    let api_md: BTreeSet<(String, String)> = API_MD_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();

    let extra: Vec<_> = documented.difference(&api_md).collect();
    assert!(extra.is_empty(), "documented but not in API.md: {extra:?}");
    let mut problems = Vec::new();
    for (method, path) in &api_md {
        let is_routed = routed(&app, method, path).await;
        let is_documented = documented.contains(&(method.clone(), path.clone()));
        if is_routed && !is_documented {
            problems.push(format!(
                "{method} {path} is routed but not in /openapi.json: give its handler \
                 #[utoipa::path] and register it with .routes(routes!(..)) in http::api_routes"
            ));
        }
        if is_documented && !is_routed {
            problems.push(format!("{method} {path} is documented but not routed"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The walkthrough's endpoints are all there (not vacuously equal on an empty document).
    for (method, path) in [
        ("POST", "/v1/reservations"),
        ("POST", "/v1/reservations/{id}/commit"),
        ("PUT", "/v1/users/{userId}/subscription"),
        ("POST", "/v1/credits/grants"),
    ] {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} missing"
        );
    }
}

#[tokio::test]
async fn every_operation_lists_its_error_answers_in_the_api_md_shape() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
    let detail = resolve(&doc, &error["properties"]["error"]);
    for field in ["type", "code", "message", "param"] {
        assert!(
            detail["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(field)),
            "error.{field} required"
        );
    }

    for (method, path) in operations(&doc) {
        let op = operation(&doc, &method, &path);
        let responses = op["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        for (status, response) in responses {
            if status.starts_with('2') {
                continue;
            }
            let response = resolve(&doc, response);
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/Error",
                "{method} {path} {status} is not an Error"
            );
        }
        let schemes = security_schemes(op);
        if !schemes.is_empty() {
            assert!(has("401") && has("429"), "{method} {path}: 401, 429");
            if !schemes.contains("publishableKey") {
                assert!(has("403"), "{method} {path}: 403");
            }
        }
        if op.get("requestBody").is_some() {
            assert!(has("400") && has("413"), "{method} {path}: 400, 413");
        }
        if method == "POST" && !schemes.is_empty() {
            assert!(has("409"), "{method} {path}: 409 for Idempotency-Key");
            let params = op["parameters"].as_array().unwrap();
            assert!(
                params.iter().any(|p| p["name"] == "Idempotency-Key"),
                "{method} {path}: Idempotency-Key"
            );
        }
    }
}

fn security_schemes(op: &Value) -> BTreeSet<String> {
    op["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys().cloned())
        .collect()
}

#[tokio::test]
async fn both_key_kinds_are_described_and_each_operation_names_the_ones_the_server_accepts() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemes = &doc["components"]["securitySchemes"];
    for name in ["secretKey", "publishableKey"] {
        assert_eq!(schemes[name]["type"], "http", "{name}");
        assert_eq!(schemes[name]["scheme"], "bearer", "{name}");
    }
    let catalog_reads = [
        "/v1/plans",
        "/v1/plans/{id}",
        "/v1/credit-packs",
        "/v1/credit-packs/{id}",
    ];
    let mut checked = 0;
    for (method, path) in operations(&doc) {
        let accepted = security_schemes(operation(&doc, &method, &path));
        if path == "/v1/webhooks/stripe/{appId}" || !path.starts_with("/v1/") {
            assert!(accepted.is_empty(), "{method} {path} takes no key");
            continue;
        }
        assert!(accepted.contains("secretKey"), "{method} {path}");
        let publishable = method == "GET" && catalog_reads.contains(&path.as_str());
        assert_eq!(
            accepted.contains("publishableKey"),
            publishable,
            "{method} {path}"
        );
        // What the server does with a publishable key agrees with the document.
        let concrete = path.replace("{userId}", "ana").replace("{id}", "pro");
        let (status, body, _) = app
            .send(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &concrete,
                Some(PK_TEST),
                Some(b"{}".to_vec()),
                &[],
            )
            .await;
        if publishable {
            assert_ne!(
                status, 403,
                "{method} {path} with a publishable key: {body}"
            );
        } else {
            assert_error(
                &(status, body, Default::default()),
                403,
                "permission",
                None,
                Param::Any,
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} keyed operations");
}

#[tokio::test]
async fn vevee_openapi_prints_the_document_the_server_serves() {
    let app = spawn_app().await;
    let served = document(&app).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vevee"))
        .arg("openapi")
        .output()
        .expect("run vevee openapi");
    assert!(output.status.success(), "{output:?}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(printed, served);
}

#[tokio::test]
async fn the_examples_come_from_the_pixelforge_walkthrough_and_the_server_accepts_them() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let example = |schema: &str| doc["components"]["schemas"][schema]["example"].clone();
    let subscribe = example("SubscriptionBody");
    assert_eq!(subscribe["planId"], "pro");
    ok(
        &app.put("/v1/users/ana/subscription", SK_TEST, subscribe)
            .await,
        200,
    );
    let reserve = example("ReserveBody");
    assert_eq!(reserve["model"], GEMINI);
    let reservation = ok(&app.post("/v1/reservations", SK_TEST, reserve).await, 200).clone();
    assert_eq!(reservation["allowed"], true, "{reservation}");
    let id = reservation["reservationId"].as_str().unwrap();
    let commit = example("CommitBody");
    let (status, body, _) = app
        .post(&format!("/v1/reservations/{id}/commit"), SK_TEST, commit)
        .await;
    // The example commits 2 of a reservation of 1: above the reserved amount.
    assert_error(
        &(status, body, Default::default()),
        400,
        "invalid_request",
        Some("invalid_amount"),
        Param::Any,
    );
    let grant = example("GrantBody");
    assert_eq!(grant["packId"], "cpk_gemini_topup");
    ok(&app.post("/v1/credits/grants", SK_TEST, grant).await, 201);
}

#[tokio::test]
async fn the_docs_page_renders_the_document_from_files_vevee_serves_itself() {
    let app = spawn_app().await;
    let (status, page, headers) = app.send(Method::GET, "/docs", None, None, &[]).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = page.as_str().expect("HTML").to_owned();
    assert!(page.contains(r#"url: "/openapi.json""#), "{page}");
    // No other host: every script, style and icon is a path on this server...
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    assert!(
        page.contains("validatorUrl: null"),
        "the validator badge loads from a CDN"
    );
    let links: Vec<&str> = page
        .split(['"', '\''])
        .filter(|s| s.starts_with("/docs/"))
        .collect();
    assert!(links.len() >= 2, "{links:?}");
    // ...and each of them is served.
    for link in links {
        let response = reqwest::get(format!("{}{link}", app.base)).await.unwrap();
        assert_eq!(response.status(), 200, "{link}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = response.bytes().await.unwrap();
        assert!(bytes.len() > 100, "{link}: {} bytes", bytes.len());
        let expected = if link.ends_with(".js") {
            "javascript"
        } else if link.ends_with(".css") {
            "text/css"
        } else {
            "image/png"
        };
        assert!(kind.contains(expected), "{link}: {kind}");
    }
    let (status, body, _) = app
        .send(Method::GET, "/docs/secrets.txt", None, None, &[])
        .await;
    assert_eq!(status, 404, "{body}");
}
