//! API keys with scopes and the audit log (SPEC §9): every `/api/v1`
//! operation of the OpenAPI document refuses a key without the scope it
//! states; keys are shown once, kept as digests and revocable; the audit
//! log records who did what, never a secret nor an erased customer's id.

use crate::util::{ADMIN, TestApp, error_code, send, treez};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(app: &TestApp, key: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

/// Creates a key with `scopes`; its id and the key.
async fn create_key(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let (status, created) = call(
        app,
        ADMIN,
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": "test", "scopes": scopes})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ck_"));
    (created["id"].as_str().unwrap().to_owned(), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_refuses_a_key_without_the_scope_the_document_states() {
    let app = TestApp::spawn().await;
    let (status, document) = send(app.client.get(app.url("/api/v1/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    let mut keys = std::collections::HashMap::new();
    for scope in ["read", "write", "erase", "admin"] {
        let others: Vec<&str> = ["read", "write", "erase", "admin"]
            .into_iter()
            .filter(|s| *s != scope)
            .collect();
        keys.insert(
            scope,
            (create_key(&app, &others).await.1, create_key(&app, &[scope]).await.1),
        );
    }
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let scopes = operation["security"][0]["apiKey"].as_array();
            let scope = scopes
                .and_then(|s| s.first())
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{method} {path} states its scope"));
            let concrete = path.replace("{id}", "x").replace("{name}", "x");
            let (without, with) = &keys[scope];
            let (status, answer) = call(&app, without, method.clone(), &concrete, Some(json!({}))).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path} without {scope}: {answer}"
            );
            assert_eq!(error_code(&answer), "forbidden");
            let (status, answer) = call(&app, with, method.clone(), &concrete, Some(json!({}))).await;
            assert!(
                status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                "{method} {path} with {scope}: {status} {answer}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "every operation: {checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_shown_once_kept_as_a_digest_and_revoked_from_the_next_request() {
    let app = TestApp::spawn().await;
    let (id, key) = create_key(&app, &["read"]).await;
    let (status, _) = call(&app, &key, Method::GET, "/api/v1/customers", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, listed) = call(&app, ADMIN, Method::GET, "/api/v1/keys", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!listed.to_string().contains(&key), "never the key: {listed}");
    assert_eq!(listed["data"][0]["scopes"], json!(["read"]));
    let (status, one) = call(&app, ADMIN, Method::GET, &format!("/api/v1/keys/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(one.get("key").is_none() && one.get("digest").is_none(), "{one}");
    let (status, _) = call(&app, &key, Method::GET, "/api/v1/keys", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "keys need admin");

    let (status, _) = call(&app, ADMIN, Method::DELETE, &format!("/api/v1/keys/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, answer) = call(&app, &key, Method::GET, "/api/v1/customers", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, _) = call(&app, ADMIN, Method::GET, &format!("/api/v1/keys/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for (body, field) in [
        (json!({"name": "x", "scopes": ["root"]}), "scopes"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "", "scopes": ["read"]}), "name"),
    ] {
        let (status, answer) = call(&app, ADMIN, Method::POST, "/api/v1/keys", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_who_did_what_and_never_an_erased_customers_id() {
    let app = TestApp::spawn().await;
    let (key_id, key) = create_key(&app, &["write", "erase", "admin"]).await;
    let (status, created) = call(
        &app,
        &key,
        Method::POST,
        "/api/v1/sources",
        Some(json!({"name": "shop", "kind": "treez"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = created["token"].as_str().unwrap().to_owned();
    let (status, _) = send(app.webhook("shop").bearer_auth(&token).json(&treez(
        "acme",
        "77",
        "2026-04-01 10:00:00.000",
    )))
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, &key, Method::DELETE, "/api/v1/customers/shop:acme:77", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        &app,
        &key,
        Method::PATCH,
        "/api/v1/sources/shop",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, audit) = call(&app, &key, Method::GET, "/api/v1/audit", None).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = audit["data"].as_array().unwrap();
    let actions: Vec<(&str, &Value)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), &e["keyId"]))
        .collect();
    assert_eq!(
        actions,
        [
            ("source.update", &json!(key_id)),
            ("customer.erase", &json!(key_id)),
            ("source.create", &json!(key_id)),
            ("key.create", &Value::Null),
        ],
        "newest first, with the key that acted"
    );
    let text = audit.to_string();
    assert!(
        !text.contains("acme:77") && !text.contains(&token) && !text.contains(&key),
        "{text}"
    );
    let (read_id, read) = create_key(&app, &["read"]).await;
    let (status, _) = call(&app, &read, Method::GET, "/api/v1/audit", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the audit log needs admin ({read_id})");
}
