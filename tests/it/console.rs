//! The console (SPEC §13): sessions, the CSRF token of every form, the
//! scopes of the key signed in with, escaping and the Content Security
//! Policy over plain HTTP; and a person's path through it in a real
//! headless Chromium ([`Browser`]).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::console::{Browser, Console, set_cookies};
use crate::util::{ADMIN, TestApp, send, set, vagaro};

const XSS: &str = "<script>alert(1)</script>";

/// Creates an API key with `scopes`; its id and the key.
async fn create_key(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let (status, created) = send(
        app.client
            .post(app.url("/api/v1/keys"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "console test", "scopes": scopes})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

/// Posts the Vagaro example for customer `id` with first name `first`;
/// the customer's id.
async fn customer_named(app: &TestApp, id: &str, first: &str) -> String {
    let body = set(
        vagaro(&format!("evt-{id}"), id, "2024-03-15T00:00:00Z"),
        "/payload/customerFirstName",
        Value::from(first),
    );
    let (status, answer) = app.deliver("vagaro", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["customerId"].as_str().expect("a customer id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_every_page_redirects_to_sign_in() {
    let app = TestApp::spawn().await;
    let console = Console::anonymous(&app);
    for path in ["/console", "/console/customers?q=a", "/console/customers/vagaro:1"] {
        let page = console.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            page.location().starts_with("/console/sign-in?next=%2Fconsole"),
            "{path}: {}",
            page.location()
        );
    }
    let page = console.post_raw("/console/sign-out", &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/console/sign-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_signs_nobody_in() {
    let app = TestApp::spawn().await;
    let console = Console::anonymous(&app);
    let page = console.try_sign_in("not-a-key").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("not an API key"), "{}", page.body);
    assert!(
        set_cookies(&page.headers)
            .iter()
            .all(|c| !c.starts_with("clientele_session=")),
        "no session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_needs_the_token_of_its_own_form() {
    let app = TestApp::spawn().await;
    let console = Console::anonymous(&app);
    let page = console
        .post_raw("/console/sign-in", &[("key", ADMIN), ("csrf", "forged")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        set_cookies(&page.headers)
            .iter()
            .all(|c| !c.starts_with("clientele_session="))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_http_only_and_strict_and_secure_behind_tls() {
    let app = TestApp::builder().http("trust_forwarded_proto", true).spawn().await;
    let console = Console::anonymous(&app);
    let signed = console.try_sign_in(ADMIN).await;
    let cookie = set_cookies(&signed.headers)
        .into_iter()
        .find(|c| c.starts_with("clientele_session="))
        .expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(!cookie.contains(ADMIN), "the cookie holds a session id, never the key");

    let form = reqwest::Client::new()
        .get(app.url("/console/sign-in"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(set_cookies(form.headers()).iter().all(|c| c.contains("; Secure")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_ends_the_session_on_the_server() {
    let app = TestApp::spawn().await;
    let console = Console::sign_in(&app, ADMIN).await;
    let out = console.post("/console/sign-out", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    // The old cookie, replayed, finds no session.
    let page = console.get("/console").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_post_without_the_csrf_token_is_refused() {
    let app = TestApp::spawn().await;
    let console = Console::sign_in(&app, ADMIN).await;
    for fields in [vec![], vec![("csrf", "forged")]] {
        let page = console.post_raw("/console/sign-out", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(page.body.contains("Nothing was changed"), "{}", page.body);
    }
    assert_eq!(console.get("/console").await.status, StatusCode::OK, "still signed in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_ends_its_sessions() {
    let app = TestApp::spawn().await;
    let (id, key) = create_key(&app, &["read"]).await;
    let console = Console::sign_in(&app, &key).await;
    let (status, _) = send(
        app.client
            .delete(app.url(&format!("/api/v1/keys/{id}")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(console.get("/console").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_forbids_other_origins_and_inline_script() {
    let app = TestApp::spawn().await;
    let id = customer_named(&app, "C1", "Ann").await;
    let console = Console::sign_in(&app, ADMIN).await;
    let anonymous = Console::anonymous(&app);
    let pages = [
        console.get("/console").await,
        console.get("/console/customers").await,
        console.get(&format!("/console/customers/{id}")).await,
        console.get("/console/customers/nobody").await,
        anonymous.get("/console/sign-in").await,
        anonymous.get("/console/static/console.css").await,
    ];
    for page in pages {
        let policy = page.headers["content-security-policy"].to_str().unwrap();
        assert!(policy.starts_with("default-src 'self'"), "{policy}");
        assert!(!page.body.contains("<script>"), "no inline script");
        assert!(!page.body.contains(" style="), "no inline style");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_are_found_by_phone_email_and_id_and_shown_escaped() {
    let app = TestApp::spawn().await;
    let id = customer_named(&app, "C1", XSS).await;
    let console = Console::sign_in(&app, ADMIN).await;

    let by_phone = console.get("/console/customers?q=%28914%29+555-1212").await;
    assert_eq!(by_phone.status, StatusCode::OK);
    assert!(
        by_phone.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        by_phone.body
    );
    assert!(!by_phone.body.contains(XSS));

    let by_email = console.get("/console/customers?q=nobody%40example.com").await;
    assert!(by_email.body.contains("No customer matches"), "{}", by_email.body);

    let by_id = console.get(&format!("/console/customers?q={id}")).await;
    assert_eq!(by_id.status, StatusCode::SEE_OTHER);
    assert_eq!(
        by_id.location(),
        format!("/console/customers/{}", id.replace(':', "%3A"))
    );

    let detail = console.get(by_id.location()).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(!detail.body.contains(XSS));
    assert!(detail.body.contains("created"), "the history's first entry");
    assert!(detail.body.contains("firstName"), "the fields it set");

    let unknown = console.get("/console/customers?q=vagaro%3Anobody").await;
    assert_eq!(unknown.status, StatusCode::OK);
    assert!(unknown.body.contains("No customer has the id"), "{}", unknown.body);
    let missing = console.get("/console/customers/vagaro%3Anobody").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("no customer"), "{}", missing.body);
    let broken = console.get("/console/customers?q=a&cursor=x").await;
    assert!(broken.body.contains("page link is broken"), "{}", broken.body);
}

/// A person signs in, finds a customer by phone, and reads a hostile name
/// as text: no dialog opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_customer_is_found_by_phone_and_a_script_name_is_text() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let id = customer_named(&app, "C1", XSS).await;
    let c = &browser.client;
    c.goto(&app.url("/console/customers")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/console/sign-in"));
    browser.screenshots("sign-in").await;
    c.find(fantoccini::Locator::Id("key"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    c.find(fantoccini::Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let url = |path: &str| reqwest::Url::parse(&app.url(path)).unwrap();
    c.wait().for_url(&url("/console/customers")).await.unwrap();
    c.find(fantoccini::Locator::Id("q"))
        .await
        .unwrap()
        .send_keys("914 555 1212")
        .await
        .unwrap();
    c.find(fantoccini::Locator::Css("form.search button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_url(&url("/console/customers?q=914+555+1212"))
        .await
        .unwrap();
    let link = c.find(fantoccini::Locator::Css("table.customers td a")).await.unwrap();
    assert_eq!(link.text().await.unwrap(), format!("{XSS} Smith"));
    browser.screenshots("customers").await;
    link.click().await.unwrap();
    c.wait()
        .for_url(&url(&format!("/console/customers/{}", id.replace(':', "%3A"))))
        .await
        .unwrap();
    let heading = c.find(fantoccini::Locator::Css("h1")).await.unwrap();
    assert!(heading.text().await.unwrap().starts_with(XSS));
    assert!(c.get_alert_text().await.is_err(), "no dialog opened");
    browser.screenshots("customer").await;
    c.goto(&app.url("/console")).await.unwrap();
    browser.screenshots("overview").await;
    browser.close().await;
}
