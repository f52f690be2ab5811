//! The speaker console in a real headless Chromium, against the real
//! stack (`dcs-api` on Postgres, `dcs-agent`, containerd, the registry):
//! a speaker signs in, sees only their desktop, takes two snapshots and
//! watches them reach PUSHED, finds the second as the child of the first
//! in the lineage tree, and meets a refusal with its sentence; an admin
//! creates a webhook endpoint and sees its delivery. Hostile text (a
//! snapshot message with markup) stays text; an expired token returns to
//! sign-in with a sentence; no page loads anything from another origin.
//! Screenshots of every page go to `target/tmp/screenshots/console/`.

use std::path::PathBuf;
use std::time::Duration;

use e2e_tests::browser::Browser;
use e2e_tests::stack::{Agent, Api, ApiOptions, Database, jwt, registry_digest};
use e2e_tests::webhook_receiver::{Receiver, ok};
use e2e_tests::{Ctr, TestEnv, unique};
use serde_json::json;

const SNAPSHOT_WAIT: Duration = Duration::from_secs(90);

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots/console")
}

/// Only the API's own origin, in every URL the page loaded.
async fn assert_same_origin(browser: &Browser, api: &Api) {
    for url in browser.resources().await {
        assert!(
            url.starts_with(&api.url),
            "the page loaded {url} from elsewhere"
        );
    }
}

