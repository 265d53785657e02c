//! The dashboard under `/dashboard`: server-rendered pages (maud) for an app's operator.
//!
//! It is a second face of the same server, not a second implementation: the pages call the same
//! [`Engine`](crate::actors::Engine) methods as the API handlers and validate through the same
//! functions ([`plan_from`](crate::engine::catalog_input::plan_from), `pack_from`). Its state is
//! the shared [`AppState`] plus its own [`Settings`] ([`Dashboard`]); `startup` merges its
//! [`router`] with the API's. Of the API's modules it uses only [`ApiError`], to show a refusal in
//! the API's words. Reading works without JavaScript; htmx, served from here, only saves a page
//! load when an item row is added or removed.
//!
//! Reading order: [`auth`] (sessions, CSRF, sign-in), [`forms`] (catalog forms into the catalog's
//! inputs), [`catalog`] (Plans & Credit Packs), [`users`] (the support view of one user),
//! [`webhooks`] (the app's endpoints), [`chart`].

pub mod auth;
pub mod catalog;
pub mod chart;
pub mod forms;
pub mod users;
pub mod webhooks;

use crate::config::Config;
use crate::engine::Mode;
use crate::http::error::ApiError;
use crate::state::AppState;
use auth::{Keyring, Passwords, Session, Signouts, Throttle};
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use forms::Fields;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::sync::Arc;

/// What the dashboard needs from the config and the data directory, made once at startup.
pub struct Settings {
    pub keyring: Keyring,
    pub passwords: Passwords,
    pub throttle: Throttle,
    pub signouts: Signouts,
    /// Whether the sign-in page offers the app ids to choose from (`[server]
    /// dashboard_sign_in_lists_apps`); by default the operator types the id.
    pub lists_apps: bool,
}

impl Settings {
    /// Loads (or on first start makes) the session key and the signed-out sessions, kept in
    /// the data directory.
    pub fn from_config(config: &Config) -> std::io::Result<Settings> {
        let dir = &config.storage.data_dir;
        std::fs::create_dir_all(dir)?;
        Ok(Settings {
            keyring: Keyring::load_or_create(dir)?,
            passwords: Passwords::from_config(config),
            throttle: Throttle::default(),
            signouts: Signouts::load(dir, auth::now_s())?,
            lists_apps: config.server.dashboard_sign_in_lists_apps,
        })
    }

    /// The live session a cookie value carries: signed for the app's current password, not
    /// expired, not signed out.
    pub fn session(&self, cookie: &str) -> Option<Session> {
        self.keyring
            .open(cookie, auth::now_s(), |app| self.passwords.digest(app))
            .filter(|session| !self.signouts.is_ended(session))
    }
}

/// What every dashboard answer carries: no page may be framed by another site (clickjacking),
/// scripts come from here only, and what a signed-in operator sees is not kept in any cache.
/// The static assets set their own caching and keep it.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// What the dashboard's pages share: the server's [`AppState`] (they reach its fields through
/// `Deref`, as handlers of the API do) and the dashboard's own [`Settings`].
#[derive(Clone)]
pub struct Dashboard {
    pub app: AppState,
    pub settings: Arc<Settings>,
}

impl Dashboard {
    pub fn new(app: AppState, settings: Settings) -> Dashboard {
        Dashboard {
            app,
            settings: Arc::new(settings),
        }
    }
}

impl std::ops::Deref for Dashboard {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.app
    }
}

/// Every page of the dashboard, each with the headers of `page_headers`. The layers every
/// answer of the server shares are added by `startup`, with the API's routes.
pub fn router(state: Dashboard) -> Router {
    pages()
        .layer(axum::middleware::map_response(page_headers))
        .with_state(state)
}

