//! Who may do what, over real HTTP against the real `dcs-api` on Postgres,
//! with a real agent and running, labelled containers, so that a snapshot
//! WOULD be dispatched if the API let it through.
//!
//! User tokens that a JWT library would refuse to make (`alg: none`,
//! tampered payloads, other algorithms) are built by hand (`stack::jwt`,
//! whose unit tests check its HMAC and base64url).

use std::time::Duration;

use e2e_tests::fake_agent::register_unreachable_node;
use e2e_tests::matrix::Failures;
use e2e_tests::stack::{
    Agent, Api, ApiOptions, Database, WsOutcome, documents, jwt, metric_value, page_list,
    registry_digest, skopeo_inspect, sorted_ids,
};
use e2e_tests::{Ctr, TestEnv, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn api_on_postgres(db: &Database, env: &TestEnv) -> Api {
    Api::start(ApiOptions::postgres(db, &env.registry, 10)).await
}

/// Checks that `body` refuses a case with error `code` whose message says
/// `says`; records what does not hold.
fn check_refusal(failures: &mut Failures, body: &Value, case: &str, code: &str, says: &str) {
    if !failures.check(body["errors"].is_array(), || {
        format!("{case}: expected a refusal, got {body}")
    }) {
        return;
    }
    failures.check(
        body["data"].is_null() || body["data"]["createSnapshot"].is_null(),
        || format!("{case}: refused, yet data came back: {body}"),
    );
    let Some(found) = body["errors"][0]["extensions"]["code"].as_str() else {
        failures.check(false, || {
            format!("{case}: an error without extensions.code: {body}")
        });
        return;
    };
    failures.check_eq(found, code, || format!("{case}: {body}"));
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    failures.check(message.contains(says), || {
        format!("{case}: the message should say \"{says}\": {body}")
    });
}

/// The createSnapshot matrix, container and snapshot visibility, and
/// subscriptions, on one real stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_snapshot_auth_matrix_refuses_with_the_right_code_and_dispatches_nothing() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = api_on_postgres(&db, &env).await;
    let namespace = unique("auth");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    let desk = unique("desk");
    let payroll = unique("payroll");
    ctr.desktop(&desk, busybox).owner("alice").start();
    ctr.desktop(&payroll, busybox)
        .namespace("finance")
        .pod("payroll-0")
        .owner("carol")
        .start();
    let agent = Agent::start(&env, &api, "node-auth", &namespace);
    ctr.exec(
        &desk,
        "mkdir -p /opt/tools && echo alice > /opt/tools/owner",
    );
    ctr.exec(&payroll, "echo secret > /root/ledger");

    let secret = api.jwt_secret();
    let alice = api.token("alice", "speaker", &["workshop"]);
    let root = api.token("root", "admin", &[]);

    // Containers: each speaker sees their namespaces' only.
    let all = api
        .wait_for(&root, documents::CONTAINERS, json!({}), WAIT, |d| {
            page_list(&d["containers"])
                .as_array()
                .is_some_and(|l| l.len() == 2)
        })
        .await;
    let mut both = vec![desk.clone(), payroll.clone()];
    both.sort();
    assert_eq!(
        sorted_ids(&page_list(&all["containers"])),
        both,
        "an admin sees all"
    );
    let seen = api.data(&alice, documents::CONTAINERS, json!({})).await;
    assert_eq!(
        sorted_ids(&page_list(&seen["containers"])),
        vec![desk.clone()],
        "{seen}"
    );
    let carol = api.token("carol", "speaker", &["finance"]);
    let seen = api.data(&carol, documents::CONTAINERS, json!({})).await;
    assert_eq!(
        sorted_ids(&page_list(&seen["containers"])),
        vec![payroll.clone()],
        "{seen}"
    );
    let bob = api.token("bob", "speaker", &["elsewhere"]);
    let seen = api.data(&bob, documents::CONTAINERS, json!({})).await;
    assert_eq!(page_list(&seen["containers"]), json!([]), "{seen}");
    let nobody = api.token("dave", "speaker", &[]);
    let seen = api.data(&nobody, documents::CONTAINERS, json!({})).await;
    assert_eq!(page_list(&seen["containers"]), json!([]), "{seen}");
    // Filtering on another namespace does not widen the view.
    let seen = api
        .data(
            &alice,
            "query($ns: String) { containers(podNamespace: $ns) { edges { node { id } } } }",
            json!({"ns": "finance"}),
        )
        .await;
    assert_eq!(page_list(&seen["containers"]), json!([]), "{seen}");

    // Hand-made tokens are accepted when they are right (so the refusals
    // below are for the reason each case names).
    let hand_made = jwt::hs256(
        &secret,
        &jwt::user_claims("alice", "speaker", &["workshop"]),
    );
    let me = api
        .data(&hand_made, "{ me { sub role namespaces } }", json!({}))
        .await;
    assert_eq!(
        me["me"],
        json!({"sub": "alice", "role": "SPEAKER", "namespaces": ["workshop"]})
    );

    let reg = &env.registry;
    // Repository names of this run only: other tests push to workshops/*.
    let repo = unique("desk");
    let own_target = format!("{reg}/workshops/alice/{repo}:v1");
    let own = json!({"input": {"containerId": desk, "target": own_target}});
    let now = jwt::now();
    let with = |changes: Value| {
        let mut claims = jwt::user_claims("alice", "speaker", &["workshop"]);
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let hs = |claims: &Value| jwt::hs256(&secret, claims);
    let tampered = {
        // A valid speaker token whose payload is swapped for an admin one.
        let valid = hs(&with(json!({})));
        let mut parts: Vec<String> = valid.split('.').map(String::from).collect();
        parts[1] = jwt::base64url(with(json!({"role": "admin"})).to_string().as_bytes());
        parts.join(".")
    };

    struct Case {
        name: &'static str,
        header: Option<String>,
        input: Value,
        code: &'static str,
        /// A fragment of the message.
        says: &'static str,
    }
    let bearer = |t: String| Some(format!("Bearer {t}"));
    let unauthenticated = vec![
        Case {
            name: "no token",
            header: None,
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "token is required",
        },
        Case {
            name: "not a bearer header",
            header: Some(format!("Basic {}", jwt::base64url(b"alice:pw"))),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "Bearer",
        },
        Case {
            name: "garbage token",
            header: bearer("not.a.jwt".into()),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "token",
        },
        Case {
            name: "expired",
            header: bearer(hs(&with(
                json!({"exp": now - 120, "nbf": now - 600, "iat": now - 600}),
            ))),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "expired",
        },
        Case {
            name: "not valid yet (nbf)",
            header: bearer(hs(&with(json!({"nbf": now + 600})))),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "not valid yet",
        },
        Case {
            name: "wrong issuer",
            header: bearer(hs(&with(json!({"iss": "https://evil.example"})))),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "issuer",
        },
        Case {
            name: "wrong audience",
            header: bearer(hs(&with(json!({"aud": "another-service"})))),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "audience",
        },
        Case {
            name: "no exp",
            header: bearer(hs(&{
                let mut c = with(json!({}));
                c.as_object_mut().unwrap().remove("exp");
                c
            })),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "token",
        },
        Case {
            name: "alg none",
            header: bearer(jwt::encode(
                b"",
                &json!({"alg": "none", "typ": "JWT"}),
                &with(json!({"role": "admin"})),
            )),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "token",
        },
        Case {
            name: "unsigned token without its signature segment",
            header: bearer(
                jwt::encode(b"", &json!({"alg": "none", "typ": "JWT"}), &with(json!({})))
                    .trim_end_matches('.')
                    .to_string(),
            ),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "token",
        },
        Case {
            name: "another HMAC algorithm with the right key (HS512)",
            header: bearer(jwt::encode(
                &secret,
                &json!({"alg": "HS512", "typ": "JWT"}),
                &with(json!({})),
            )),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "algorithm",
        },
        Case {
            name: "wrong key (HS256 with another secret)",
            header: bearer(jwt::hs256(
                b"another-secret-of-at-least-32-bytes-xxxxxxxx",
                &with(json!({"role": "admin"})),
            )),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "signature",
        },
        Case {
            name: "tampered payload (speaker -> admin)",
            header: bearer(tampered),
            input: own.clone(),
            code: "UNAUTHENTICATED",
            says: "signature",
        },
    ];
    // Another namespace's container, or one the token cannot reach, reads
    // like one that does not exist.
    let refused = vec![
        Case {
            name: "speaker on another namespace's container (by id)",
            header: bearer(alice.clone()),
            input: json!({"input": {"containerId": payroll, "target": format!("{reg}/workshops/alice/{repo}-payroll:v1")}}),
            code: "NOT_FOUND",
            says: "no such container",
        },
        Case {
            name: "speaker on another namespace's container (by pod)",
            header: bearer(alice.clone()),
            input: json!({"input": {"podNamespace": "finance", "podName": "payroll-0", "containerName": "desktop",
                                    "target": format!("{reg}/workshops/alice/{repo}-payroll:v1")}}),
            code: "NOT_FOUND",
            says: "no such container",
        },
        Case {
            name: "speaker whose token has no namespaces",
            header: bearer(nobody.clone()),
            input: json!({"input": {"containerId": desk, "target": format!("{reg}/workshops/dave/{repo}:v1")}}),
            code: "NOT_FOUND",
            says: "no such container",
        },
        Case {
            name: "speaker pushing outside the allowed prefix",
            header: bearer(alice.clone()),
            input: json!({"input": {"containerId": desk, "target": format!("{reg}/library/{repo}:v1")}}),
            code: "FORBIDDEN",
            says: "push only under",
        },
        Case {
            name: "speaker pushing under another speaker's prefix",
            header: bearer(alice.clone()),
            input: json!({"input": {"containerId": desk, "target": format!("{reg}/workshops/bob/{repo}:v1")}}),
            code: "FORBIDDEN",
            says: "push only under",
        },
        Case {
            name: "speaker pushing to a look-alike prefix",
            header: bearer(alice.clone()),
            input: json!({"input": {"containerId": desk, "target": format!("{reg}/workshops/alice-evil/{repo}:v1")}}),
            code: "FORBIDDEN",
            says: "push only under",
        },
        Case {
            name: "speaker pushing to the same path on another registry",
            header: bearer(alice.clone()),
            input: json!({"input": {"containerId": desk, "target": format!("evil.example.com/workshops/alice/{repo}:v1")}}),
            code: "FORBIDDEN",
            says: "push only under",
        },
    ];
    let bad_input = vec![Case {
        name: "path traversal in the target",
        header: bearer(alice.clone()),
        input: json!({"input": {"containerId": desk, "target": format!("{reg}/workshops/alice/../bob/{repo}:v1")}}),
        code: "BAD_USER_INPUT",
        says: "target",
    }];

    // Every case is tried, and every failure reported together.
    let mut failures = Failures::new("the createSnapshot auth matrix");
    let http = e2e_tests::stack::http_client();
    for case in unauthenticated.iter().chain(&refused).chain(&bad_input) {
        let mut request = http
            .post(format!("{}/graphql", api.url))
            .json(&json!({"query": documents::CREATE, "variables": case.input}));
        if let Some(header) = &case.header {
            request = request.header("Authorization", header);
        }
        let body: Value = request
            .send()
            .await
            .expect("POST")
            .json()
            .await
            .expect("JSON");
        check_refusal(&mut failures, &body, case.name, case.code, case.says);
    }
    // Queries with the bad tokens are refused the same way.
    for case in &unauthenticated {
        let mut request = http
            .post(format!("{}/graphql", api.url))
            .json(&json!({"query": "{ me { sub role } }"}));
        if let Some(header) = &case.header {
            request = request.header("Authorization", header);
        }
        let body: Value = request
            .send()
            .await
            .expect("POST")
            .json()
            .await
            .expect("JSON");
        failures.check_eq(
            &body["errors"][0]["extensions"]["code"],
            &json!("UNAUTHENTICATED"),
            || format!("me with {}: {body}", case.name),
        );
        failures.check(body["data"].is_null(), || {
            format!("me with {}: {body}", case.name)
        });
    }
    failures.assert_none();

    // Nothing was written or dispatched.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(db.query("SELECT count(*) FROM snapshots"), "0");
    assert_eq!(db.query("SELECT count(*) FROM snapshot_events"), "0");
    let api_metrics = api.metrics().await;
    assert_eq!(
        metric_value(&api_metrics, "dcs_api_dispatch_attempts_total"),
        0.0,
        "{api_metrics}"
    );
    let agent_metrics = agent.metrics(&api).await;
    assert!(
        !agent_metrics.contains("dcs_agent_commits_total{"),
        "the agent ran a commit: {agent_metrics}"
    );
    assert_eq!(metric_value(&agent_metrics, "dcs_agent_jobs_running"), 0.0);
    assert!(
        !api.log().contains("job dispatched"),
        "API log:\n{}",
        api.log()
    );
    for case in refused.iter().chain(&bad_input) {
        let target = case.input["input"]["target"].as_str().unwrap();
        assert!(
            skopeo_inspect(target).is_err() || !target.starts_with(reg.as_str()),
            "{target} exists"
        );
    }
    // The authenticated refusals are in the audit log, in order.
    let audit = db.query(
        "SELECT actor || ' ' || role || ' ' || action || ' ' || outcome || ' ' || (detail->>'target') \
         FROM audit_log WHERE action = 'createSnapshot' ORDER BY id",
    );
    let expected: Vec<String> = refused
        .iter()
        .chain(&bad_input)
        .map(|case| {
            let actor = if case.header == bearer(nobody.clone()) {
                "dave"
            } else {
                "alice"
            };
            format!(
                "{actor} speaker createSnapshot {} {}",
                case.code.to_lowercase(),
                case.input["input"]["target"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(audit.lines().collect::<Vec<_>>(), expected, "audit log");

    // Subscriptions see only what their caller may see.
    let bob_token = bob.clone();
    let mut alice_events = api.subscribe(&alice, documents::EVENTS, json!({})).await;
    let mut bob_events = api
        .subscribe(&bob_token, documents::EVENTS, json!({}))
        .await;

    // What is allowed IS dispatched: the speaker in her prefix, and an
    // admin anywhere, on any namespace's container.
    let created = api.data(&alice, documents::CREATE, own.clone()).await;
    let alice_id = created["createSnapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin_target = format!("{reg}/{}/payroll:v1", unique("anywhere"));
    let created = api
        .data(
            &root,
            documents::CREATE,
            json!({"input": {"podNamespace": "finance", "podName": "payroll-0", "target": admin_target}}),
        )
        .await;
    let admin_id = created["createSnapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = api.wait_for_end(&alice, &alice_id, WAIT).await;
    assert_eq!(mine["status"], "PUSHED", "{mine}\n{}", agent.log_tail());
    assert_eq!(
        registry_digest(&own_target),
        mine["manifestDigest"].as_str().unwrap()
    );
    let theirs = api.wait_for_end(&root, &admin_id, WAIT).await;
    assert_eq!(theirs["status"], "PUSHED", "{theirs}");
    assert_eq!(
        registry_digest(&admin_target),
        theirs["manifestDigest"].as_str().unwrap()
    );
    let agent_metrics = agent.metrics(&api).await;
    assert_eq!(
        metric_value(
            &agent_metrics,
            "dcs_agent_commits_total{outcome=\"pushed\"}"
        ),
        2.0,
        "{agent_metrics}"
    );
    // (The same probes as above, now positive: they do see a dispatch.)
    assert!(
        metric_value(&api.metrics().await, "dcs_api_dispatch_attempts_total") >= 2.0,
        "{}",
        api.metrics().await
    );
    assert!(api.log().contains("job dispatched"));

    let seen_by_alice = alice_events.drain(Duration::from_secs(2)).await;
    assert!(
        seen_by_alice
            .iter()
            .any(|e| e["snapshotEvents"]["snapshotId"] == alice_id.as_str()
                && e["snapshotEvents"]["status"] == "PUSHED"),
        "alice sees her snapshot: {seen_by_alice:?}"
    );
    assert!(
        seen_by_alice
            .iter()
            .all(|e| e["snapshotEvents"]["snapshotId"] == alice_id.as_str()),
        "alice sees only hers: {seen_by_alice:?}"
    );
    let seen_by_bob = bob_events.drain(Duration::from_millis(500)).await;
    assert!(seen_by_bob.is_empty(), "bob sees nothing: {seen_by_bob:?}");

    // Another speaker's snapshot does not exist for bob (nor the admin's
    // for alice): NOT_FOUND, whatever the operation.
    for (who, id) in [(&bob, &alice_id), (&alice, &admin_id), (&bob, &admin_id)] {
        let body = api
            .graphql(Some(who.as_str()), documents::SNAPSHOT, json!({"id": id}))
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{body}"
        );
        assert!(body["data"].is_null(), "{body}");
        let body = api
            .graphql(
                Some(who.as_str()),
                "mutation($id: ID!) { cancelSnapshot(id: $id) { id status } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{body}"
        );
        let mut one = api
            .subscribe(
                who,
                "subscription($id: ID) { snapshotEvents(id: $id) { snapshotId status } }",
                json!({"id": id}),
            )
            .await;
        let answer = one.next_message(Duration::from_secs(10)).await;
        let answer = answer.expect("an answer to the subscription");
        // An execution error (`next` with `errors`), or a request error.
        let errors = match answer["type"].as_str() {
            Some("next") => {
                assert!(answer["payload"]["data"].is_null(), "{answer}");
                &answer["payload"]["errors"]
            }
            Some("error") => &answer["payload"],
            _ => panic!("subscription to another's snapshot: {answer}"),
        };
        assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{answer}");
    }
    let listed = api
        .data(
            &bob,
            "{ snapshots(first: 100) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["snapshots"]["edges"], json!([]), "{listed}");
    let listed = api
        .data(
            &alice,
            "{ snapshots(first: 100) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["snapshots"]["edges"],
        json!([{"node": {"id": alice_id}}]),
        "{listed}"
    );
    let listed = api
        .data(
            &root,
            "{ snapshots(first: 100) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["snapshots"]["edges"].as_array().unwrap().len(), 2);
}

/// The brief asks for the refusals in the audit log; those of callers the
/// API could not authenticate are not recorded today.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_refusals_are_audited() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = api_on_postgres(&db, &env).await;
    let secret = api.jwt_secret();
    let now = jwt::now();
    let mut expired = jwt::user_claims("mallory", "admin", &[]);
    expired["exp"] = json!(now - 3600);
    let input = json!({"input": {"containerId": "x", "target": format!("{}/workshops/mallory/x:v1", env.registry)}});
    for token in [
        None,
        Some(jwt::hs256(&secret, &expired)),
        Some(jwt::hs256(
            b"another-secret-of-at-least-32-bytes-xxxxxxxx",
            &jwt::user_claims("mallory", "admin", &[]),
        )),
    ] {
        let body = api
            .graphql(token.as_deref(), documents::CREATE, input.clone())
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{body}"
        );
    }
    assert_eq!(db.query("SELECT count(*) FROM snapshots"), "0");
    let audit = db.query("SELECT action || ' ' || outcome FROM audit_log ORDER BY id");
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("unauthenticated"))
            .count(),
        3,
        "three refused createSnapshot calls, audit log: {audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connection_init_with_a_bad_token_is_refused() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = api_on_postgres(&db, &env).await;
    let secret = api.jwt_secret();
    let now = jwt::now();
    let mut expired = jwt::user_claims("alice", "speaker", &["workshop"]);
    expired["exp"] = json!(now - 3600);
    let mut wrong_audience = jwt::user_claims("alice", "speaker", &["workshop"]);
    wrong_audience["aud"] = json!("another-service");
    let unsigned = jwt::encode(
        b"",
        &json!({"alg": "none"}),
        &jwt::user_claims("alice", "admin", &[]),
    );
    let wrong_key = jwt::hs256(
        b"another-secret-of-at-least-32-bytes-xxxxxxxx",
        &jwt::user_claims("alice", "admin", &[]),
    );
    let bearer = |t: &str| json!({"Authorization": format!("Bearer {t}")});
    let cases = [
        ("no payload", None),
        ("empty payload", Some(json!({}))),
        ("expired", Some(bearer(&jwt::hs256(&secret, &expired)))),
        (
            "wrong audience",
            Some(bearer(&jwt::hs256(&secret, &wrong_audience))),
        ),
        ("alg none", Some(bearer(&unsigned))),
        ("wrong key", Some(bearer(&wrong_key))),
        ("wrong key as token", Some(json!({"token": wrong_key}))),
        ("garbage", Some(bearer("garbage"))),
    ];
    for (name, payload) in cases {
        match api.ws_init(payload).await {
            WsOutcome::Closed(code, reason) => {
                println!("{name}: closed with {code} \"{reason}\"");
                assert!(!reason.is_empty(), "{name}: closed without a reason");
            }
            other => panic!("{name}: expected the socket to be closed, got {other:?}"),
        }
    }
    // Subscribing without connection_init: no data either.
    match api.ws_subscribe_without_init(documents::EVENTS).await {
        WsOutcome::Closed(..) | WsOutcome::Ended(_) => {}
        other => panic!("subscribe without init: {other:?}"),
    }
    // A good token is acknowledged, as header or as `token`.
    let alice = api.token("alice", "speaker", &["workshop"]);
    assert_eq!(api.ws_init(Some(bearer(&alice))).await, WsOutcome::Ack);
    assert_eq!(
        api.ws_init(Some(json!({"token": alice}))).await,
        WsOutcome::Ack
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_works_and_over_deep_queries_are_refused() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = api_on_postgres(&db, &env).await;
    let alice = api.token("alice", "speaker", &["workshop"]);

    let schema = api
        .data(
            &alice,
            "{ __schema { queryType { name } mutationType { name } subscriptionType { name } }
               __type(name: \"Snapshot\") { fields { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(schema["__schema"]["queryType"]["name"], "Query");
    assert_eq!(schema["__schema"]["mutationType"]["name"], "Mutation");
    assert_eq!(
        schema["__schema"]["subscriptionType"]["name"],
        "Subscription"
    );
    let fields: Vec<&str> = schema["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for field in [
        "id",
        "status",
        "parent",
        "children",
        "ancestors",
        "descendants",
    ] {
        assert!(fields.contains(&field), "Snapshot.{field}: {fields:?}");
    }

    // 13 levels of parent, beyond the default depth limit of 12.
    let mut selection = "id".to_string();
    for _ in 0..13 {
        selection = format!("id parent {{ {selection} }}");
    }
    let deep = format!("query($id: ID!) {{ snapshot(id: $id) {{ {selection} }} }}");
    let body = api
        .graphql(
            Some(&alice),
            &deep,
            json!({"id": "00000000-0000-0000-0000-000000000000"}),
        )
        .await;
    assert!(body["data"].is_null(), "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nested too deep"), "{body}");
    // The refusal comes before any resolver: no audit, no SQL side effects.
    assert_eq!(db.query("SELECT count(*) FROM audit_log"), "0");
    println!("over-deep query refused: {body}");

    // An over-complex query (complexity > 2000) is refused as well.
    let many: Vec<String> = (0..2100).map(|i| format!("a{i}: me {{ sub }}")).collect();
    let wide = format!("{{ {} }}", many.join(" "));
    let body = api.graphql(Some(&alice), &wide, json!({})).await;
    assert!(body["data"].is_null(), "{}", &body.to_string()[..300]);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too complex"),
        "{}",
        &body.to_string()[..300]
    );
}

/// The API's agent endpoints refuse anything but a valid agent token for
/// the node the request is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_endpoints_of_the_api_require_a_valid_agent_token() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = api_on_postgres(&db, &env).await;
    let secret = api.agent_secret();
    let node = "node-x";
    let instance = uuid::Uuid::new_v4();
    let snapshot = uuid::Uuid::new_v4();
    let bodies = [
        (
            "/agent/v1/register",
            json!({"node": node, "instanceId": instance, "url": "http://127.0.0.1:1",
                   "version": "0", "containerdVersion": "0", "maxConcurrentJobs": 1}),
        ),
        (
            "/agent/v1/heartbeat",
            json!({"node": node, "instanceId": instance, "runningJobs": []}),
        ),
        (
            "/agent/v1/inventory",
            json!({"node": node, "instanceId": instance, "containers": []}),
        ),
        (
            "/agent/v1/events",
            json!({"snapshotId": snapshot, "node": node, "instanceId": instance, "seq": 1,
                   "at": "2026-01-01T00:00:00Z", "kind": {"type": "DIFFING"}}),
        ),
    ];
    let now = jwt::now();
    let claims = |iss: &str, aud: &str, sub: &str, exp: i64| json!({"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": exp});
    let tokens: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("garbage", Some("Bearer garbage".into())),
        ("empty bearer", Some("Bearer ".into())),
        (
            "a user token (admin)",
            Some(format!("Bearer {}", api.token("root", "admin", &[]))),
        ),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                jwt::hs256(
                    b"another-secret-of-at-least-32-bytes-xxxxxxxx",
                    &claims("dcs-agent", "dcs-api", node, now + 60)
                )
            )),
        ),
        (
            "the API's own token for agents (audience dcs-agent)",
            Some(format!(
                "Bearer {}",
                jwt::hs256(&secret, &claims("dcs-api", "dcs-agent", node, now + 60))
            )),
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                jwt::hs256(&secret, &claims("dcs-api", "dcs-api", node, now + 60))
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                jwt::hs256(&secret, &claims("dcs-agent", "dcs-api", node, now - 120))
            )),
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                jwt::encode(
                    b"",
                    &json!({"alg": "none", "typ": "JWT"}),
                    &claims("dcs-agent", "dcs-api", node, now + 60)
                )
            )),
        ),
        (
            "HS512 with the right secret",
            Some(format!(
                "Bearer {}",
                jwt::encode(
                    &secret,
                    &json!({"alg": "HS512", "typ": "JWT"}),
                    &claims("dcs-agent", "dcs-api", node, now + 60)
                )
            )),
        ),
    ];
    // Every path with every token, every failure reported together.
    let mut failures = Failures::new("the API's agent endpoints without a valid token");
    let http = e2e_tests::stack::http_client();
    for (path, body) in &bodies {
        for (name, header) in &tokens {
            let mut request = http.post(format!("{}{path}", api.url)).json(body);
            if let Some(header) = header {
                request = request.header("Authorization", header);
            }
            let response = request.send().await.expect("POST");
            failures.check_eq(response.status().as_u16(), 401, || {
                format!("{path} with {name}")
            });
            let answer: Value = response.json().await.unwrap_or_default();
            failures.check_eq(&answer["code"], &json!("UNAUTHENTICATED"), || {
                format!("{path} with {name}: {answer}")
            });
        }
        // Other methods are not a way around it either.
        let response = http.get(format!("{}{path}", api.url)).send().await.unwrap();
        failures.check(!response.status().is_success(), || {
            format!("GET {path}: {}", response.status())
        });
    }
    failures.assert_none();
    assert_eq!(
        db.query("SELECT count(*) FROM nodes"),
        "0",
        "nothing registered"
    );

    // A valid token is accepted; one for another node is not enough.
    let good = api.agent_token(node);
    let response = http
        .post(format!("{}/agent/v1/register", api.url))
        .bearer_auth(&good)
        .json(&bodies[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "register with a valid token"
    );
    let response = http
        .post(format!("{}/agent/v1/heartbeat", api.url))
        .bearer_auth(&good)
        .json(&bodies[1].1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"known": true})
    );
    let other = api.agent_token("node-y");
    for (path, body) in &bodies {
        let response = http
            .post(format!("{}{path}", api.url))
            .bearer_auth(&other)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            403,
            "{path} about node-x with node-y's token"
        );
    }
    assert_eq!(db.query("SELECT name FROM nodes"), "node-x");
}

