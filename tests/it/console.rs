//! The console (SPEC §13): sessions, the CSRF token of every form, the
//! scopes of the key signed in with, escaping and the Content Security
//! Policy over plain HTTP; and a person's path through it in a real
//! headless Chromium ([`Browser`]).

use reqwest::StatusCode;
use serde_json::{Value, json};

use fantoccini::Locator;

use crate::util::console::{Browser, Console, set_cookies};
use crate::util::{
    ADMIN, Behaviour, SAFETY, TREEZ_EXAMPLE, TestApp, TestReceiver, VAGARO_EXAMPLE, send, set, treez, vagaro, without,
};

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
async fn customers_are_found_by_phone_email_name_and_id_and_shown_escaped() {
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

    // Its name's words: `<script>alert(1)</script>` is named "script", "alert" and "1".
    let by_name = console.get("/console/customers?q=Alert").await;
    assert!(
        by_name.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        by_name.body
    );
    let by_other_name = console.get("/console/customers?q=alert+lovelace").await;
    assert!(
        by_other_name.body.contains("No customer matches"),
        "{}",
        by_other_name.body
    );

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
    let heading = c.wait().for_element(fantoccini::Locator::Css("h1")).await.unwrap();
    assert!(heading.text().await.unwrap().starts_with(XSS));
    assert!(c.get_alert_text().await.is_err(), "no dialog opened");
    browser.screenshots("customer").await;
    c.goto(&app.url("/console")).await.unwrap();
    browser.screenshots("overview").await;
    browser.close().await;
}