fn pages() -> Router<Dashboard> {
    Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/", get(home))
        .route(
            "/dashboard/sign-in",
            get(auth_pages::sign_in_page).post(auth_pages::sign_in),
        )
        .route("/dashboard/sign-out", post(auth_pages::sign_out))
        .route("/dashboard/assets/htmx.min.js", get(htmx))
        .route("/dashboard/assets/style.css", get(style))
        .route("/dashboard/{mode}", get(mode_home))
        .route("/dashboard/{mode}/plans", get(catalog::page))
        .route(
            "/dashboard/{mode}/plans/new",
            get(catalog::new_plan).post(catalog::create_plan),
        )
        .route(
            "/dashboard/{mode}/plans/{id}/edit",
            get(catalog::edit_plan).post(catalog::save_plan),
        )
        .route(
            "/dashboard/{mode}/packs/new",
            get(catalog::new_pack).post(catalog::create_pack),
        )
        .route(
            "/dashboard/{mode}/packs/{id}/edit",
            get(catalog::edit_pack).post(catalog::save_pack),
        )
        .route(
            "/dashboard/{mode}/packs/{id}/archive",
            get(catalog::archive_page).post(catalog::archive),
        )
        .route("/dashboard/{mode}/users", get(users::page))
        .route(
            "/dashboard/{mode}/users/{user}/subscribe",
            post(users::subscribe),
        )
        .route("/dashboard/{mode}/users/{user}/cancel", post(users::cancel))
        .route("/dashboard/{mode}/users/{user}/grant", post(users::grant))
        .route("/dashboard/{mode}/users/{user}/revoke", post(users::revoke))
        .route("/dashboard/{mode}/webhooks", get(webhooks::page))
        .route("/dashboard/{mode}/webhooks/new", post(webhooks::create))
        .route(
            "/dashboard/{mode}/webhooks/{id}/enable",
            post(webhooks::enable),
        )
        .route(
            "/dashboard/{mode}/webhooks/{id}/disable",
            post(webhooks::disable),
        )
        .route(
            "/dashboard/{mode}/webhooks/{id}/delete",
            get(webhooks::delete_page).post(webhooks::delete),
        )
        .route(
            "/dashboard/{mode}/webhooks/{id}/resend",
            post(webhooks::resend),
        )
}

const HTMX_JS: &str = include_str!("assets/htmx.min.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Static files hold no data, so they are served without a session (the sign-in page needs them).
async fn htmx() -> Response {
    asset("text/javascript; charset=utf-8", HTMX_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn home(_: Signed) -> Redirect {
    Redirect::to("/dashboard/test/plans")
}

async fn mode_home(_: Signed, axum::extract::Path(mode): axum::extract::Path<String>) -> Response {
    match parse_mode(&mode) {
        Ok(mode) => Redirect::to(&format!("/dashboard/{}/plans", mode.as_str())).into_response(),
        Err(e) => e.into_response(),
    }
}

pub fn parse_mode(text: &str) -> Result<Mode, Problem> {
    match text {
        "test" => Ok(Mode::Test),
        "live" => Ok(Mode::Live),
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "No such page",
            "The dashboard has test and live pages only.",
        )),
    }
}

/// A refusal shown as a small page of its own.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, title: &str, message: impl Into<String>) -> Problem {
        Problem {
            status,
            title: title.to_owned(),
            message: message.into(),
        }
    }
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Problem {
        let title = match e.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::BAD_REQUEST => "Not accepted",
            StatusCode::TOO_MANY_REQUESTS => "Busy",
            _ => "Something went wrong",
        };
        Problem::new(e.status, title, e.message)
    }
}

impl From<crate::actors::EngineError> for Problem {
    fn from(e: crate::actors::EngineError) -> Problem {
        ApiError::from(e).into()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head { (head(&self.title)) }
                body {
                    main.narrow {
                        h1 { (self.title) }
                        p.error role="alert" { (self.message) }
                        p { a href="/dashboard" { "Back to the dashboard" } }
                    }
                }
            }
        };
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A request from a signed-in operator. Without a valid session a page is a redirect to the
/// sign-in page, and anything else is 401.
pub struct Signed(pub Session);