/// Every endpoint of the agent, health checks and unknown paths included,
/// answers 401 and nothing else to a request without a valid API token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answers_401_to_unauthenticated_requests_on_every_path() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = api_on_postgres(&db, &env).await;
    let namespace = unique("auth-agent");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    ctr.run(&["namespaces", "create", &namespace]);
    let agent = Agent::start(&env, &api, "node-401", &namespace);
    let root = api.token("root", "admin", &[]);
    let nodes = "{ nodes { edges { node { name state } } } }";
    api.wait_for(&root, nodes, json!({}), WAIT, |d| {
        page_list(&d["nodes"]) == json!([{"name": "node-401", "state": "READY"}])
    })
    .await;

    let secret = api.agent_secret();
    let now = jwt::now();
    let claims = |iss: &str, aud: &str, sub: &str, exp: i64| json!({"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": exp});
    let signed = |c: Value| format!("Bearer {}", jwt::hs256(&secret, &c));
    let tokens: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("Bearer garbage".into())),
        (
            "basic auth",
            Some(format!("Basic {}", jwt::base64url(b"admin:admin"))),
        ),
        ("a user token", Some(format!("Bearer {root}"))),
        (
            "an agent's token to the API (audience dcs-api)",
            Some(signed(claims("dcs-agent", "dcs-api", "node-401", now + 60))),
        ),
        (
            "a token for another node",
            Some(signed(claims(
                "dcs-api",
                "dcs-agent",
                "node-other",
                now + 60,
            ))),
        ),
        (
            "wrong issuer",
            Some(signed(claims(
                "dcs-agent",
                "dcs-agent",
                "node-401",
                now + 60,
            ))),
        ),
        (
            "expired",
            Some(signed(claims(
                "dcs-api",
                "dcs-agent",
                "node-401",
                now - 120,
            ))),
        ),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                jwt::hs256(
                    b"another-secret-of-at-least-32-bytes-xxxxxxxx",
                    &claims("dcs-api", "dcs-agent", "node-401", now + 60)
                )
            )),
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                jwt::encode(
                    b"",
                    &json!({"alg": "none"}),
                    &claims("dcs-api", "dcs-agent", "node-401", now + 60)
                )
            )),
        ),
    ];
    let job = uuid::Uuid::new_v4();
    let paths = [
        "/".to_string(),
        "/healthz".into(),
        "/readyz".into(),
        "/metrics".into(),
        "/v1/jobs".into(),
        format!("/v1/jobs/{job}"),
        "/nope".into(),
        "/v1/jobs/../healthz".into(),
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
    let http = e2e_tests::stack::http_client();
    // Every path, method and token, every failure reported together.
    let mut failures = Failures::new("the agent's endpoints without a valid token");
    let mut checked = 0;
    for path in &paths {
        for method in methods {
            for (name, header) in &tokens {
                let mut request = http
                    .request(method.parse().unwrap(), format!("{}{path}", agent.url()))
                    .header("Content-Type", "application/json")
                    .body(
                        json!({"snapshotId": job, "containerId": "x", "target": "r/x:1",
                               "compression": "gzip", "pause": true, "excludes": [], "changes": []})
                        .to_string(),
                    );
                if let Some(header) = header {
                    request = request.header("Authorization", header);
                }
                let response = request.send().await.expect("request to the agent");
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                failures.check_eq(status, 401, || {
                    format!("{method} {path} with {name}: {status} {text}")
                });
                failures.check(
                    !text.contains("dcs_agent") && text != "ok" && text != "ready",
                    || format!("{method} {path} with {name} leaked: {text}"),
                );
                checked += 1;
            }
        }
    }
    failures.assert_none();
    println!("{checked} unauthenticated requests answered 401");
    // The API's token gets through (so the 401s are about the token).
    let good = agent.api_token(&api);
    let response = http
        .get(format!("{}/healthz", agent.url()))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    let response = http
        .get(format!("{}/nope", agent.url()))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert!(agent.metrics(&api).await.contains("dcs_agent_jobs_running"));
}

