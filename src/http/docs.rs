//! `GET /docs`: the OpenAPI document rendered by Swagger UI, working offline.
//!
//! Swagger UI's files come vendored inside the `utoipa-swagger-ui` crate (its `vendored` feature)
//! and are served from here, like the dashboard's htmx: the page loads nothing from another host.
//! The page is ours rather than Swagger UI's `index.html`, so that it can live at `/docs` itself
//! (its links are absolute) and turn off the online validator badge, which would fetch an image
//! from validator.swagger.io.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use std::sync::{Arc, LazyLock};
use utoipa_swagger_ui::Config;

/// The Swagger UI files the page uses; anything else under `/docs/` is 404.
const ASSETS: &[&str] = &[
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "favicon-32x32.png",
];

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vevee API reference</title>
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  persistAuthorization: false
});
</script>
</body>
</html>
"##;

#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "Operations",
    summary = "This document rendered (Swagger UI, served by vevee itself)",
    responses((status = 200, description = "An HTML page", content_type = "text/html", body = String))
)]
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /docs/{file}`: one of Swagger UI's vendored files.
pub async fn asset(Path(file): Path<String>) -> Response {
    // `serve` needs a configuration although the files used here do not depend on it.
    static CONFIG: LazyLock<Arc<Config<'static>>> =
        LazyLock::new(|| Arc::new(Config::new(["/openapi.json"])));
    if !ASSETS.contains(&file.as_str()) {
        return super::error::ApiError::not_found("route_not_found", "no such file under /docs")
            .into_response();
    }
    match utoipa_swagger_ui::serve(&file, CONFIG.clone()) {
        Ok(Some(found)) => (
            [
                (header::CONTENT_TYPE, found.content_type),
                (header::CACHE_CONTROL, "public, max-age=86400".to_owned()),
            ],
            found.bytes.into_owned(),
        )
            .into_response(),
        Ok(None) => {
            super::error::ApiError::not_found("route_not_found", "no such file under /docs")
                .into_response()
        }
        Err(error) => {
            tracing::error!(%error, "serving a Swagger UI file");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
