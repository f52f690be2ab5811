//! The API server's manifest delete against registries played by the test:
//! the Bearer token dance (realm, service, scope, Basic credentials), and
//! hostile answers (a huge token, a realm that is not http(s), a redirect,
//! an error body full of control characters) that must end in a short,
//! clean refusal. The real registry's answers (202, 404, 405, 401) are
//! covered end to end by `tests/tests/lifecycle.rs`.

use std::sync::{Arc, Mutex};

use api::registry::{DeleteOutcome, Registries, RegistryError, RegistrySettings};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use dcs_protocol::reference::parse_target;

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// How the fake token service answers.
#[derive(Clone, Copy)]
enum Token {
    Good,
    Huge,
    NotJson,
}

#[derive(Clone)]
struct Fake {
    realm: String,
    token: Token,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn manifest(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    fake.seen
        .lock()
        .unwrap()
        .push(format!("DELETE {authorization}"));
    if authorization == "Bearer t0ken" {
        return StatusCode::ACCEPTED.into_response();
    }
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"fake registry\",scope=\"repository:ws/alice/d:delete\"",
        fake.realm
    );
    (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response()
}

async fn issue_token(
    State(fake): State<Fake>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    fake.seen
        .lock()
        .unwrap()
        .push(format!("TOKEN {query:?} {authorization}"));
    match fake.token {
        Token::Good => axum::Json(serde_json::json!({"token": "t0ken"})).into_response(),
        Token::Huge => "x".repeat(10 * 1024 * 1024).into_response(),
        Token::NotJson => "<html>login</html>".into_response(),
    }
}

/// A fake registry on a free port; returns its `host:port` and what it saw.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// A registry answering every delete with `status` and an error whose
/// message starts with an escape sequence and runs to 10,000 characters.
async fn noisy_registry(status: StatusCode, code: &'static str) -> String {
    serve(Router::new().route(
        "/v2/ws/alice/d/manifests/{digest}",
        delete(move || async move {
            let message = format!("\u{1b}[31mboom\r\n{}", "y".repeat(10_000));
            let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
            (status, axum::Json(body))
        }),
    ))
    .await
}

async fn token_registry(token: Token, realm: Option<&str>) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let fake = Fake {
        realm: realm
            .map(str::to_string)
            .unwrap_or_else(|| format!("http://{address}/token")),
        token,
        seen: seen.clone(),
    };
    let router = Router::new()
        .route("/v2/ws/alice/d/manifests/{digest}", delete(manifest))
        .route("/token", get(issue_token))
        .with_state(fake);
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, seen)
}

fn registries(address: &str, credentials: Option<&std::path::Path>) -> Registries {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Registries::new(RegistrySettings {
        credentials_file: credentials.map(std::path::Path::to_path_buf),
        insecure: vec![address.to_string()],
    })
    .unwrap()
}

async fn delete_at(registries: &Registries, address: &str) -> Result<DeleteOutcome, RegistryError> {
    let target = parse_target(&format!("{address}/ws/alice/d:v1")).unwrap();
    registries.delete_manifest(&target, DIGEST).await
}

/// The error of a delete at `address` without credentials; fails the test
/// if the registry deleted.
async fn refusal(address: &str) -> RegistryError {
    delete_at(&registries(address, None), address)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_bearer_challenge_gets_a_token_for_its_scope_with_the_credentials() {
    let (address, seen) = token_registry(Token::Good, None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{address}":{{"username":"deleter","password":"s3cret"}}}}}}"#),
    )
    .unwrap();
    let outcome = delete_at(&registries(&address, Some(&config)), &address).await;
    assert_eq!(outcome.unwrap(), DeleteOutcome::Deleted);
    let seen = seen.lock().unwrap().clone();
    // Basic first (it may be all the registry wants), then the token.
    assert!(seen[0].starts_with("DELETE Basic "), "{seen:?}");
    assert!(
        seen[1].contains("(\"scope\", \"repository:ws/alice/d:delete\")")
            && seen[1].contains("(\"service\", \"fake registry\")")
            && seen[1].contains("Basic ZGVsZXRlcjpzM2NyZXQ="),
        "{seen:?}"
    );
    assert_eq!(seen[2], "DELETE Bearer t0ken");
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn hostile_token_services_end_in_a_short_refusal() {
    for (token, realm, expected) in [
        (Token::Huge, None, "too large"),
        (Token::NotJson, None, "not JSON"),
        (
            Token::Good,
            Some("file:///etc/passwd"),
            "not an http(s) URL",
        ),
        (
            Token::Good,
            Some("gopher://127.0.0.1:1/"),
            "not an http(s) URL",
        ),
    ] {
        let (address, _) = token_registry(token, realm).await;
        let error = refusal(&address).await;
        let message = error.to_string();
        assert!(matches!(error, RegistryError::Refused { .. }), "{message}");
        assert!(message.contains(expected), "{expected}: {message}");
        assert!(message.len() < 300, "{message}");
    }
}

#[tokio::test]
async fn odd_answers_are_refusals_with_clean_short_reasons() {
    // A redirect is not followed: a delete is not repeated elsewhere.
    let redirect = serve(Router::new().route(
        "/v2/ws/alice/d/manifests/{digest}",
        delete(|| async {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", "http://169.254.169.254/")],
            )
        }),
    ))
    .await;
    let error = refusal(&redirect).await;
    assert!(
        matches!(error, RegistryError::Refused { status: 307, .. }),
        "{error}"
    );

    // An error body full of control characters and far too long.
    let noisy = noisy_registry(StatusCode::FORBIDDEN, "DENIED").await;
    let error = refusal(&noisy).await;
    assert!(
        matches!(error, RegistryError::Unauthorized { status: 403, .. }),
        "{error}"
    );
    let broken = noisy_registry(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN").await;
    let error = refusal(&broken).await;
    let message = error.to_string();
    assert!(
        matches!(error, RegistryError::Refused { status: 500, .. }),
        "{message}"
    );
    assert!(message.contains("UNKNOWN [31mboom"), "{message}");
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.len() < 400, "{message}");

    // Nobody listening: unreachable, which the API answers UNAVAILABLE.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let error = refusal(&closed).await;
    assert!(
        matches!(error, RegistryError::Unreachable { .. }),
        "{error}"
    );
}