impl FromRequestParts<Dashboard> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Dashboard) -> Result<Signed, Response> {
        let session =
            auth::cookie(&parts.headers, auth::SESSION_COOKIE).and_then(|v| s.settings.session(v));
        match session {
            Some(session) => Ok(Signed(session)),
            None if parts.method == Method::GET || parts.method == Method::HEAD => {
                Err(Redirect::to("/dashboard/sign-in").into_response())
            }
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "This needs a signed-in session. Sign in and try again.",
            )
            .into_response()),
        }
    }
}

/// A submitted form of a signed-in operator whose CSRF token holds; 403 otherwise.
pub struct SignedForm {
    pub session: Session,
    pub fields: Fields,
}

impl FromRequest<Dashboard> for SignedForm {
    type Rejection = Response;

    async fn from_request(request: Request, s: &Dashboard) -> Result<SignedForm, Response> {
        let (mut parts, body) = request.into_parts();
        let Signed(session) = Signed::from_request_parts(&mut parts, s).await?;
        let request = Request::from_parts(parts, body);
        let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(request, s)
            .await
            .map_err(|e| {
                Problem::new(StatusCode::BAD_REQUEST, "Not a form", e.body_text()).into_response()
            })?;
        let fields = Fields(pairs);
        if !s
            .settings
            .keyring
            .csrf_holds(&session.nonce, fields.get("csrf"))
        {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "Form refused",
                "The form's security token is missing or out of date. Go back, reload the page \
                 and send it again.",
            )
            .into_response());
        }
        Ok(SignedForm { session, fields })
    }
}

/// What every signed-in page shows around its content.
pub struct Ctx {
    pub app: String,
    pub mode: Mode,
    pub csrf: String,
    /// The same page in the other mode, from after `/dashboard/{mode}/`.
    pub here: String,
    pub section: Section,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Catalog,
    Users,
    Webhooks,
}

impl Ctx {
    pub fn new(
        s: &Dashboard,
        session: &Session,
        mode: Mode,
        here: String,
        section: Section,
    ) -> Ctx {
        Ctx {
            app: session.app.clone(),
            mode,
            csrf: s.settings.keyring.csrf(&session.nonce),
            here,
            section,
        }
    }

    /// A path under this mode's pages.
    pub fn url(&self, rest: &str) -> String {
        format!("/dashboard/{}/{rest}", self.mode.as_str())
    }

    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }
}

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · vevee" }
        link rel="stylesheet" href="/dashboard/assets/style.css";
        script src="/dashboard/assets/htmx.min.js" defer {}
    }
}