/// A Treez delivery its source cannot map (no account): quarantined. Its
/// event id.
async fn quarantined(app: &TestApp, id: &str) -> String {
    let body = without(treez("unused", id, "2026-04-24T18:38:21Z"), "/dispensary_short_name");
    let (status, answer) = app.deliver_json("treez", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "quarantined");
    answer["eventId"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_dead_messages_beside_the_backlog() {
    let app = TestApp::builder().delivery_schedule(&["10ms"]).spawn().await;
    let receiver = TestReceiver::start(Behaviour::FailFirst {
        times: usize::MAX,
        status: 500,
    })
    .await;
    let (sub, _) = app.subscribe_url(&receiver.url()).await;
    let console = Console::sign_in(&app, ADMIN).await;
    let card = |n: &str| format!(r#"<span class="value">{n}</span><span class="label">Dead messages</span>"#);
    let overview = console.get("/console").await;
    assert!(overview.body.contains(&card("0")), "{}", overview.body);

    customer_named(&app, "D1", "Dee").await;
    app.wait_all(&sub, 1, "dead").await;
    let overview = console.get("/console").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(overview.body.contains(&card("1")), "{}", overview.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_sees_no_action_and_its_forced_posts_are_refused() {
    let app = TestApp::spawn().await;
    let id = customer_named(&app, "C1", "Ann").await;
    let event = quarantined(&app, "Q1").await;
    let (_, read) = create_key(&app, &["read"]).await;
    let console = Console::sign_in(&app, &read).await;

    let page = console.get(&format!("/console/customers/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("Erase this customer"), "no erase button");
    let overview = console.get("/console").await;
    assert!(
        !overview.body.contains(r#"href="/console/keys""#),
        "no keys page in the navigation"
    );
    assert!(
        !console
            .get("/console/quarantine")
            .await
            .body
            .contains("Reprocess this group")
    );

    let forced = [
        (
            format!("/console/customers/{id}/erase"),
            vec![("confirm", id.as_str())],
            "erase",
        ),
        (format!("/console/deliveries/{event}/reprocess"), vec![], "write"),
        (
            "/console/keys".to_owned(),
            vec![("name", "x"), ("scopes", "admin")],
            "admin",
        ),
    ];
    for (path, fields, scope) in forced {
        let page = console.post(&path, &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.body);
        assert!(page.body.contains(&format!("lacks the {scope} scope")), "{}", page.body);
    }
    assert_eq!(console.get("/console/keys").await.status, StatusCode::FORBIDDEN);
    // Nothing changed.
    assert_eq!(app.customer(&id).await["firstName"], "Ann");
    assert_eq!(app.event(&event).await["status"], "quarantined");
    let (_, keys) = app.get("/api/v1/keys").await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");

    // An erase key may erase, and only after typing the id.
    let (_, erase) = create_key(&app, &["read", "erase"]).await;
    let console = Console::sign_in(&app, &erase).await;
    let page = console.get(&format!("/console/customers/{id}")).await;
    assert!(page.body.contains("Erase this customer"));
    let wrong = console
        .post(
            &format!("/console/customers/{id}/erase"),
            &[("confirm", "vagaro:other")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(wrong.body.contains("nothing was erased"), "{}", wrong.body);
    assert_eq!(app.customer(&id).await["firstName"], "Ann");
    let erased = console
        .post(&format!("/console/customers/{id}/erase"), &[("confirm", &id)])
        .await;
    assert_eq!(erased.status, StatusCode::SEE_OTHER, "{}", erased.body);
    let (status, _) = app.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_said_on_the_page_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let console = Console::sign_in(&app, ADMIN).await;
    let cases = [
        ("/console/deliveries?status=lost", StatusCode::OK, "There is no status"),
        ("/console/deliveries?cursor=x", StatusCode::OK, "page link is broken"),
        ("/console/deliveries/evt_nobody", StatusCode::NOT_FOUND, "no event"),
        (
            "/console/subscriptions/sub_nobody",
            StatusCode::NOT_FOUND,
            "no subscription",
        ),
        ("/console/customers/a%00b", StatusCode::NOT_FOUND, "NUL"),
        ("/console/nowhere", StatusCode::NOT_FOUND, "no such page"),
    ];
    for (path, status, says) in cases {
        let page = console.get(path).await;
        assert_eq!(page.status, status, "{path}: {}", page.body);
        assert!(page.body.contains(says), "{path}: {}", page.body);
    }
    type Post<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let posts: [Post; 5] = [
        ("/console/subscriptions", vec![("url", "ftp://example.com")], "url"),
        ("/console/keys", vec![("name", "no scopes")], "scopes"),
        (
            "/console/messages/msg_nobody/retry",
            vec![("subscription", "sub_x")],
            "no message",
        ),
        (
            "/console/subscriptions/sub_nobody/replay",
            vec![("since", "yesterday")],
            "not a time",
        ),
        (
            "/console/sources/vagaro/enabled",
            vec![("enabled", "false")],
            "configuration file",
        ),
    ];
    for (path, fields, says) in posts {
        let page = console.post(path, &fields).await;
        assert!(page.status.is_client_error(), "{path}: {}", page.status);
        assert!(page.body.contains(says), "{path}: {}", page.body);
    }
    let (_, subscriptions) = app.get("/api/v1/subscriptions").await;
    assert_eq!(subscriptions["data"], json!([]));
    let (_, keys) = app.get("/api/v1/keys").await;
    assert_eq!(keys["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_restart_and_a_fixed_quarantine_is_reprocessed_as_a_group() {
    let app = TestApp::spawn().await;
    let first = quarantined(&app, "Q1").await;
    quarantined(&app, "Q2").await;
    let console = Console::sign_in(&app, ADMIN).await;
    let page = console.get("/console/quarantine").await;
    assert!(page.body.contains("account"), "the reason: {}", page.body);

    let dir = app.dir.clone();
    let temp = app.stop().await;
    let app = TestApp::builder()
        .source_setting("treez", "account", "shop")
        .spawn_in(&dir)
        .await;
    let console = console.at(&app);
    let page = console.get("/console/quarantine").await;
    assert_eq!(page.status, StatusCode::OK, "the session outlived the restart");
    let reason = page
        .body
        .split_once(r#"name="reason" value=""#)
        .unwrap()
        .1
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let done = console
        .post("/console/quarantine/reprocess", &[("reason", &reason)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/console/quarantine?done=reprocessed&n=2");
    let page = console.get(done.location()).await;
    assert!(page.body.contains("Reprocessed 2 deliveries."), "{}", page.body);
    assert!(page.body.contains("Nothing is quarantined."), "{}", page.body);
    assert_eq!(app.event(&first).await["status"], "accepted");
    let again = console
        .post("/console/quarantine/reprocess", &[("reason", &reason)])
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    app.stop().await;
    drop(temp);
}

/// An operator's day in a real browser: subscribe, take the platforms'
/// examples, find a customer by phone and read its history, reprocess a
/// quarantined delivery, retry a dead message, erase a customer after
/// typing its id; a screenshot of every page at 1440 and 390 pixels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_an_operator_works_through_every_page() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::builder().delivery_schedule(&["10ms"]).spawn().await;
    let receiver = TestReceiver::start(Behaviour::FailFirst {
        times: usize::MAX,
        status: 500,
    })
    .await;
    let c = &browser.client;
    let url = |path: &str| reqwest::Url::parse(&app.url(path)).unwrap();
    let click = |css: &'static str| async move {
        c.wait()
            .for_element(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    };

    browser.sign_in(&app, ADMIN).await;

    // A subscription, its secret shown once.
    c.goto(&app.url("/console/subscriptions")).await.unwrap();
    c.find(Locator::Id("url"))
        .await
        .unwrap()
        .send_keys(&receiver.url())
        .await
        .unwrap();
    browser.screenshots("subscriptions-empty").await;
    click("form[action='/console/subscriptions'] button[type=submit]").await;
    let secret = c
        .wait()
        .for_element(Locator::Id("secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    browser.screenshots("subscription-created").await;
    let (_, subscriptions) = app.get("/api/v1/subscriptions").await;
    let sub = subscriptions["data"][0]["id"].as_str().unwrap().to_owned();

    // The platforms' examples, and one delivery that cannot be mapped.
    for (source, body) in [("vagaro", VAGARO_EXAMPLE), ("treez", TREEZ_EXAMPLE)] {
        let (status, answer) = app.deliver(source, body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let event = quarantined(&app, "Q1").await;

    // The customer by phone, and its history.
    c.goto(&app.url("/console/customers")).await.unwrap();
    c.find(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys("(914) 555-1212")
        .await
        .unwrap();
    click("form.search button").await;
    c.wait()
        .for_url(&url("/console/customers?q=%28914%29+555-1212"))
        .await
        .unwrap();
    browser.screenshots("customers-found").await;
    click("table.customers td a").await;
    let id = "vagaro:4CB231BAD3B26B7DE53FE5832A54A7B1";
    c.wait()
        .for_url(&url(&format!("/console/customers/{}", id.replace(':', "%3A"))))
        .await
        .unwrap();
    let timeline = c
        .wait()
        .for_element(Locator::Css("ol.timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        timeline.contains("created · applied") && timeline.contains("firstName: — → Johnny"),
        "{timeline}"
    );
    browser.screenshots("customer-history").await;

    // The quarantined delivery, reprocessed from its page.
    c.goto(&app.url("/console/quarantine")).await.unwrap();
    browser.screenshots("quarantine").await;
    c.goto(&app.url("/console/deliveries")).await.unwrap();
    browser.screenshots("deliveries").await;
    c.goto(&app.url(&format!("/console/deliveries/{event}"))).await.unwrap();
    browser.screenshots("delivery").await;
    click("form.actions button[type=submit]").await;
    c.wait()
        .for_url(&url(&format!("/console/deliveries/{event}?done=reprocessed&n=1")))
        .await
        .unwrap();
    let notice = c
        .find(Locator::Css("p.notice.good"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(notice, "Reprocessed 1 delivery.");

    // A dead message, retried once the subscriber is back.
    let dead = app.wait_all(&sub, 2, "dead").await;
    receiver.set(Behaviour::Healthy);
    c.goto(&app.url(&format!("/console/subscriptions/{sub}?status=dead")))
        .await
        .unwrap();
    browser.screenshots("subscription-dead").await;
    click("article.message form button").await;
    c.wait()
        .for_url(&url(&format!("/console/subscriptions/{sub}?done=retried")))
        .await
        .unwrap();
    let retried = dead[0]["id"].as_str().unwrap();
    app.wait_for_messages(&sub, "the retried message delivered", |messages| {
        messages
            .iter()
            .any(|m| m["id"] == retried && m["status"] == "delivered")
    })
    .await;

    // Erasure, once the id is typed: the button waits for it.
    c.goto(&app.url(&format!("/console/customers/{id}"))).await.unwrap();
    let erase = c.find(Locator::Css("button.danger")).await.unwrap();
    assert!(!erase.is_enabled().await.unwrap(), "disabled until the id is typed");
    c.find(Locator::Id("confirm"))
        .await
        .unwrap()
        .send_keys(id)
        .await
        .unwrap();
    assert!(erase.is_enabled().await.unwrap());
    erase.click().await.unwrap();
    c.wait().for_url(&url("/console/customers?done=erased")).await.unwrap();
    let (status, _) = app.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A source of the API: a token added (shown once), then the keys.
    let (status, _) = send(
        app.client
            .post(app.url("/api/v1/sources"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "shop", "kind": "treez", "account": "shop"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    c.goto(&app.url("/console/sources")).await.unwrap();
    browser.screenshots("sources").await;
    click("form[action='/console/sources/shop/tokens'] button").await;
    let token = c
        .wait()
        .for_element(Locator::Id("token"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(token.starts_with("cst_"), "{token}");
    browser.screenshots("token-created").await;
    c.goto(&app.url("/console/keys")).await.unwrap();
    c.find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys("reports")
        .await
        .unwrap();
    click("form[action='/console/keys'] button[type=submit]").await;
    let key = c
        .wait()
        .for_element(Locator::Id("key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(key.starts_with("ck_"), "{key}");
    browser.screenshots("key-created").await;

    for (name, path) in [
        ("overview", "/console"),
        ("subscriptions", "/console/subscriptions"),
        ("keys", "/console/keys"),
    ] {
        c.goto(&app.url(path)).await.unwrap();
        browser.screenshots(name).await;
    }
    assert!(c.get_alert_text().await.is_err(), "no dialog opened");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_and_keys_change_through_the_console_and_secrets_show_once() {
    let app = TestApp::spawn().await;
    let (status, created) = send(
        app.client
            .post(app.url("/api/v1/sources"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "shop", "kind": "treez", "account": "shop"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first = created["tokens"][0]["id"].as_str().unwrap().to_owned();
    let console = Console::sign_in(&app, ADMIN).await;

    let rotated = console.post("/console/sources/shop/tokens", &[]).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let token = rotated
        .body
        .split_once(r#"id="token">"#)
        .unwrap()
        .1
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(token.starts_with("cst_"), "{token}");
    let listed = console.get("/console/sources").await;
    assert!(!listed.body.contains(&token), "a token is shown once");
    let (status, answer) = send(
        app.client
            .post(app.url("/webhooks/shop"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "the new token works: {answer}");

    let revoked = console
        .post(&format!("/console/sources/shop/tokens/{first}/revoke"), &[])
        .await;
    assert_eq!(revoked.location(), "/console/sources?done=revoked");
    let paused = console
        .post("/console/sources/shop/enabled", &[("enabled", "false")])
        .await;
    assert_eq!(paused.location(), "/console/sources?done=paused");
    let (_, source) = app.get("/api/v1/sources/shop").await;
    assert_eq!(source["enabled"], false);
    assert_eq!(source["tokens"].as_array().unwrap().len(), 1, "{source}");

    let made = console
        .post(
            "/console/keys",
            &[("name", "reports"), ("scopes", "read"), ("scopes", "write")],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let key = made
        .body
        .split_once(r#"id="key">"#)
        .unwrap()
        .1
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(key.starts_with("ck_"));
    let (status, _) = send(app.client.get(app.url("/api/v1/customers")).bearer_auth(&key)).await;
    assert_eq!(status, StatusCode::OK, "the key works");
    let (_, keys) = app.get("/api/v1/keys").await;
    let id = keys["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(keys["data"][0]["scopes"], json!(["read", "write"]));
    let page = console.get("/console/keys").await;
    assert!(page.body.contains("reports") && !page.body.contains(&key));
    let revoked = console.post(&format!("/console/keys/{id}/revoke"), &[]).await;
    assert_eq!(revoked.location(), "/console/keys?done=key-revoked");
    let (status, _) = send(app.client.get(app.url("/api/v1/customers")).bearer_auth(&key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A Clientele envelope for Ada `last_name`, customer `id`, born `born`,
/// living at `street`.
fn ada(id: &str, last_name: &str, street: (&str, &str), email: &str, born: &str) -> Value {
    let (street, postcode) = street;
    json!({"type": "customer", "action": "updated", "payload": {
        "customerId": id, "updatedAt": "2024-01-01T00:00:00Z",
        "firstName": "Ada", "lastName": last_name, "email": email, "birthDate": born,
        "addresses": [{"kind": "home", "street1": street, "postalCode": postcode}]}})
}

/// Waits until `done` holds of the API's answer at `path`.
async fn wait_for(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + SAFETY;
    loop {
        let (status, answer) = app.get(path).await;
        if status == StatusCode::OK && done(&answer) {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "{path}: {answer}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn members(person: &Value) -> usize {
    person["customerIds"].as_array().map_or(0, Vec::len)
}

/// Two customers the model joins into one person (that person, from the
/// API), and two it asks an operator about (the one open review's id).
async fn a_person_and_a_review(app: &TestApp) -> (Value, String) {
    const STANLEY: (&str, &str) = ("8 Stanley Street", "2000");
    const HARBOUR: (&str, &str) = ("41 Harbour Road", "3141");
    for body in [
        ada("a1", "Quillfeather", STANLEY, "ada.q@mail.org", "1985-03-14"),
        ada("a2", "Quillfeather", STANLEY, "ada.q@mail.org", "1985-03-14"),
        // Everything agrees but the birth dates: the model asks an
        // operator. Another name and street than the first pair's, so that
        // neither joins it whatever order the resolver sees them in.
        ada("r1", "Marchbanks", HARBOUR, "review@mail.org", "1961-11-25"),
        ada("r2", "Marchbanks", HARBOUR, "review@mail.org", "1985-03-14"),
    ] {
        let (status, answer) = app.deliver_json("clientele", &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let person = wait_for(app, "/api/v1/customers/clientele:a1/person", |p| members(p) == 2).await;
    let reviews = wait_for(app, "/api/v1/persons/reviews?status=open", |r| {
        r["data"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    assert_eq!(reviews["data"].as_array().map(Vec::len), Some(1), "{reviews}");
    (person, reviews["data"][0]["id"].as_str().unwrap().to_owned())
}

/// In a browser: the review queue, a person's page, and a review linked
/// with its button; screenshots of the persons pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_an_operator_reads_a_person_and_links_a_review() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (person, _) = a_person_and_a_review(&app).await;
    let c = &browser.client;
    browser.sign_in(&app, ADMIN).await;

    c.goto(&app.url(&format!("/console/persons/{}", person["id"].as_str().unwrap())))
        .await
        .unwrap();
    let heading = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(
        heading.contains("Quillfeather") && heading.contains("clientele:a2"),
        "{heading}"
    );
    browser.screenshots("person").await;

    c.goto(&app.url("/console/persons")).await.unwrap();
    browser.screenshots("persons").await;
    c.find(Locator::Css("form.actions button[value=link]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("p.notice")).await.unwrap();
    browser.screenshots("review-linked").await;
    let linked = wait_for(&app, "/api/v1/customers/clientele:r1/person", |p| members(p) == 2).await;
    assert!(linked["customerIds"].to_string().contains("clientele:r2"), "{linked}");
    assert!(c.get_alert_text().await.is_err(), "no dialog opened");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persons_show_on_customers_and_an_operator_decides_a_review() {
    let app = TestApp::spawn().await;
    let (person, review) = a_person_and_a_review(&app).await;
    let person_id = person["id"].as_str().unwrap().to_owned();

    let admin = Console::sign_in(&app, ADMIN).await;
    let customer = admin.get("/console/customers/clientele:a1").await;
    assert_eq!(customer.status, StatusCode::OK);
    assert!(
        customer
            .body
            .contains(&format!(r#"href="/console/persons/{person_id}""#)),
        "{}",
        customer.body
    );
    assert!(customer.body.contains(r#"href="/console/customers/clientele%3Aa2""#));

    let page = admin.get(&format!("/console/persons/{person_id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Quillfeather"), "{}", page.body);
    assert!(page.body.contains("clientele:a2"));
    assert!(page.body.contains("decided by"));
    assert!(
        page.body.contains("<td>email</td>"),
        "the link's evidence: {}",
        page.body
    );
    let unknown = admin.get("/console/persons/per_unknown").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("no person"), "{}", unknown.body);

    let queue = admin.get("/console/persons").await;
    assert!(queue.body.contains(r#"href="/console/persons""#), "in the navigation");
    assert!(queue.body.contains(&review) && queue.body.contains("clientele:r1"));
    assert!(queue.body.contains("Link: one person"));
    assert!(queue.body.contains(r#"action="/console/persons/decisions""#));

    // A read key sees the queue, no decision, and its forced POSTs are refused.
    let (_, read) = create_key(&app, &["read"]).await;
    let reader = Console::sign_in(&app, &read).await;
    let queue = reader.get("/console/persons").await;
    assert_eq!(queue.status, StatusCode::OK);
    assert!(queue.body.contains(&review));
    assert!(!queue.body.contains("Link: one person") && !queue.body.contains("/console/persons/decisions"));
    let forced = [
        (format!("/console/persons/reviews/{review}"), vec![("decision", "link")]),
        (
            "/console/persons/decisions".to_owned(),
            vec![("a", "clientele:a1"), ("b", "clientele:r1"), ("decision", "link")],
        ),
    ];
    for (path, fields) in forced {
        let page = reader.post(&path, &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.body);
        assert!(page.body.contains("lacks the write scope"), "{}", page.body);
    }
    let (_, open) = app.get("/api/v1/persons/reviews?status=open").await;
    assert_eq!(open["data"][0]["id"], review.as_str(), "nothing decided");
    // Without the CSRF token, nothing either.
    let forged = admin
        .post_raw(&format!("/console/persons/reviews/{review}"), &[("decision", "link")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let unknown = admin
        .post(
            "/console/persons/decisions",
            &[("a", "clientele:a1"), ("b", "clientele:nobody"), ("decision", "link")],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("no customer"), "{}", unknown.body);

    let decided = admin
        .post(&format!("/console/persons/reviews/{review}"), &[("decision", "link")])
        .await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.body);
    assert_eq!(decided.location(), "/console/persons?done=decided");
    let joined = wait_for(&app, "/api/v1/customers/clientele:r1/person", |p| members(p) == 2).await;
    assert_eq!(joined["links"][0]["decidedBy"], "operator");
    let queue = admin.get("/console/persons?done=decided").await;
    assert!(queue.body.contains("The decision is kept"));
    assert!(!queue.body.contains(&review), "decided: out of the queue");
    let (_, audit) = app.get("/api/v1/audit").await;
    assert_eq!(audit["data"][0]["action"], "person.link", "{audit}");
}
