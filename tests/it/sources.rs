//! Sources, tokens and stats as data (SPEC §9): created, changed, paused
//! and deleted through the API, in effect from the next request without a
//! restart (on Postgres, on every instance within 2 s), tokens rotated
//! and revoked, Standard Webhooks senders verified.

use std::time::{Duration, Instant};

use crate::util::{ADMIN, SAFETY, TestApp, TestStore, error_code, send, treez};
use clientele::outbound::signing;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const T1: &str = "2026-04-01 10:00:00.000";
const T2: &str = "2026-04-02 10:00:00.000";

impl Admin for TestApp {
    fn app(&self) -> &TestApp {
        self
    }
}

/// Admin calls with a JSON body.
trait Admin {
    fn app(&self) -> &TestApp;

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let app = self.app();
        let mut request = app.client.request(method, app.url(path)).bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    /// Creates a source; its first token.
    async fn create_source(&self, body: Value) -> String {
        let (status, created) = self.call(Method::POST, "/api/v1/sources", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["token"].as_str().expect("a token").to_owned()
    }
}

/// Posts a Treez body to `source` with `token` as bearer.
async fn deliver(app: &TestApp, source: &str, token: &str, body: &Value) -> (StatusCode, Value) {
    send(app.webhook(source).bearer_auth(token).json(body)).await
}

/// Polls `check` until it holds (the stats are flushed in the background,
/// other instances follow within their poll): never a fixed sleep.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + SAFETY;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {SAFETY:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_created_through_the_api_takes_deliveries_at_once_with_its_token() {
    let app = TestApp::spawn().await;
    let token = app
        .create_source(
            json!({"name": "shop-1", "kind": "treez", "defaultCountry": "US", "timezone": "America/Los_Angeles"}),
        )
        .await;
    assert!(token.starts_with("cst_"), "a generated token");
    let (status, answer) = deliver(&app, "shop-1", &token, &treez("acme", "1", T1)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["customerId"], "shop-1:acme:1");
    let (status, _) = deliver(&app, "shop-1", "cst_wrong", &treez("acme", "1", T1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, source) = app.call(Method::GET, "/api/v1/sources/shop-1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(source["managed"], "api");
    assert_eq!(source["enabled"], true);
    assert_eq!(source["kind"], "treez");
    assert_eq!(source["tokens"].as_array().unwrap().len(), 1);
    assert!(!source.to_string().contains(&token), "never the token: {source}");
    // The counts are flushed in the background.
    eventually("the stats count the deliveries", || async {
        let (_, source) = app.call(Method::GET, "/api/v1/sources/shop-1", None).await;
        source["stats"]["last24h"]["accepted"] == 1
            && source["stats"]["last24h"]["rejected"] == 1
            && source["stats"]["lastDeliveryAt"].is_string()
            && source["tokens"][0]["lastUsedAt"].is_string()
    })
    .await;

    let (status, list) = app.call(Method::GET, "/api/v1/sources", None).await;
    assert_eq!(status, StatusCode::OK);
    let managed: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["managed"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(managed.contains(&("shop-1".into(), "api".into())), "{managed:?}");
    assert!(managed.contains(&("treez".into(), "config".into())), "{managed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_naming_the_field_and_a_taken_name_is_a_conflict() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"name": "a/b", "kind": "treez"}), "name"),
        (json!({"name": "s", "kind": "square"}), "kind"),
        (
            json!({"name": "s", "kind": "treez", "defaultCountry": "XX"}),
            "defaultCountry",
        ),
        (
            json!({"name": "s", "kind": "treez", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
        (
            json!({"name": "s", "kind": "treez", "allowIps": ["10.0.0.0/33"]}),
            "allowIps",
        ),
        (json!({"name": "s", "kind": "treez", "rateLimit": 0}), "rateLimit"),
        (json!({"name": "s", "kind": "treez", "rateLimit": "fast"}), "rateLimit"),
        (
            json!({"name": "s", "kind": "treez", "verify": "standard-webhooks"}),
            "verify",
        ),
        (json!({"name": "s", "kind": "treez", "colour": "red"}), "colour"),
    ];
    for (body, field) in cases {
        let (status, answer) = app.call(Method::POST, "/api/v1/sources", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    for taken in ["treez", "shop"] {
        if taken == "shop" {
            app.create_source(json!({"name": "shop", "kind": "treez"})).await;
        }
        let (status, answer) = app
            .call(
                Method::POST,
                "/api/v1/sources",
                Some(json!({"name": taken, "kind": "vagaro"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(error_code(&answer), "name_taken");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_source_is_listed_and_read_only() {
    let app = TestApp::spawn().await;
    let (status, source) = app.call(Method::GET, "/api/v1/sources/treez", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(source["managed"], "config");
    assert_eq!(source["tokens"].as_array().unwrap().len(), 2);
    for (method, path, body) in [
        (Method::PATCH, "/api/v1/sources/treez", Some(json!({"enabled": false}))),
        (Method::DELETE, "/api/v1/sources/treez", None),
        (Method::POST, "/api/v1/sources/treez/tokens", None),
        (Method::DELETE, "/api/v1/sources/treez/tokens/config_0", None),
    ] {
        let (status, answer) = app.call(method, path, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {answer}");
        assert_eq!(error_code(&answer), "managed_by_config");
    }
    let (status, _) = app.call(Method::GET, "/api/v1/sources/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_rotated_with_overlap_revoked_at_once_and_expires() {
    let app = TestApp::spawn().await;
    let old = app.create_source(json!({"name": "shop", "kind": "treez"})).await;
    let (status, created) = app
        .call(Method::POST, "/api/v1/sources/shop/tokens", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let new = created["token"].as_str().unwrap().to_owned();
    for token in [&old, &new] {
        let (status, answer) = deliver(&app, "shop", token, &treez("acme", "1", T1)).await;
        assert_eq!(status, StatusCode::OK, "both work during the overlap: {answer}");
    }
    let (_, source) = app.call(Method::GET, "/api/v1/sources/shop", None).await;
    let old_id = source["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] != created["id"])
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .call(Method::DELETE, &format!("/api/v1/sources/shop/tokens/{old_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = deliver(&app, "shop", &old, &treez("acme", "1", T2)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked from the next request on");
    let (status, _) = deliver(&app, "shop", &new, &treez("acme", "1", T2)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(Method::DELETE, &format!("/api/v1/sources/shop/tokens/{old_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, brief) = app
        .call(
            Method::POST,
            "/api/v1/sources/shop/tokens",
            Some(json!({"expiresIn": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(brief["expiresAt"].is_string());
    let brief = brief["token"].as_str().unwrap().to_owned();
    eventually("a token stops working once it expires", || async {
        deliver(&app, "shop", &brief, &treez("acme", "2", T1)).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    let (status, answer) = app
        .call(
            Method::POST,
            "/api/v1/sources/shop/tokens",
            Some(json!({"expiresIn": "soon"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"]["message"].as_str().unwrap().contains("expiresIn"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_source_answers_404_and_what_it_kept_stays() {
    let app = TestApp::spawn().await;
    let token = app.create_source(json!({"name": "shop", "kind": "treez"})).await;
    let (status, _) = deliver(&app, "shop", &token, &treez("acme", "1", T1)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.call(Method::DELETE, "/api/v1/sources/shop", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, answer) = deliver(&app, "shop", &token, &treez("acme", "1", T2)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    app.customer("shop:acme:1").await;
    let (status, _) = app.call(Method::DELETE, "/api/v1/sources/shop", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The name can be taken again, with new tokens only.
    let again = app.create_source(json!({"name": "shop", "kind": "treez"})).await;
    let (status, _) = deliver(&app, "shop", &token, &treez("acme", "1", T2)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the deleted source's token is gone");
    let (status, answer) = deliver(&app, "shop", &again, &treez("acme", "1", T2)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_source_holds_its_deliveries_across_a_restart_and_applies_them_in_arrival_order() {
    let app = TestApp::spawn().await;
    let token = app
        .create_source(json!({"name": "shop", "kind": "treez", "enabled": false}))
        .await;
    let bodies = [treez("acme", "1", T2), treez("acme", "1", T1), treez("acme", "2", T1)];
    for body in &bodies {
        let (status, answer) = deliver(&app, "shop", &token, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer, json!({"status": "held"}));
    }
    let (status, _) = deliver(&app, "shop", "cst_wrong", &bodies[0]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a paused source still authenticates");
    let (status, _) = app.get("/api/v1/customers/shop:acme:1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing applied while paused");
    let (status, answer) = app.call(Method::DELETE, "/api/v1/sources/shop", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "it holds deliveries: {answer}");

    // What was answered `held` was committed: a restart loses none of it.
    let dir = app.dir.clone();
    let temp = app.stop().await;
    let app = TestApp::builder().spawn_in(&dir).await;
    let (status, _) = app
        .call(Method::PATCH, "/api/v1/sources/shop", Some(json!({"enabled": true})))
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually("the held deliveries are applied", || async {
        app.get("/api/v1/customers/shop:acme:2").await.0 == StatusCode::OK
    })
    .await;
    let history = app.history("shop:acme:1").await;
    let outcomes: Vec<&str> = history.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["applied", "stale"], "applied in arrival order");
    // Until the last held delivery is applied, new ones wait behind them.
    let (status, answer) = deliver(&app, "shop", &token, &bodies[0]).await;
    assert!(
        [
            (StatusCode::OK, json!("duplicate")),
            (StatusCode::ACCEPTED, json!("held"))
        ]
        .contains(&(status, answer["status"].clone())),
        "{status} {answer}"
    );
    eventually("held deliveries are counted", || async {
        let (_, source) = app.call(Method::GET, "/api/v1/sources/shop", None).await;
        source["stats"]["last24h"]["accepted"] == 3 && source["stats"]["last24h"]["duplicate"] == 1
    })
    .await;
    drop(temp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_allowed_addresses_change_at_run_time() {
    let app = TestApp::spawn().await;
    let token = app.create_source(json!({"name": "shop", "kind": "treez"})).await;
    let limited = |ips: Value, rate: Value| json!({"allowIps": ips, "rateLimit": rate});
    let (status, _) = app
        .call(
            Method::PATCH,
            "/api/v1/sources/shop",
            Some(limited(json!(["10.0.0.0/8"]), Value::Null)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = deliver(&app, "shop", &token, &treez("acme", "1", T1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .call(
            Method::PATCH,
            "/api/v1/sources/shop",
            Some(limited(json!(["127.0.0.0/8"]), json!(2))),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(
            deliver(&app, "shop", &token, &treez("acme", &i.to_string(), T1))
                .await
                .0,
        );
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let (status, answer) = app
        .call(
            Method::PATCH,
            "/api/v1/sources/shop",
            Some(json!({"allowIps": ["not-an-ip"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"]["message"].as_str().unwrap().contains("allowIps"));
}

/// A Clientele envelope for customer `id`.
fn envelope(event: &str, id: &str, updated: &str) -> String {
    json!({
        "id": event, "createdDate": updated, "type": "customer", "action": "updated",
        "payload": {"customerId": id, "updatedAt": updated, "firstName": "Ada"}
    })
    .to_string()
}

async fn signed(app: &TestApp, secret: &str, id: &str, at: i64, body: &str, extra: &str) -> (StatusCode, Value) {
    let key = signing::key(secret).unwrap();
    let signature = format!("{extra}{}", signing::sign(&key, id, at, body));
    send(
        app.webhook("relay")
            .header("webhook-id", id)
            .header("webhook-timestamp", at.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(body.to_owned()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_webhooks_source_verifies_signatures_and_answers_a_replayed_id_duplicate() {
    let app = TestApp::spawn().await;
    let secret = app
        .create_source(json!({"name": "relay", "kind": "clientele", "verify": "standard-webhooks"}))
        .await;
    assert!(secret.starts_with("whsec_"), "a Standard Webhooks secret");
    let now = jiff::Timestamp::now().as_second();
    let body = envelope("e1", "c-1", "2026-04-01T00:00:00Z");
    let (status, answer) = signed(&app, &secret, "msg_1", now, &body, "v1,bm90IGl0 ").await;
    assert_eq!(status, StatusCode::OK, "any of several signatures: {answer}");
    assert_eq!(answer["customerId"], "relay:c-1");
    let (status, answer) = signed(&app, &secret, "msg_1", now, &body, "").await;
    assert_eq!(answer["status"], "duplicate", "{status} {answer}");

    let other = signing::generate_secret();
    let body2 = envelope("e2", "c-2", "2026-04-01T00:00:00Z");
    for (secret, at, id) in [
        (other.as_str(), now, "msg_2"),
        // Past the 5 minutes' tolerance, with room for this test's own pace.
        (secret.as_str(), now - 330, "msg_2"),
        (secret.as_str(), now + 330, "msg_2"),
    ] {
        let (status, answer) = signed(&app, secret, id, at, &body2, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    }
    // A body changed after signing.
    let key = signing::key(&secret).unwrap();
    let (status, _) = send(
        app.webhook("relay")
            .header("webhook-id", "msg_3")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signing::sign(&key, "msg_3", now, &body2))
            .body(envelope("e3", "c-3", "2026-04-01T00:00:00Z")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(app.webhook("relay").bearer_auth(&secret).body(body2.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the secret is no bearer token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_takes_effect_on_another_within_two_seconds() {
    if TestStore::chosen() != TestStore::Postgres {
        println!("skipped: several instances need CLIENTELE_TEST_STORE=postgres");
        return;
    }
    let a = TestApp::spawn().await;
    let b = TestApp::builder().spawn_in(&a.dir).await;
    let token = a.create_source(json!({"name": "shop", "kind": "treez"})).await;
    let within = |what: &'static str, started: Instant| {
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{what} took {took:?}");
    };
    let started = Instant::now();
    eventually("instance b serves the new source", || async {
        deliver(&b, "shop", &token, &treez("acme", "1", T1)).await.0 == StatusCode::OK
    })
    .await;
    within("creation", started);

    let (_, source) = a.call(Method::GET, "/api/v1/sources/shop", None).await;
    let id = source["tokens"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = a
        .call(Method::DELETE, &format!("/api/v1/sources/shop/tokens/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let started = Instant::now();
    eventually("instance b refuses the revoked token", || async {
        deliver(&b, "shop", &token, &treez("acme", "1", T2)).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    within("revocation", started);
}