/// A signed-in page: the header with the app, the sections, the mode switch and sign-out.
pub fn layout(ctx: &Ctx, title: &str, content: Markup) -> Markup {
    let test = ctx.mode == Mode::Test;
    let nav = |section: Section, href: String, text: &str| {
        html! {
            a href=(href) aria-current=[(ctx.section == section).then_some("page")] { (text) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body.test-mode[test].live-mode[!test] {
                @if test {
                    div.mode-banner role="note" {
                        strong { "TEST MODE" } " · test data only; live customers are not affected"
                    }
                } @else {
                    div.mode-banner.live role="note" {
                        strong { "LIVE MODE" } " · real customers' data"
                    }
                }
                header.top {
                    div.brand { "vevee" span.app { (ctx.app) } }
                    nav aria-label="Sections" {
                        (nav(Section::Catalog, ctx.url("plans"), "Plans & Credit Packs"))
                        (nav(Section::Users, ctx.url("users"), "Users"))
                        (nav(Section::Webhooks, ctx.url("webhooks"), "Webhooks"))
                    }
                    nav.mode-switch aria-label="Mode" {
                        span.label { "Mode:" }
                        @for mode in [Mode::Test, Mode::Live] {
                            a.mode.(mode.as_str())
                                href=(format!("/dashboard/{}/{}", mode.as_str(), ctx.here))
                                aria-current=[(ctx.mode == mode).then_some("true")]
                            {
                                @if mode == Mode::Test { "Test" } @else { "Live" }
                            }
                        }
                    }
                    form.sign-out method="post" action="/dashboard/sign-out" {
                        (ctx.csrf_field())
                        button type="submit" { "Sign out" }
                    }
                }
                main { (content) }
            }
        }
    }
}

/// A form's error for `key`, shown under its input.
pub fn field_error(errors: &forms::Errors, key: &str) -> Markup {
    html! {
        @if let Some(message) = errors.get(key) {
            p.field-error id=(format!("{}-error", key.replace('.', "-"))) role="alert" { (message) }
        }
    }
}

/// Thousands separated, so that large amounts read at a glance.
pub fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An instant as `2026-05-01 14:03 UTC`.
pub fn when(t: crate::engine::Ts) -> String {
    let text = t.rfc3339();
    match (text.get(..10), text.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => text,
    }
}

/// A bar of `part` out of `whole`, with its numbers as text beside it.
pub fn bar(part: u64, whole: u64, text: String) -> Markup {
    let percent = if whole == 0 {
        0
    } else {
        (u128::from(part.min(whole)) * 100 / u128::from(whole)) as u64
    };
    html! {
        div.bar-row {
            div.bar role="img" aria-label=(text) {
                div.fill style=(format!("width:{percent}%")) {}
            }
            span.bar-text { (text) }
        }
    }
}

pub fn raw(text: &str) -> PreEscaped<&str> {
    PreEscaped(text)
}

/// The sign-in and sign-out handlers.
mod auth_pages {
    use super::*;
    use axum::extract::State;

    fn signin_form(s: &Dashboard, nonce: &str, app: &str, error: Option<&str>) -> Markup {
        let csrf = s.settings.keyring.csrf(nonce);
        let apps: Vec<&str> = s.settings.passwords.apps().collect();
        html! {
            (DOCTYPE)
            html lang="en" {
                head { (head("Sign in")) }
                body {
                    main.narrow {
                        h1 { "Sign in to the vevee dashboard" }
                        @if apps.is_empty() {
                            p.error role="alert" {
                                "No app has a dashboard_password in the config, so nobody can \
                                 sign in. Add one to an [[apps]] entry and restart."
                            }
                        } @else {
                            form method="post" action="/dashboard/sign-in" {
                                input type="hidden" name="csrf" value=(csrf);
                                label for="app" { "App" }
                                @if s.settings.lists_apps {
                                    select id="app" name="app" {
                                        @for id in &apps {
                                            option value=(id) selected[*id == app] { (id) }
                                        }
                                    }
                                } @else {
                                    // Which apps exist is not told to whoever opens the page.
                                    input id="app" name="app" type="text" value=(app)
                                        autocomplete="username" required;
                                }
                                label for="password" { "Dashboard password" }
                                input id="password" name="password" type="password"
                                    autocomplete="current-password" required
                                    aria-describedby=[error.map(|_| "password-error")];
                                @if let Some(error) = error {
                                    p.field-error id="password-error" role="alert" { (error) }
                                }
                                button type="submit" { "Sign in" }
                            }
                        }
                    }
                }
            }
        }
    }

    fn with_signin_cookie(
        s: &Dashboard,
        status: StatusCode,
        nonce: &str,
        page: Markup,
    ) -> Response {
        let sealed = s
            .settings
            .keyring
            .seal_signin(nonce, auth::now_s() + auth::SIGNIN_TTL_S);
        let cookie = auth::set_cookie(auth::SIGNIN_COOKIE, &sealed, auth::SIGNIN_TTL_S);
        let mut response = (status, page).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            headers.insert(header::SET_COOKIE, cookie);
        }
        response
    }

    pub async fn sign_in_page(State(s): State<Dashboard>) -> Response {
        let nonce = auth::new_nonce();
        let page = signin_form(&s, &nonce, "", None);
        with_signin_cookie(&s, StatusCode::OK, &nonce, page)
    }

    /// The client's address as the connection reports it (no proxy header is trusted).
    fn client_address(parts: &axum::http::request::Parts) -> std::net::IpAddr {
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
    }

    pub async fn sign_in(State(s): State<Dashboard>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let client = client_address(&parts);
        let nonce = auth::cookie(&parts.headers, auth::SIGNIN_COOKIE)
            .and_then(|v| s.settings.keyring.open_signin(v, auth::now_s()));
        let request = Request::from_parts(parts, body);
        let Ok(axum::Form(pairs)) =
            axum::Form::<Vec<(String, String)>>::from_request(request, &s).await
        else {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "Not a form",
                "Send the sign-in form.",
            )
            .into_response();
        };
        let fields = Fields(pairs);
        let Some(nonce) = nonce.filter(|n| s.settings.keyring.csrf_holds(n, fields.get("csrf")))
        else {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "Form refused",
                "The sign-in form's security token is missing or out of date. Reload the sign-in \
                 page and try again.",
            )
            .into_response();
        };
        let app = fields.get("app");
        // The budget is taken before the password is looked at, so a throttled address learns
        // nothing, and it is per address, so nobody else waits.
        if let Err(wait_s) = s.settings.throttle.take(client, std::time::Instant::now()) {
            tracing::warn!(%client, "dashboard sign-in throttled");
            let page = signin_form(
                &s,
                &nonce,
                app,
                Some(&format!(
                    "Too many sign-in attempts from your address. Try again in {} minutes.",
                    wait_s.div_ceil(60)
                )),
            );
            let mut response = with_signin_cookie(&s, StatusCode::TOO_MANY_REQUESTS, &nonce, page);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait_s));
            return response;
        }
        if !s
            .settings
            .passwords
            .check(app, fields.get("password"))
            .await
        {
            let page = signin_form(
                &s,
                &nonce,
                app,
                Some("That password is not right for this app."),
            );
            return with_signin_cookie(&s, StatusCode::UNAUTHORIZED, &nonce, page);
        }
        s.settings.throttle.give_back(client);
        tracing::info!(app, "dashboard sign-in");
        let session = Session {
            app: app.to_owned(),
            nonce: auth::new_nonce(),
            expires_s: auth::now_s() + auth::SESSION_TTL_S,
        };
        let Some(password) = s.settings.passwords.digest(app) else {
            unreachable!("a password matched, so the app has one");
        };
        let cookie = auth::set_cookie(
            auth::SESSION_COOKIE,
            &s.settings.keyring.seal(&session, &password),
            auth::SESSION_TTL_S,
        );
        let mut response = Redirect::to("/dashboard/test/plans").into_response();
        let headers = response.headers_mut();
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, cookie);
        }
        let gone = auth::set_cookie(auth::SIGNIN_COOKIE, "", 0);
        if let Ok(gone) = HeaderValue::from_str(&gone) {
            headers.append(header::SET_COOKIE, gone);
        }
        response
    }

    /// Ends the session on the server, not only in this browser: a copy of the cookie stops
    /// working too.
    pub async fn sign_out(State(s): State<Dashboard>, form: SignedForm) -> Response {
        if let Err(error) = s.settings.signouts.end(&form.session, auth::now_s()) {
            tracing::error!(%error, "could not record a dashboard sign-out");
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not signed out",
                "The sign-out could not be saved, so the session still works. Try again.",
            )
            .into_response();
        }
        tracing::info!(app = %form.session.app, "dashboard sign-out");
        let mut response = Redirect::to("/dashboard/sign-in").into_response();
        if let Ok(gone) = HeaderValue::from_str(&auth::set_cookie(auth::SESSION_COOKIE, "", 0)) {
            response.headers_mut().insert(header::SET_COOKIE, gone);
        }
        response
    }
}

/// `text` as a query-string value: RFC 3986's unreserved characters as they are, every other
/// byte percent-encoded.
fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1000), "1,000");
        assert_eq!(number(9_007_199_254_740_991), "9,007,199,254,740,991");
    }

    #[test]
    fn only_test_and_live_are_modes() {
        assert_eq!(parse_mode("test").unwrap(), Mode::Test);
        assert_eq!(parse_mode("live").unwrap(), Mode::Live);
        assert_eq!(
            parse_mode("Live").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn instants_read_as_day_and_minute() {
        assert_eq!(when(crate::engine::Ts(0)), "1970-01-01 00:00 UTC");
    }
}
