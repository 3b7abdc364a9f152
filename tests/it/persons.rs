//! Persons (SPEC §11): the resolver follows the directory after the
//! commit; persons, aliases, links, reviews and decisions over HTTP.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{self, TestApp};

/// A Clientele envelope for customer `id`.
fn customer(id: &str, at: &str, fields: Value) -> Value {
    let mut payload = json!({"customerId": id, "updatedAt": at});
    for (k, v) in fields.as_object().expect("fields") {
        payload[k] = v.clone();
    }
    json!({"type": "customer", "action": "updated", "payload": payload})
}

fn ada(id: &str, at: &str, email: &str) -> Value {
    customer(
        id,
        at,
        json!({"firstName": "Ada", "lastName": "Quillfeather", "email": email, "birthDate": "1985-03-14",
               "addresses": [{"kind": "home", "street1": "8 Stanley Street", "postalCode": "2000"}]}),
    )
}

async fn deliver(app: &TestApp, body: &Value) {
    let (status, answer) = app.deliver_json("clientele", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn person_of(app: &TestApp, customer: &str) -> Value {
    let (status, person) = app.get(&format!("/api/v1/customers/{customer}/person")).await;
    assert_eq!(status, StatusCode::OK, "{person}");
    person
}

fn members(person: &Value) -> Vec<String> {
    person["customerIds"]
        .as_array()
        .expect("customerIds")
        .iter()
        .map(|c| c.as_str().expect("an id").to_owned())
        .collect()
}

/// Every person's customers.
async fn groups(app: &TestApp) -> BTreeSet<Vec<String>> {
    let mut all = BTreeSet::new();
    for page in app.pages("/api/v1/persons", "100").await {
        for person in page {
            all.insert(members(&person));
        }
    }
    all
}

#[tokio::test]
async fn customers_sharing_an_email_and_a_name_are_one_person_with_a_golden_profile() {
    let app = TestApp::spawn().await;
    deliver(&app, &ada("a1", "2024-01-01T00:00:00Z", "ada.q@mail.org")).await;
    deliver(
        &app,
        &customer(
            "a2",
            "2024-02-01T00:00:00Z",
            json!({"firstName": "Ada", "lastName": "Quilfeather", "email": "ADA.Q@mail.org",
                   "phones": [{"kind": "mobile", "raw": "+1 914 555 1212"}]}),
        ),
    )
    .await;
    deliver(
        &app,
        &customer(
            "z9",
            "2024-01-01T00:00:00Z",
            json!({"firstName": "Zed", "lastName": "Young"}),
        ),
    )
    .await;
    app.wait_resolved().await;

    let person = person_of(&app, "clientele:a1").await;
    assert_eq!(members(&person), ["clientele:a1", "clientele:a2"]);
    assert!(person["id"].as_str().unwrap().starts_with("per_"), "{person}");
    // Each golden field names the customer it came from: the latest
    // record's name, the older record's birth date.
    assert_eq!(
        person["profile"]["lastName"],
        json!({"value": "Quilfeather", "from": "clientele:a2"})
    );
    assert_eq!(
        person["profile"]["birthDate"],
        json!({"value": "1985-03-14", "from": "clientele:a1"})
    );
    let link = &person["links"][0];
    assert_eq!(link["customers"], json!(["clientele:a1", "clientele:a2"]));
    assert!(
        link["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "email" && e["weight"].as_f64().unwrap() > 0.0),
        "{link}"
    );
    let (_, same) = app
        .get(&format!("/api/v1/persons/{}", person["id"].as_str().unwrap()))
        .await;
    assert_eq!(members(&same), members(&person));

    let (status, listed) = app.get_query("/api/v1/persons", &[("email", "ada.q@mail.org")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    let (_, by_name) = app.get_query("/api/v1/persons", &[("name", "ZED")]).await;
    assert_eq!(members(&by_name["data"][0]), ["clientele:z9"]);
    assert_eq!(
        groups(&app).await,
        BTreeSet::from([
            vec!["clientele:a1".to_owned(), "clientele:a2".to_owned()],
            vec!["clientele:z9".to_owned()],
        ])
    );
    let (status, _) = app.get("/api/v1/persons/per_nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_household_stays_two_persons() {
    let app = TestApp::spawn().await;
    let home = json!([{"kind": "home", "street1": "12 Elm Road", "postalCode": "90210"}]);
    for (id, first, birth) in [("h1", "Maria", "1970-02-02"), ("h2", "Jonas", "1968-07-30")] {
        let fields = json!({"firstName": first, "lastName": "Okonkwo", "birthDate": birth,
                            "phones": [{"kind": "home", "raw": "+1 914 555 1212"}], "addresses": home});
        deliver(&app, &customer(id, "2024-01-01T00:00:00Z", fields)).await;
    }
    app.wait_resolved().await;
    assert_ne!(
        person_of(&app, "clientele:h1").await["id"],
        person_of(&app, "clientele:h2").await["id"]
    );
}

#[tokio::test]
async fn a_join_keeps_the_older_id_and_the_absorbed_one_answers_with_alias_of() {
    let app = TestApp::spawn().await;
    deliver(&app, &ada("j1", "2024-01-01T00:00:00Z", "first@mail.org")).await;
    app.wait_resolved().await;
    deliver(&app, &ada("j2", "2024-01-01T00:00:00Z", "second@mail.org")).await;
    deliver(
        &app,
        &customer(
            "j3",
            "2024-01-01T00:00:00Z",
            json!({"firstName": "Bo", "email": "third@mail.org"}),
        ),
    )
    .await;
    app.wait_resolved().await;
    let older = person_of(&app, "clientele:j1").await["id"].as_str().unwrap().to_owned();
    // j2 and j1 already agree on name, birth date and address.
    assert_eq!(person_of(&app, "clientele:j2").await["id"], older);
    let lone = person_of(&app, "clientele:j3").await["id"].as_str().unwrap().to_owned();

    // j3 becomes Ada with j1's email: one person, under the older id.
    deliver(&app, &ada("j3", "2024-03-01T00:00:00Z", "first@mail.org")).await;
    app.wait_resolved().await;
    let joined = person_of(&app, "clientele:j3").await;
    assert_eq!(joined["id"], older.as_str());
    assert_eq!(members(&joined).len(), 3);
    let (status, alias) = app.get(&format!("/api/v1/persons/{lone}")).await;
    assert_eq!(status, StatusCode::OK, "{alias}");
    assert_eq!(alias["id"], older.as_str());
    assert_eq!(alias["aliasOf"], lone.as_str());
}

#[tokio::test]
async fn an_erased_customer_leaves_its_person() {
    let app = TestApp::spawn().await;
    deliver(&app, &ada("e1", "2024-01-01T00:00:00Z", "erase@mail.org")).await;
    deliver(&app, &ada("e2", "2024-01-01T00:00:00Z", "erase@mail.org")).await;
    app.wait_resolved().await;
    let person = person_of(&app, "clientele:e1").await;
    assert_eq!(members(&person).len(), 2);
    let response = app
        .client
        .delete(app.url("/api/v1/customers/clientele:e2"))
        .bearer_auth(util::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    app.wait_resolved().await;
    let after = person_of(&app, "clientele:e1").await;
    assert_eq!(after["id"], person["id"]);
    assert_eq!(members(&after), ["clientele:e1"]);
    assert!(after["links"].as_array().unwrap().is_empty(), "{after}");
    let (status, _) = app.get("/api/v1/customers/clientele:e2/person").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Families of records, each family one person: the same email or the
/// same name, birth date and address.
fn stream(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let family = i / 3;
            let names = ["Ada", "Ben", "Cleo", "Dov", "Eli", "Fay", "Gus", "Hana"];
            customer(
                &format!("s{i}"),
                "2024-01-01T00:00:00Z",
                json!({"firstName": names[family % names.len()], "lastName": format!("Zorblat{family}"),
                       "email": format!("family{family}@mail.org"),
                       "birthDate": format!("19{:02}-0{}-1{}", 50 + family % 40, 1 + family % 9, family % 10)}),
            )
        })
        .collect()
}

fn expected(n: usize) -> BTreeSet<Vec<String>> {
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); n.div_ceil(3)];
    for i in 0..n {
        groups[i / 3].push(format!("clientele:s{i}"));
    }
    groups
        .into_iter()
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

#[tokio::test]
async fn a_restart_mid_stream_neither_loses_nor_repeats_a_change() {
    let setup = TestApp::builder();
    let dir = tempfile::tempdir().unwrap();
    let records = stream(60);
    let app = setup.clone().spawn_in(dir.path()).await;
    for body in &records[..30] {
        deliver(&app, body).await;
    }
    // Stopped wherever the resolver is: its position is committed with
    // its writes.
    app.stop().await;
    let app = setup.clone().spawn_in(dir.path()).await;
    for body in &records[30..] {
        deliver(&app, body).await;
    }
    app.wait_resolved().await;
    assert_eq!(groups(&app).await, expected(60));
    let (_, lag) = app.unresolved().await;
    assert_eq!(lag, 0.0);
}

async fn post(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    util::send(app.client.post(app.url(path)).bearer_auth(util::ADMIN).json(&body)).await
}

#[tokio::test]
async fn a_review_is_decided_once_and_the_resolver_applies_it() {
    let app = TestApp::spawn().await;
    // Everything agrees but the birth dates: the model asks an operator.
    let mut older = ada("r1", "2024-01-01T00:00:00Z", "review@mail.org");
    older["payload"]["birthDate"] = json!("1961-11-25");
    deliver(&app, &older).await;
    deliver(&app, &ada("r2", "2024-01-01T00:00:00Z", "review@mail.org")).await;
    app.wait_resolved().await;
    let (status, reviews) = app.get_query("/api/v1/persons/reviews", &[("status", "open")]).await;
    assert_eq!(status, StatusCode::OK);
    let review = &reviews["data"][0];
    assert_eq!(
        review["customers"],
        json!(["clientele:r1", "clientele:r2"]),
        "{reviews}"
    );
    assert!(!review["evidence"].as_array().unwrap().is_empty());
    assert_ne!(
        person_of(&app, "clientele:r1").await["id"],
        person_of(&app, "clientele:r2").await["id"]
    );

    let path = format!("/api/v1/persons/reviews/{}", review["id"].as_str().unwrap());
    let (status, decided) = post(&app, &path, json!({"decision": "link"})).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["decision"], "link");
    // Decided twice: the first decision stands.
    let (status, again) = post(&app, &path, json!({"decision": "separate"})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["decision"], "link");
    app.wait_resolved().await;
    let person = person_of(&app, "clientele:r1").await;
    assert_eq!(members(&person), ["clientele:r1", "clientele:r2"]);
    assert_eq!(person["links"][0]["decidedBy"], "operator");
    let (_, open) = app.get_query("/api/v1/persons/reviews", &[("status", "open")]).await;
    assert_eq!(open["data"], json!([]));
    let (_, audit) = app.get("/api/v1/audit").await;
    assert_eq!(audit["data"][0]["action"], "person.link", "{audit}");
    assert!(!audit.to_string().contains("clientele:r1"), "{audit}");

    let (status, _) = post(&app, "/api/v1/persons/reviews/rev_unknown", json!({"decision": "link"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn separate_splits_a_person_and_link_waits_until_it_is_withdrawn() {
    let app = TestApp::spawn().await;
    deliver(&app, &ada("d1", "2024-01-01T00:00:00Z", "split@mail.org")).await;
    deliver(&app, &ada("d2", "2024-01-01T00:00:00Z", "split@mail.org")).await;
    app.wait_resolved().await;
    let joined = person_of(&app, "clientele:d1").await;
    assert_eq!(members(&joined).len(), 2);

    let pair = json!(["clientele:d2", "clientele:d1"]);
    let (status, body) = post(
        &app,
        "/api/v1/persons/decisions",
        json!({"customers": pair, "decision": "separate"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["customers"], json!(["clientele:d1", "clientele:d2"]));
    app.wait_resolved().await;
    let (one, two) = (
        person_of(&app, "clientele:d1").await,
        person_of(&app, "clientele:d2").await,
    );
    assert_ne!(one["id"], two["id"]);
    // The part with most customers keeps the id: here the first.
    assert_eq!(one["id"], joined["id"]);

    let (status, body) = post(
        &app,
        "/api/v1/persons/decisions",
        json!({"customers": pair, "decision": "link"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(util::error_code(&body), "separated");
    let (status, _) = post(
        &app,
        "/api/v1/persons/decisions",
        json!({"customers": pair, "decision": "withdraw"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.wait_resolved().await;
    assert_eq!(person_of(&app, "clientele:d2").await["id"], joined["id"]);
    let (status, _) = post(
        &app,
        "/api/v1/persons/decisions",
        json!({"customers": pair, "decision": "link"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let unknown = json!({"customers": ["clientele:d1", "clientele:nobody"], "decision": "link"});
    let (status, _) = post(&app, "/api/v1/persons/decisions", unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = app
        .client
        .delete(app.url("/api/v1/customers/clientele:d2"))
        .bearer_auth(util::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = post(
        &app,
        "/api/v1/persons/decisions",
        json!({"customers": pair, "decision": "separate"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_rebuild_finds_the_persons_the_resolver_built_with_their_ids() {
    let setup = TestApp::builder();
    let dir = tempfile::tempdir().unwrap();
    let app = setup.clone().spawn_in(dir.path()).await;
    for body in stream(30) {
        deliver(&app, &body).await;
    }
    // A join and a split on the way, by an operator.
    deliver(&app, &ada("x1", "2024-01-01T00:00:00Z", "x@mail.org")).await;
    deliver(&app, &ada("x2", "2024-01-01T00:00:00Z", "x@mail.org")).await;
    let pair = json!({"customers": ["clientele:x1", "clientele:x2"], "decision": "separate"});
    assert_eq!(post(&app, "/api/v1/persons/decisions", pair).await.0, StatusCode::OK);
    app.wait_resolved().await;
    let before = persons(&app).await;
    assert_eq!(before.len(), 12);
    app.stop().await;

    setup.rebuild(dir.path()).await;
    let app = setup.clone().spawn_in(dir.path()).await;
    app.wait_resolved().await;
    assert_eq!(persons(&app).await, before);
}

/// A rebuild by the running server resolves persons again while the
/// server's resolver gives way; the resolver then follows on.
#[tokio::test]
async fn a_rebuild_while_serving_keeps_the_persons_and_the_resolver_follows_on() {
    let app = TestApp::spawn().await;
    for body in stream(30) {
        deliver(&app, &body).await;
    }
    app.wait_resolved().await;
    let before = persons(&app).await;

    let (status, rebuilt) = app.post_admin("/api/v1/rebuild").await;
    assert_eq!(status, StatusCode::OK, "{rebuilt}");
    assert_eq!(persons(&app).await, before);

    deliver(&app, &ada("y1", "2024-01-01T00:00:00Z", "y@mail.org")).await;
    deliver(&app, &ada("y2", "2024-01-01T00:00:00Z", "y@mail.org")).await;
    app.wait_resolved().await;
    assert_eq!(
        members(&person_of(&app, "clientele:y1").await),
        ["clientele:y1", "clientele:y2"]
    );
}

/// Every person's id and customers, by id.
async fn persons(app: &TestApp) -> Vec<(Value, Value)> {
    let mut all = Vec::new();
    for page in app.pages("/api/v1/persons", "100").await {
        all.extend(page.into_iter().map(|p| (p["id"].clone(), p["customerIds"].clone())));
    }
    all.sort_by_key(|(id, _)| id.to_string());
    all
}

#[tokio::test]
async fn subscriptions_that_ask_for_persons_get_person_messages() {
    let app = TestApp::spawn().await;
    let both = util::TestReceiver::healthy().await;
    let customers_only = util::TestReceiver::healthy().await;
    app.subscribe(json!({"url": both.url(), "types": ["customer", "person"]}))
        .await;
    app.subscribe(json!({"url": customers_only.url()})).await;
    deliver(&app, &ada("m1", "2024-01-01T00:00:00Z", "messages@mail.org")).await;
    app.wait_resolved().await;
    deliver(&app, &ada("m2", "2024-01-01T00:00:00Z", "messages@mail.org")).await;
    app.wait_resolved().await;
    let person = person_of(&app, "clientele:m1").await;
    app.wait_drained().await;

    let kinds = |r: &[util::Received]| -> Vec<(String, String)> {
        r.iter()
            .map(|m| {
                (
                    m.body["type"].as_str().unwrap().to_owned(),
                    m.body["action"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let got = both.wait_for(4).await;
    let persons: Vec<&util::Received> = got.iter().filter(|m| m.body["type"] == "person").collect();
    assert_eq!(persons.len(), 2, "{:?}", kinds(&got));
    assert_eq!(persons[0].body["action"], "created");
    assert_eq!(persons[1].body["action"], "updated");
    assert_eq!(persons[1].body["payload"]["id"], person["id"]);
    assert_eq!(
        persons[1].body["payload"]["customerIds"],
        json!(["clientele:m1", "clientele:m2"])
    );
    // No customer's data in a person's message: ids, scores and evidence.
    assert!(!persons[1].raw.windows(5).any(|w| w == b"Quill"), "{}", persons[1].body);
    assert!(
        kinds(&customers_only.received()).iter().all(|(t, _)| t == "customer"),
        "{:?}",
        kinds(&customers_only.received())
    );
    assert_eq!(customers_only.received().len(), 2);
}

/// Persons' changes are kept for subscribers only while a subscription
/// asks for persons (issue 19): none is kept while none asks, so a
/// persons subscription made later replays none of the changes before
/// it, and gets those after it.
#[tokio::test]
async fn person_changes_are_kept_only_while_a_subscription_asks_for_them() {
    let app = TestApp::spawn().await;
    let customers = util::TestReceiver::healthy().await;
    app.subscribe(json!({"url": customers.url(), "types": ["customer"]}))
        .await;
    deliver(&app, &ada("k1", "2024-01-01T00:00:00Z", "kept@mail.org")).await;
    app.wait_resolved().await;
    let person = person_of(&app, "clientele:k1").await;
    assert_eq!(members(&person), ["clientele:k1"]);

    let persons = util::TestReceiver::healthy().await;
    let subscription = app.subscribe(json!({"url": persons.url(), "types": ["person"]})).await;
    let replay = format!(
        "/api/v1/subscriptions/{}/replay?since=2000-01-01T00:00:00Z",
        subscription["id"].as_str().expect("an id")
    );
    assert_eq!(
        app.post_admin(&replay).await,
        (StatusCode::ACCEPTED, json!({"messages": 0})),
        "a person's change was kept while no subscription asked for persons"
    );

    deliver(&app, &ada("k2", "2024-01-01T00:00:00Z", "kept@mail.org")).await;
    app.wait_resolved().await;
    app.wait_drained().await;
    let got = persons.wait_for(1).await;
    assert_eq!(got.len(), 1, "{:?}", got.iter().map(|m| &m.body).collect::<Vec<_>>());
    assert_eq!(got[0].body["type"], "person");
    assert_eq!(got[0].body["action"], "updated");
    assert_eq!(got[0].body["payload"]["id"], person["id"]);
    assert_eq!(
        got[0].body["payload"]["customerIds"],
        json!(["clientele:k1", "clientele:k2"])
    );
    assert_eq!(
        app.post_admin(&replay).await,
        (StatusCode::ACCEPTED, json!({"messages": 1}))
    );
    assert_eq!(customers.wait_for(2).await.len(), 2);
}
