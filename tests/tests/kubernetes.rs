//! The `kube` code of the API and the agent against a local fake of the
//! Kubernetes API server (`e2e_tests::fake_kube`): pod-name targeting in
//! `createSnapshot`, agents identified by projected service-account tokens
//! (TokenReview), and the API calling agents with its own such token.
//!
//! Real `dcs-api` processes on real Postgres; the end-to-end case runs a
//! real `dcs-agent` on the test containerd and pushes to the test registry.

use std::time::{Duration, Instant};

use e2e_tests::fake_agent::{register_unreachable_node, registration};
use e2e_tests::fake_kube::{self, AudienceCheck, FakeKube, Identity};
use e2e_tests::stack::{
    Agent, Api, ApiOptions, Database, documents, error_code, http_client, page_list,
};
use e2e_tests::{Ctr, TestEnv, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const DUMMY_REGISTRY: &str = "127.0.0.1:5999";

async fn api_with_kube(db: &Database, kube_url: &str, registry: &str, extra: &[&str]) -> Api {
    let mut args = vec!["--kubernetes-api-url".to_string(), kube_url.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Api::builder(ApiOptions::postgres(db, registry, 60))
        .args(args)
        .start()
        .await
}

/// `createSnapshot` by pod; returns the whole response.
async fn create_by_pod(
    api: &Api,
    token: &str,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    target: &str,
) -> Value {
    let mut input = json!({"podNamespace": namespace, "podName": pod, "target": target});
    if let Some(container) = container {
        input["containerName"] = json!(container);
    }
    api.graphql(Some(token), documents::CREATE, json!({"input": input}))
        .await
}

fn summary(id: &str, namespace: &str, pod: &str, container: &str) -> Value {
    json!({"id": id, "image": e2e_tests::BUSYBOX_IMAGE, "imageDigest": null,
           "state": "running", "snapshotter": "overlayfs", "podName": pod,
           "podNamespace": namespace, "containerName": container})
}

/// Each refusal of pod-name targeting carries its own code, and is decided
/// from the pod the (fake) API server serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_name_targeting_resolves_the_pod_and_refuses_with_the_right_codes() {
    let started = Instant::now();
    let kube = FakeKube::start().await;
    let db = Database::fresh();
    let api = api_with_kube(&db, &kube.url, DUMMY_REGISTRY, &[]).await;
    let alice = api.token("alice", "speaker", &["workshop"]);
    let bob = api.token("bob", "speaker", &["workshop"]);
    let target = |name: &str| format!("{DUMMY_REGISTRY}/workshops/alice/{name}:v1");

    // The agent of node-1 has reported these containerd containers.
    register_unreachable_node(
        &api,
        "node-1",
        json!([
            summary("desk-1", "workshop", "desk", "desktop"),
            summary("multi-desktop", "workshop", "multi", "desktop"),
            summary("owned-1", "other", "owned", "desktop"),
            summary("foreign-1", "other", "foreign", "desktop"),
            summary("unowned-1", "workshop", "unowned", "desktop"),
        ]),
    )
    .await;
    // Alice's pods in her namespace; the refusals below that are not about
    // ownership need a pod she owns to get that far.
    let alices = |pod| fake_kube::labelled(pod, "dcs.io/owner", "alice");
    kube.put_pod(alices(fake_kube::running_pod(
        "workshop",
        "desk",
        "node-1",
        &[("desktop", Some("desk-1"))],
    )));
    kube.put_pod(alices(fake_kube::pending_pod(
        "workshop",
        "pending",
        "node-1",
        &["desktop"],
    )));
    kube.put_pod(alices(fake_kube::running_pod(
        "workshop",
        "multi",
        "node-1",
        &[
            ("desktop", Some("multi-desktop")),
            ("sidecar", Some("multi-sidecar")),
        ],
    )));
    kube.put_pod(alices(fake_kube::running_pod(
        "workshop",
        "starting",
        "node-1",
        &[("desktop", None)],
    )));
    let mut docker = fake_kube::running_pod("workshop", "docker", "node-1", &[("desktop", None)]);
    docker
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .container_id = Some("docker://0123abcd".into());
    kube.put_pod(alices(docker));
    kube.put_pod(alices(fake_kube::running_pod(
        "workshop",
        "unreported",
        "node-1",
        &[("desktop", Some("never-reported"))],
    )));
    // In her namespace, but nobody's.
    kube.put_pod(fake_kube::running_pod(
        "workshop",
        "unowned",
        "node-1",
        &[("desktop", Some("unowned-1"))],
    ));
    kube.put_pod(fake_kube::running_pod(
        "other",
        "foreign",
        "node-1",
        &[("desktop", Some("foreign-1"))],
    ));
    kube.put_pod(fake_kube::labelled(
        fake_kube::running_pod("other", "owned", "node-1", &[("desktop", Some("owned-1"))]),
        "dcs.io/owner",
        "alice",
    ));

    struct Case<'a> {
        what: &'a str,
        token: &'a str,
        namespace: &'a str,
        pod: &'a str,
        container: Option<&'a str>,
        code: &'a str,
    }
    let cases = [
        Case {
            what: "pod not found",
            token: &alice,
            namespace: "workshop",
            pod: "missing",
            container: None,
            code: "NOT_FOUND",
        },
        Case {
            what: "pod not running (Pending)",
            token: &alice,
            namespace: "workshop",
            pod: "pending",
            container: Some("desktop"),
            code: "CONFLICT",
        },
        Case {
            what: "several containers and no containerName",
            token: &alice,
            namespace: "workshop",
            pod: "multi",
            container: None,
            code: "BAD_USER_INPUT",
        },
        Case {
            what: "container name missing from the pod",
            token: &alice,
            namespace: "workshop",
            pod: "multi",
            container: Some("nope"),
            code: "NOT_FOUND",
        },
        Case {
            what: "container not started (no containerID)",
            token: &alice,
            namespace: "workshop",
            pod: "starting",
            container: None,
            code: "CONFLICT",
        },
        Case {
            what: "container not on containerd (docker://)",
            token: &alice,
            namespace: "workshop",
            pod: "docker",
            container: None,
            code: "CONFLICT",
        },
        Case {
            what: "container the node's agent has not reported",
            token: &alice,
            namespace: "workshop",
            pod: "unreported",
            container: None,
            code: "UNAVAILABLE",
        },
        Case {
            what: "sidecar of a pod, not reported",
            token: &alice,
            namespace: "workshop",
            pod: "multi",
            container: Some("sidecar"),
            code: "UNAVAILABLE",
        },
        // Not the caller's: exactly like a pod that does not exist,
        // whatever state the pod is in.
        Case {
            what: "namespace not in the claim, no owner label",
            token: &alice,
            namespace: "other",
            pod: "foreign",
            container: None,
            code: "NOT_FOUND",
        },
        Case {
            what: "owner label names another speaker, namespace not in the claim",
            token: &bob,
            namespace: "other",
            pod: "owned",
            container: None,
            code: "NOT_FOUND",
        },
        Case {
            what: "owner label names the speaker, namespace not in the claim",
            token: &alice,
            namespace: "other",
            pod: "owned",
            container: None,
            code: "NOT_FOUND",
        },
        Case {
            what: "namespace in the claim, another speaker's pod",
            token: &bob,
            namespace: "workshop",
            pod: "desk",
            container: None,
            code: "NOT_FOUND",
        },
        Case {
            what: "namespace in the claim, another speaker's pod that is not running",
            token: &bob,
            namespace: "workshop",
            pod: "pending",
            container: Some("desktop"),
            code: "NOT_FOUND",
        },
        Case {
            what: "namespace in the claim, a pod without an owner",
            token: &alice,
            namespace: "workshop",
            pod: "unowned",
            container: None,
            code: "NOT_FOUND",
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let body = create_by_pod(
            &api,
            case.token,
            case.namespace,
            case.pod,
            case.container,
            &target(case.pod),
        )
        .await;
        let code = error_code(&body);
        if code != case.code {
            failures.push(format!(
                "{}: expected {}, got {code:?}: {body}",
                case.what, case.code
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "wrong codes:\n{}\nAPI log:\n{}",
        failures.join("\n"),
        api.log_tail()
    );
    // The API asked the API server for each pod, by namespace and name.
    let gets = kube.pod_gets();
    for path in [
        "/api/v1/namespaces/workshop/pods/missing",
        "/api/v1/namespaces/workshop/pods/pending",
        "/api/v1/namespaces/other/pods/foreign",
    ] {
        assert!(gets.iter().any(|g| g == path), "{path} in {gets:?}");
    }

    // A node other than the pod's: refused.
    let body = api
        .graphql(
            Some(&alice),
            documents::CREATE,
            json!({"input": {"podNamespace": "workshop", "podName": "desk", "node": "node-2",
                             "target": target("desk")}}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "wrong node: {body}");

    // Allowed: her pod in her namespace, the container resolved from the
    // pod status, the owner taken from the pod.
    let body = create_by_pod(&api, &alice, "workshop", "desk", None, &target("desk")).await;
    assert!(body["errors"].is_null(), "own pod: {body}");
    let id = body["data"]["createSnapshot"]["id"].as_str().unwrap();
    assert_eq!(
        db.query(&format!(
            "SELECT node || ' ' || container_id || ' ' || pod_namespace || ' ' || pod_name || ' ' \
             || container_name || ' ' || owner FROM snapshots WHERE id = '{id}'"
        )),
        "node-1 desk-1 workshop desk desktop alice"
    );
    // Bob cannot even see that snapshot.
    let body = api
        .graphql(Some(&bob), documents::SNAPSHOT, json!({"id": id}))
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");

    // Namespace-wide access (an API started so): every pod of the
    // speaker's namespaces, still none outside them.
    let db_wide = Database::fresh();
    let wide = api_with_kube(
        &db_wide,
        &kube.url,
        DUMMY_REGISTRY,
        &["--access-scope", "namespace"],
    )
    .await;
    register_unreachable_node(
        &wide,
        "node-1",
        json!([
            summary("desk-1", "workshop", "desk", "desktop"),
            summary("owned-1", "other", "owned", "desktop"),
        ]),
    )
    .await;
    let bob_wide = wide.token("bob", "speaker", &["workshop"]);
    let alice_wide = wide.token("alice", "speaker", &["workshop"]);
    let bob_target = format!("{DUMMY_REGISTRY}/workshops/bob/desk:v1");
    let body = create_by_pod(&wide, &bob_wide, "workshop", "desk", None, &bob_target).await;
    assert!(body["errors"].is_null(), "namespace-wide: {body}");
    let id = body["data"]["createSnapshot"]["id"].as_str().unwrap();
    assert_eq!(
        db_wide.query(&format!(
            "SELECT requested_by || ' ' || owner FROM snapshots WHERE id = '{id}'"
        )),
        "bob alice"
    );
    // The desktop's owner sees the snapshot bob took of it.
    let body = wide
        .graphql(Some(&alice_wide), documents::SNAPSHOT, json!({"id": id}))
        .await;
    assert!(body["errors"].is_null(), "the owner sees it: {body}");
    let body = create_by_pod(&wide, &alice_wide, "other", "owned", None, &target("owned")).await;
    assert_eq!(
        error_code(&body),
        "NOT_FOUND",
        "outside the namespaces: {body}"
    );

    // The API server in trouble: UNAVAILABLE, not a wrong answer.
    kube.set_failure(Some(500));
    let body = create_by_pod(
        &api,
        &alice,
        "workshop",
        "multi",
        Some("desktop"),
        &target("m"),
    )
    .await;
    assert_eq!(error_code(&body), "UNAVAILABLE", "API server 500: {body}");
    kube.set_failure(None);

    // An API server nobody answers at: UNAVAILABLE too.
    let dead = format!("http://127.0.0.1:{}", e2e_tests::stack::free_port());
    let db2 = Database::fresh();
    let cut_off = api_with_kube(&db2, &dead, DUMMY_REGISTRY, &[]).await;
    let carol = cut_off.token("carol", "speaker", &["workshop"]);
    let body = create_by_pod(&cut_off, &carol, "workshop", "desk", None, &target("x")).await;
    assert_eq!(error_code(&body), "UNAVAILABLE", "unreachable: {body}");
    eprintln!("pod targeting cases took {:?}", started.elapsed());
}

/// POSTs a registration for `node` to the API with this bearer token;
/// returns the status.
async fn register_with(api: &Api, token: &str, node: &str) -> u16 {
    http_client()
        .post(format!("{}/agent/v1/register", api.url))
        .bearer_auth(token)
        .json(&registration(
            node,
            uuid::Uuid::new_v4(),
            &format!("http://127.0.0.1:{}", e2e_tests::stack::free_port()),
        ))
        .send()
        .await
        .expect("POST /agent/v1/register")
        .status()
        .as_u16()
}

/// Agents presenting projected service-account tokens: the API reviews
/// each with TokenReview for its agent audience, checks the service
/// account, and takes the node from the token (or from the agent's pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_identified_by_token_review_and_held_to_their_node() {
    let kube = FakeKube::start().await;
    let db = Database::fresh();
    let api = api_with_kube(&db, &kube.url, DUMMY_REGISTRY, &[]).await;

    let agent_sa =
        |audiences: &[&str]| Identity::service_account("dcs-system", "dcs-agent", audiences);
    kube.add_token(
        "sa-node-1",
        agent_sa(&["dcs-agent"])
            .on_node("node-1")
            .in_pod("dcs-agent-abcde"),
    );
    // A token of the agents' service account, but for the API server's
    // default audience (the token any pod has mounted).
    kube.add_token(
        "sa-default-audience",
        agent_sa(&[fake_kube::DEFAULT_AUDIENCE]).on_node("node-1"),
    );
    kube.add_token("sa-expired", Identity::rejected());
    // Any workload can request a token for audience dcs-agent, for its own
    // service account.
    kube.add_token(
        "other-sa",
        Identity::service_account("workshop", "default", &["dcs-agent"]).on_node("node-1"),
    );
    // An older cluster: no node in the token, only the pod.
    kube.add_token(
        "sa-pod-only",
        agent_sa(&["dcs-agent"]).in_pod("dcs-agent-7xk2p"),
    );
    kube.put_pod(fake_kube::running_pod(
        "dcs-system",
        "dcs-agent-7xk2p",
        "node-1",
        &[("agent", Some("agent-1"))],
    ));
    kube.add_token(
        "sa-pod-gone",
        agent_sa(&["dcs-agent"]).in_pod("dcs-agent-gone1"),
    );

    let mut failures = Vec::new();
    let mut check = |what: &str, got: u16, want: u16| {
        if got != want {
            failures.push(format!("{what}: HTTP {got}, expected {want}"));
        }
    };
    check(
        "(a) valid agent token, node-1",
        register_with(&api, "sa-node-1", "node-1").await,
        200,
    );
    check(
        "(b) token for another audience",
        register_with(&api, "sa-default-audience", "node-1").await,
        401,
    );
    check(
        "(c) valid token (node-1) claiming node-2",
        register_with(&api, "sa-node-1", "node-2").await,
        403,
    );
    check(
        "(d) token rejected",
        register_with(&api, "sa-expired", "node-1").await,
        401,
    );
    check(
        "unknown token",
        register_with(&api, "no-such-token", "node-1").await,
        401,
    );
    check(
        "another service account with the agent audience",
        register_with(&api, "other-sa", "node-1").await,
        401,
    );
    check(
        "(e) node from the agent's pod (spec.nodeName)",
        register_with(&api, "sa-pod-only", "node-1").await,
        200,
    );
    check(
        "(e) node from the agent's pod, claiming node-2",
        register_with(&api, "sa-pod-only", "node-2").await,
        403,
    );
    check(
        "pod named in the token does not exist",
        register_with(&api, "sa-pod-gone", "node-1").await,
        401,
    );
    // The other endpoints hold the agent to its node too.
    let heartbeat = http_client()
        .post(format!("{}/agent/v1/heartbeat", api.url))
        .bearer_auth("sa-node-1")
        .json(&json!({"node": "node-2", "instanceId": uuid::Uuid::new_v4(), "runningJobs": []}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    check("heartbeat for node-2 with node-1's token", heartbeat, 403);

    // A server that does not check audiences: the API checks them itself.
    kube.set_audience_check(AudienceCheck::Ignore);
    kube.add_token(
        "sa-default-audience-2",
        agent_sa(&[fake_kube::DEFAULT_AUDIENCE]).on_node("node-1"),
    );
    check(
        "(b) another audience, server not checking",
        register_with(&api, "sa-default-audience-2", "node-1").await,
        401,
    );
    kube.add_token("sa-node-1-bis", agent_sa(&["dcs-agent"]).on_node("node-1"));
    check(
        "valid token, server not checking audiences",
        register_with(&api, "sa-node-1-bis", "node-1").await,
        200,
    );
    kube.set_audience_check(AudienceCheck::Server);

    // TokenReview failing: the agent is told to retry (503), not refused.
    kube.add_token("sa-node-1-ter", agent_sa(&["dcs-agent"]).on_node("node-1"));
    kube.set_failure(Some(500));
    check(
        "TokenReview failing",
        register_with(&api, "sa-node-1-ter", "node-1").await,
        503,
    );
    kube.set_failure(None);
    assert!(
        failures.is_empty(),
        "{}\nAPI log:\n{}",
        failures.join("\n"),
        api.log_tail()
    );

    // Every review asked for the agents' audience only.
    let reviews = kube.token_reviews();
    assert!(!reviews.is_empty());
    for review in &reviews {
        assert_eq!(
            review.spec.audiences.as_deref(),
            Some(&["dcs-agent".to_string()][..]),
            "{review:?}"
        );
    }
    // The pod-only token made the API look up the agent's pod in the
    // agents' namespace.
    assert!(
        kube.pod_gets()
            .contains(&"/api/v1/namespaces/dcs-system/pods/dcs-agent-7xk2p".to_string()),
        "{:?}",
        kube.pod_gets()
    );
    assert_eq!(
        db.query("SELECT string_agg(name, ',' ORDER BY name) FROM nodes"),
        "node-1"
    );
}

/// The whole flow in cluster mode: a real agent presents its projected
/// token to the API (and not the shared secret: its secret file differs
/// from the API's), the API calls the agent with its own projected token,
/// which the agent reviews; the speaker names the pod, and the API finds
/// node and containerd id in the pod's status. The snapshot is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_named_by_a_speaker_is_snapshotted_with_service_account_tokens_both_ways() {
    let started = Instant::now();
    let env = TestEnv::get();
    let kube = FakeKube::start().await;
    let db = Database::fresh();
    let work = std::env::temp_dir().join(unique("dcs-k8s"));
    std::fs::create_dir_all(&work).unwrap();
    let api_token_file = work.join("api-token");
    let agent_token_file = work.join("agent-token");
    let unrelated_secret = work.join("unrelated-secret");
    let api_sa_token = format!("api-sa-{}", uuid::Uuid::new_v4());
    let agent_sa_token = format!("agent-sa-{}", uuid::Uuid::new_v4());
    std::fs::write(&api_token_file, &api_sa_token).unwrap();
    std::fs::write(&agent_token_file, format!("{agent_sa_token}\n")).unwrap();
    std::fs::write(
        &unrelated_secret,
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
    )
    .unwrap();
    kube.add_token(
        &api_sa_token,
        Identity::service_account("dcs-system", "dcs-api", &["dcs-agent"]).in_pod("dcs-api-5d9c7"),
    );
    kube.add_token(
        &agent_sa_token,
        Identity::service_account("dcs-system", "dcs-agent", &["dcs-agent"])
            .on_node("node-1")
            .in_pod("dcs-agent-x1x2x"),
    );

    let api = api_with_kube(
        &db,
        &kube.url,
        &env.registry,
        &["--agent-call-token-file", api_token_file.to_str().unwrap()],
    )
    .await;
    let namespace = unique("k8s");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    let container_id = unique("desk");
    ctr.desktop(&container_id, busybox).owner("alice").start();
    ctr.exec(
        &container_id,
        "mkdir -p /opt/k8s && echo by-pod-name > /opt/k8s/marker",
    );
    kube.put_pod(fake_kube::labelled(
        fake_kube::running_pod(
            "workshop",
            "desktop-0",
            "node-1",
            &[("desktop", Some(&container_id))],
        ),
        "dcs.io/owner",
        "alice",
    ));
    let agent = Agent::builder(&env, &api, "node-1", &namespace)
        .args([
            "--shared-secret-file",
            unrelated_secret.to_str().unwrap(),
            "--service-account-token-file",
            agent_token_file.to_str().unwrap(),
            "--kubernetes-api-url",
            &kube.url,
        ])
        .start();
    let alice = api.token("alice", "speaker", &["workshop"]);
    api.wait_for(&alice, documents::CONTAINERS, json!({}), WAIT, |d| {
        page_list(&d["containers"])
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["id"] == container_id.as_str()))
    })
    .await;
    assert!(
        !kube.reviews_of(&agent_sa_token).is_empty(),
        "the API reviewed the agent's token"
    );

    let target = format!("{}/workshops/alice/k8s:{}", env.registry, unique("v"));
    let body = create_by_pod(&api, &alice, "workshop", "desktop-0", None, &target).await;
    assert!(body["errors"].is_null(), "{body}\n{}", api.log_tail());
    let id = body["data"]["createSnapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = api
        .wait_for(&alice, documents::SNAPSHOT, json!({"id": id}), WAIT, |d| {
            let s = &d["snapshot"]["status"];
            s == "PUSHED" || s == "FAILED" || s == "CANCELLED"
        })
        .await;
    assert_eq!(
        done["snapshot"]["status"],
        "PUSHED",
        "{done}\nAPI log:\n{}\nagent log:\n{}",
        api.log_tail(),
        agent.log_tail()
    );
    assert_eq!(
        e2e_tests::stack::registry_digest(&target),
        done["snapshot"]["manifestDigest"].as_str().unwrap(),
        "the registry serves the pushed manifest"
    );
    let fresh = Ctr::new(&env.containerd_socket, &unique("fresh"));
    fresh.pull_plain_http(&target);
    assert_eq!(
        fresh.run_once(&target, "cat /opt/k8s/marker").trim(),
        "by-pod-name"
    );
    assert_eq!(
        db.query(&format!(
            "SELECT node || ' ' || container_id FROM snapshots WHERE id = '{id}'"
        )),
        format!("node-1 {container_id}")
    );

    // Both directions were TokenReviews for audience dcs-agent.
    let api_reviews = kube.reviews_of(&api_sa_token);
    assert!(
        !api_reviews.is_empty(),
        "the agent reviewed the API's token"
    );
    for review in api_reviews
        .iter()
        .chain(kube.reviews_of(&agent_sa_token).iter())
    {
        assert_eq!(
            review.spec.audiences.as_deref(),
            Some(&["dcs-agent".to_string()][..])
        );
    }

    // The agent, called directly.
    kube.add_token("rejected", Identity::rejected());
    kube.add_token(
        "agent-sa-as-api",
        Identity::service_account("dcs-system", "dcs-agent", &["dcs-agent"]).on_node("node-1"),
    );
    kube.add_token(
        "api-sa-other-audience",
        Identity::service_account("dcs-system", "dcs-api", &[fake_kube::DEFAULT_AUDIENCE]),
    );
    let http = http_client();
    let job = json!({"snapshotId": uuid::Uuid::new_v4(), "containerId": container_id,
                     "target": target, "compression": "gzip", "pause": false,
                     "excludes": [], "changes": [], "message": null});
    for (token, want) in [
        ("rejected", 401),
        ("agent-sa-as-api", 401),
        ("api-sa-other-audience", 401),
    ] {
        let status = http
            .post(format!("{}/v1/jobs", agent.url()))
            .bearer_auth(token)
            .json(&job)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, want, "POST /v1/jobs with {token}");
        let status = http
            .get(format!("{}/healthz", agent.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, want, "GET /healthz with {token}");
    }
    let status = http
        .get(format!("{}/healthz", agent.url()))
        .bearer_auth(&api_sa_token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200, "the API's own token");
    eprintln!("cluster-mode snapshot took {:?}", started.elapsed());
}

/// The TokenReview API documents that an answer with `authenticated: true`
/// and no `status.audiences` comes from an authenticator that is not
/// audience-aware, and means the token is valid for the API server's own
/// audience; "a client of the TokenReview API that sets the spec.audiences
/// field should validate that a compatible audience identifier is returned
/// in the status.audiences field". So neither the API (checking agents) nor
/// an agent (checking the API) may accept such an answer: a token any pod
/// has mounted (default audience) would otherwise pass as an agent's or as
/// the API's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_review_answer_without_audiences_authenticates_no_one() {
    let env = TestEnv::get();
    let kube = FakeKube::start().await;
    let db = Database::fresh();
    let api = api_with_kube(&db, &kube.url, DUMMY_REGISTRY, &[]).await;
    kube.set_audience_check(AudienceCheck::Omit);
    kube.add_token(
        "agent-sa-default-audience",
        Identity::service_account("dcs-system", "dcs-agent", &[fake_kube::DEFAULT_AUDIENCE])
            .on_node("node-1"),
    );
    kube.add_token(
        "api-sa-default-audience",
        Identity::service_account("dcs-system", "dcs-api", &[fake_kube::DEFAULT_AUDIENCE]),
    );
    let namespace = unique("k8s-aud");
    // This agent registers with the shared secret; it reviews the API's
    // tokens with the fake.
    let agent = Agent::builder(&env, &api, "node-9", &namespace)
        .args(["--kubernetes-api-url", &kube.url])
        .start();
    let http = http_client();
    let deadline = Instant::now() + WAIT;
    loop {
        // Ready when it answers the API's shared-secret token.
        let r = http
            .get(format!("{}/healthz", agent.url()))
            .bearer_auth(agent.api_token(&api))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent did not start: {}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let api_side = register_with(&api, "agent-sa-default-audience", "node-1").await;
    let agent_side = http
        .get(format!("{}/healthz", agent.url()))
        .bearer_auth("api-sa-default-audience")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    // The fake did answer authenticated, without audiences, to both.
    for token in ["agent-sa-default-audience", "api-sa-default-audience"] {
        assert!(!kube.reviews_of(token).is_empty(), "{token} was reviewed");
    }
    assert_eq!(
        (api_side, agent_side),
        (401, 401),
        "a review without status.audiences was accepted (API register: HTTP {api_side}, \
         agent /healthz: HTTP {agent_side})"
    );
}