async fn hash(browser: &Browser) -> String {
    browser
        .run("return location.hash;", json!([]))
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The snapshot form of `container`, opened from the desktops page; with
/// `target` typed over the suggested one when given.
async fn open_form(browser: &Browser, api: &Api, container: &str, target: Option<&str>) {
    browser
        .goto(&format!("{}/console/#/desktops", api.url))
        .await;
    browser
        .click(&format!("tr[data-container={container}] a.button"))
        .await;
    if let Some(target) = target {
        browser.fill("input[name=target]", target).await;
    }
}

/// Takes a snapshot from the open form; returns its id once PUSHED.
async fn submit_and_watch(browser: &Browser, api: &Api, token: &str) -> String {
    browser.click("#snapshot-form button[type=submit]").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        let at = hash(browser).await;
        if let Some(id) = at.strip_prefix("#/snapshots/") {
            break id.to_string();
        }
        let page = browser.text("main").await;
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot page; the form says:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    browser.wait_text("#status", "PUSHED", SNAPSHOT_WAIT).await;
    let snapshot = api.wait_for_end(token, &id, Duration::from_secs(5)).await;
    assert_eq!(snapshot["status"], "PUSHED", "{snapshot}");
    let digest = snapshot["manifestDigest"].as_str().unwrap();
    let pull = browser.text("#pull").await;
    assert!(pull.ends_with(&format!("@{digest}")), "{pull}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speaker_snapshots_from_the_console_and_finds_it_in_the_lineage() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = Api::builder(ApiOptions::postgres(&db, &env.registry, 30))
        .args([
            "--quota-per-day",
            "20",
            "--insecure-registry",
            &env.registry,
        ])
        .start()
        .await;
    let namespace = unique("console");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    ctr.desktop("desk-alice", busybox)
        .pod("desktop-alice")
        .owner("alice")
        .start();
    ctr.desktop("desk-bob", busybox)
        .pod("desktop-bob")
        .owner("bob")
        .start();
    let _agent = Agent::start(&env, &api, "node-1", &namespace);
    let alice = api.token("alice", "speaker", &["workshop"]);
    api.wait_for_running_container(&alice, "desk-alice").await;
    let bob = api.token("bob", "speaker", &["workshop"]);
    api.wait_for_running_container(&bob, "desk-bob").await;

    let browser = Browser::start(&shots()).await;
    // Not signed in: the sign-in page.
    browser.goto(&format!("{}/console/", api.url)).await;
    browser.find("textarea[name=token]").await;
    browser.screenshot("signin").await;
    // A forged token is refused with the API's sentence.
    browser.fill("textarea[name=token]", "not.a.token").await;
    browser.click("form button[type=submit]").await;
    browser
        .wait_text(".error", "UNAUTHENTICATED", Duration::from_secs(10))
        .await;
    browser.fill("textarea[name=token]", &alice).await;
    browser.click("form button[type=submit]").await;
    browser
        .wait_text(
            "#signed-in-as",
            "Signed in as alice (speaker)",
            Duration::from_secs(10),
        )
        .await;

    // My desktops: alice's, not bob's; no admin pages in the menu.
    browser.find("tr[data-container=desk-alice]").await;
    assert_eq!(browser.count("tr[data-container=desk-bob]").await, 0);
    let menu = browser.text("#nav").await;
    assert!(
        !menu.contains("Webhooks") && !menu.contains("Nodes"),
        "{menu}"
    );
    let quota = browser.text("#quota").await;
    assert_eq!(quota, "Your quota: 0 of 20 in the last 24 hours", "{quota}");
    browser.screenshot("desktops").await;

    // The first snapshot, with a message that is markup.
    ctr.exec(
        "desk-alice",
        "mkdir -p /opt/tools && echo v1 > /opt/tools/version",
    );
    browser
        .click("tr[data-container=desk-alice] a.button")
        .await;
    let target = browser.value("input[name=target]").await;
    assert_eq!(
        target,
        format!("{}/workshops/alice/desktop-alice:v1", env.registry)
    );
    let hostile = "<img src=x onerror=\"window.__owned=1\"> tools installed";
    browser.fill("textarea[name=message]", hostile).await;
    browser.screenshot("snapshot-form").await;
    let first = submit_and_watch(&browser, &api, &alice).await;
    let details = browser.text("main").await;
    assert!(
        details.contains(hostile),
        "the message shows as text:\n{details}"
    );
    assert_eq!(
        browser
            .run("return window.__owned === undefined;", json!([]))
            .await,
        true
    );
    browser.screenshot("progress").await;

    // The pod restarts on the new image (as the workshop would roll it
    // out); its snapshot is the first's child, and the tag moves on.
    browser
        .goto(&format!("{}/console/#/desktops", api.url))
        .await;
    browser
        .wait_text(
            "tr[data-container=desk-alice]",
            "PUSHED",
            Duration::from_secs(10),
        )
        .await;
    for step in [
        &["tasks", "kill", "-s", "SIGKILL", "desk-alice"][..],
        &["tasks", "rm", "-f", "desk-alice"],
        &["containers", "rm", "desk-alice"],
    ] {
        let _ = ctr.try_run(step);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ctr.desktop("desk-alice-2", &target)
        .pod("desktop-alice")
        .owner("alice")
        .start();
    api.wait_for_running_container(&alice, "desk-alice-2").await;
    ctr.exec("desk-alice-2", "echo v2 > /opt/tools/version");
    browser.find("tr[data-container=desk-alice-2]").await;
    browser
        .click("tr[data-container=desk-alice-2] a.button")
        .await;
    browser
        .wait_text("h1", "Snapshot of desktop-alice", Duration::from_secs(10))
        .await;
    let target = browser.value("input[name=target]").await;
    assert!(target.ends_with("/desktop-alice:v2"), "{target}");
    let second = submit_and_watch(&browser, &api, &alice).await;
    let snapshot = api
        .wait_for_end(&alice, &second, Duration::from_secs(5))
        .await;
    assert_eq!(
        registry_digest(&target),
        snapshot["manifestDigest"].as_str().unwrap()
    );

    // The lineage: the second is drawn as the first's child.
    browser.click("a[href^='#/lineage/']").await;
    let node = format!(".tree-node[data-id='{second}']");
    browser.find(&node).await;
    let parent = browser
        .run(
            "return document.querySelector(arguments[0]).getAttribute('data-parent');",
            json!([node]),
        )
        .await;
    assert_eq!(
        parent,
        json!(first),
        "the second snapshot's parent in the tree"
    );
    assert_eq!(browser.count(".tree-node").await, 2);
    browser
        .click(&format!(".tree-node[data-id='{first}']"))
        .await;
    browser
        .wait_text("#lineage-details", ":v1", Duration::from_secs(5))
        .await;
    browser.screenshot("lineage").await;

    // A refused action: pushing under bob's prefix.
    let target = format!("{}/workshops/bob/stolen:v1", env.registry);
    open_form(&browser, &api, "desk-alice-2", Some(&target)).await;
    browser.click("#snapshot-form button[type=submit]").await;
    let refusal = browser
        .wait_text(".error", "FORBIDDEN", Duration::from_secs(10))
        .await;
    assert!(
        refusal.contains("speakers may push only under"),
        "{refusal}"
    );
    browser.screenshot("refused").await;

    // A snapshot that fails on the node: its code and sentence, and a
    // retry that brings the form back as it was. (The agent refuses a
    // desktop holding a credentials file; a bad exclude glob no longer
    // gets that far: the API refuses it at once.)
    ctr.exec(
        "desk-alice-2",
        "mkdir -p /root/.aws && echo '[default]' > /root/.aws/credentials",
    );
    let target = format!("{}/workshops/alice/broken:v1", env.registry);
    open_form(&browser, &api, "desk-alice-2", Some(&target)).await;
    browser.fill("textarea[name=excludes]", "/opt/cache").await;
    browser.click("#snapshot-form button[type=submit]").await;
    let failure = browser
        .wait_text("#progress", "FAILED", SNAPSHOT_WAIT)
        .await;
    let code = browser.text("#progress .error strong").await;
    assert!(
        code.contains("SECRETS_FOUND") && failure.contains("/root/.aws/credentials"),
        "{code}: {failure}"
    );
    browser.screenshot("failed").await;
    browser.click("#retry").await;
    browser
        .wait_text("h1", "Snapshot of desktop-alice", Duration::from_secs(10))
        .await;
    assert_eq!(browser.value("textarea[name=excludes]").await, "/opt/cache");
    assert!(
        browser
            .value("input[name=target]")
            .await
            .ends_with("/broken:v1")
    );
    // The preview names the file, never a value; acknowledging it pushes.
    browser
        .click("#snapshot-form .actions button[type=button]")
        .await;
    let preview = browser
        .wait_text("#preview", "/root/.aws/credentials", SNAPSHOT_WAIT)
        .await;
    assert!(preview.contains("found 1 secret"), "{preview}");
    browser.screenshot("preview").await;
    browser.click("#preview input[type=checkbox]").await;
    let acknowledged = submit_and_watch(&browser, &api, &alice).await;

    // Deleting it takes two clicks; the page then says what became of it.
    browser.click("#delete").await;
    browser.screenshot("delete-confirm").await;
    browser.click("#delete-confirm").await;
    let deletion = browser
        .wait_text(
            "#deletion",
            "deleted from the registry",
            Duration::from_secs(30),
        )
        .await;
    assert!(deletion.contains("Deleted by alice"), "{deletion}");
    assert_eq!(
        browser.text("#status").await.split(' ').next(),
        Some("DELETED")
    );
    assert_eq!(browser.count("#delete").await, 0);
    assert_eq!(
        api.snapshot(&alice, &acknowledged).await["status"],
        "DELETED"
    );
    browser.screenshot("deleted").await;

    // History lists them all, newest first.
    browser
        .goto(&format!("{}/console/#/history", api.url))
        .await;
    browser
        .wait_text("#history", ":v2", Duration::from_secs(10))
        .await;
    assert_eq!(browser.count("#history tbody tr").await, 4);
    browser.screenshot("history").await;
    // A narrow screen: the page reflows; only wide tables scroll, inside
    // their own box.
    browser.resize(760, 900).await;
    let overflow = browser
        .run(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is wider than the window by {overflow}"
    );
    browser.screenshot("history-narrow").await;
    browser.resize(1280, 900).await;

    // The admin pages: not for alice, in the page or in the API.
    browser
        .goto(&format!("{}/console/#/admin/webhooks", api.url))
        .await;
    browser
        .wait_text("main", "This page is for admins.", Duration::from_secs(10))
        .await;
    let direct = api
        .graphql(
            Some(&alice),
            "mutation { createWebhookEndpoint(input: {url: \"https://example.com/h\", eventTypes: [SNAPSHOT_PUSHED]}) { secret } }",
            json!({}),
        )
        .await;
    assert_eq!(
        direct["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{direct}"
    );
    assert_same_origin(&browser, &api).await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the browser console: {errors:?}");

    // Bob, in another browser, sees his desktop and none of alice's snapshots.
    let other = Browser::start(&shots()).await;
    other
        .goto(&format!("{}/console/#token={bob}", api.url))
        .await;
    other.find("tr[data-container=desk-bob]").await;
    assert_eq!(other.count("tr[data-container^=desk-alice]").await, 0);
    assert_eq!(
        hash(&other).await,
        "#/desktops",
        "the token left the address bar"
    );
    other.goto(&format!("{}/console/#/history", api.url)).await;
    other
        .wait_text("#history", "No snapshot matches.", Duration::from_secs(10))
        .await;

    // A token that expires: back to sign-in, with a sentence.
    let mut claims = jwt::user_claims("alice", "speaker", &["workshop"]);
    claims["exp"] = json!(jwt::now() + 3);
    let short = jwt::hs256(&api.jwt_secret(), &claims);
    let third = Browser::start(&shots()).await;
    third
        .goto(&format!("{}/console/#token={short}", api.url))
        .await;
    third.find("tr[data-container=desk-alice-2]").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    third.goto(&format!("{}/console/#/history", api.url)).await;
    third
        .wait_text("main", "expired", Duration::from_secs(10))
        .await;
    third.find("textarea[name=token]").await;
    third.screenshot("expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_a_webhook_endpoint_and_sees_its_delivery() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = Api::builder(ApiOptions::postgres(&db, &env.registry, 30))
        .args(["--webhook-allow", "127.0.0.0/8", "--webhook-allow-http"])
        .start()
        .await;
    let namespace = unique("console-admin");
    let _agent = Agent::start(&env, &api, "node-admin", &namespace);
    let receiver = Receiver::start(ok()).await;
    let admin = api.token("root", "admin", &[]);

    let browser = Browser::start(&shots()).await;
    browser
        .goto(&format!("{}/console/#token={admin}", api.url))
        .await;
    browser
        .wait_text("#signed-in-as", "root (admin)", Duration::from_secs(10))
        .await;
    let menu = browser.text("#nav").await;
    assert!(
        menu.contains("Webhooks") && menu.contains("Nodes"),
        "{menu}"
    );

    browser.click("#nav a[href='#/admin/nodes']").await;
    browser
        .wait_text("#nodes", "node-admin", Duration::from_secs(10))
        .await;
    browser.screenshot("admin-nodes").await;

    browser.click("#nav a[href='#/admin/webhooks']").await;
    browser
        .fill("input[name=url]", &receiver.url("/hooks"))
        .await;
    browser
        .fill("input[name=description]", "the event platform")
        .await;
    browser.click("#create-endpoint button[type=submit]").await;
    let secret = browser
        .wait_text("#secret", "whsec_", Duration::from_secs(10))
        .await;
    assert!(secret.contains("not shown again"), "{secret}");
    browser
        .wait_text("#endpoints", "/hooks", Duration::from_secs(10))
        .await;
    browser.screenshot("admin-webhooks").await;

    // A test event, delivered and listed with its attempt.
    browser.click("#endpoints button").await;
    browser
        .wait_text("main", "Test event queued", Duration::from_secs(10))
        .await;
    browser.click("#endpoints a.button").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let open = !browser.all("#deliveries").await.is_empty();
        if open && browser.text("#deliveries").await.contains("SUCCEEDED") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            browser.text("main").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        if open {
            // Drawn before the delivery finished: draw it again.
            browser
                .run(
                    "window.dispatchEvent(new HashChangeEvent('hashchange'));",
                    json!([]),
                )
                .await;
        } else if !browser.all("#endpoints a.button").await.is_empty() {
            // The list was drawn again (after the test event) under the
            // first click, which then went to an element no longer shown.
            browser.click("#endpoints a.button").await;
        }
    }
    browser.screenshot("admin-deliveries").await;

    // GraphiQL works offline: its files come from the API itself.
    browser.goto(&format!("{}/graphql", api.url)).await;
    browser.find(".graphiql-container").await;
    // Its schema loaded (the introspection fits the API's depth limit),
    // and a query runs with the console's token.
    browser.click(".graphiql-execute-button").await;
    browser
        .wait_text(
            ".graphiql-response",
            "\"sub\": \"root\"",
            Duration::from_secs(15),
        )
        .await;
    browser
        .click("button[aria-label='Show Documentation Explorer']")
        .await;
    browser
        .wait_text(".graphiql-doc-explorer", "Query", Duration::from_secs(15))
        .await;
    browser.screenshot("graphiql").await;
    assert_same_origin(&browser, &api).await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the browser console: {errors:?}");
}

/// In registered-only mode the console still works (its documents are
/// registered at start-up), and only they do: anything else a speaker
/// sends is refused as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_registered_only_mode() {
    let env = TestEnv::get();
    let db = Database::fresh();
    let api = Api::builder(ApiOptions::postgres(&db, &env.registry, 30))
        .args(["--persisted-queries", "registered-only"])
        .start()
        .await;
    let alice = api.token("alice", "speaker", &["workshop"]);
    let browser = Browser::start(&shots()).await;
    browser
        .goto(&format!("{}/console/#token={alice}", api.url))
        .await;
    browser
        .wait_text("#signed-in-as", "alice (speaker)", Duration::from_secs(10))
        .await;
    browser
        .wait_text(
            "main",
            "No desktop of yours is running",
            Duration::from_secs(10),
        )
        .await;
    browser
        .goto(&format!("{}/console/#/history", api.url))
        .await;
    browser
        .wait_text("#history", "No snapshot matches.", Duration::from_secs(10))
        .await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the browser console: {errors:?}");
    let other = api.graphql(Some(&alice), "{ me { sub } }", json!({})).await;
    assert_eq!(
        other["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_ALLOWED",
        "{other}"
    );
}