/// The speaker prefix is a template with the token's `sub`; a `sub` with a
/// `/` in it must not reach into another speaker's repositories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_with_a_slash_cannot_push_under_another_speakers_prefix() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = api_on_postgres(&db, &env).await;
    register_unreachable_node(
        &api,
        "node-fake",
        json!([{"id": "desk", "image": "localhost/dcs-test/busybox:1", "imageDigest": null,
                "state": "running", "snapshotter": "overlayfs", "podName": "desktop-0",
                "podNamespace": "workshop", "containerName": "desktop", "owner": "bob/x"}]),
    )
    .await;
    let reg = &env.registry;
    // `bob/x` is a legal JWT subject; it is not bob. (The desktop is
    // theirs, so only the push prefix can refuse.)
    let sneaky = jwt::hs256(
        &api.jwt_secret(),
        &jwt::user_claims("bob/x", "speaker", &["workshop"]),
    );
    let own = api
        .graphql(Some(&sneaky), "{ me { sub } }", json!({}))
        .await;
    assert_eq!(own["data"]["me"]["sub"], "bob/x", "{own}");
    let body = api
        .graphql(
            Some(&sneaky),
            documents::CREATE,
            json!({"input": {"containerId": "desk", "target": format!("{reg}/workshops/bob/x/desk:v1")}}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "a speaker with sub \"bob/x\" got a snapshot queued for {reg}/workshops/bob/x/desk:v1, \
         under bob's prefix {reg}/workshops/bob: {body}"
    );
    assert_eq!(db.query("SELECT count(*) FROM snapshots"), "0");
}
