//! Checking a Kubernetes service-account token with a TokenReview: the API
//! checks the agents' projected tokens, an agent checks the API's. A
//! reviewed token is trusted for [`CACHE_TTL`] before it is reviewed again,
//! so a burst of calls costs one review.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use kube::api::{Api, PostParams};

/// How long a reviewed token is trusted without asking again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// A client of the Kubernetes API server; `api_url` is a plain,
/// unauthenticated API server (the tests' fake), else the in-cluster
/// configuration.
pub async fn client(api_url: Option<&str>) -> anyhow::Result<kube::Client> {
    let config = match api_url {
        Some(url) => kube::Config::new(url.parse()?),
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Reviews tokens that must carry one audience and belong to one service
/// account; remembers what the caller made of a token (`V`) for a while.
pub struct TokenReviewer<V> {
    client: kube::Client,
    audience: String,
    /// The service account's namespace.
    namespace: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    username: String,
    cache: Mutex<HashMap<String, (V, Instant)>>,
}

impl<V> std::fmt::Debug for TokenReviewer<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the cache: its keys are bearer tokens.
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl<V: Clone> TokenReviewer<V> {
    /// `service_account` is `<namespace>:<name>`; `None` when it is not.
    pub fn new(client: kube::Client, audience: &str, service_account: &str) -> Option<Self> {
        let (namespace, name) = service_account.split_once(':')?;
        Some(Self {
            client,
            audience: audience.to_string(),
            namespace: namespace.to_string(),
            username: format!("system:serviceaccount:{namespace}:{name}"),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The namespace of the expected service account.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The user behind `token` when the API server says it is
    /// authenticated, for our audience, and the expected service account;
    /// `None` when it is not. An error when the API server did not answer.
    pub async fn review(&self, token: &str) -> Result<Option<UserInfo>, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let answer = reviews.create(&PostParams::default(), &review).await?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        let audience_ok = status
            .audiences
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x == &self.audience));
        if status.authenticated != Some(true) || !audience_ok {
            return Ok(None);
        }
        Ok(status
            .user
            .filter(|user| user.username.as_deref() == Some(self.username.as_str())))
    }

    /// What was made of `token` within the last [`CACHE_TTL`].
    pub fn cached(&self, token: &str) -> Option<V> {
        let cache = self.cache.lock().ok()?;
        let (value, at) = cache.get(token)?;
        (at.elapsed() < CACHE_TTL).then(|| value.clone())
    }

    /// Remembers what was made of a reviewed token; drops expired entries.
    pub fn remember(&self, token: &str, value: V) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            cache.insert(token.to_string(), (value, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of an address nothing listens on: these tests never call it.
    async fn reviewer() -> TokenReviewer<String> {
        let client = client(Some("http://127.0.0.1:9")).await.expect("client");
        TokenReviewer::new(client, "dcs-agent", "dcs-system:dcs-agent").expect("reviewer")
    }

    #[tokio::test]
    async fn the_service_account_is_namespace_and_name() {
        let client = client(Some("http://127.0.0.1:9")).await.expect("client");
        assert!(TokenReviewer::<()>::new(client, "a", "no-colon").is_none());
        let r = reviewer().await;
        assert_eq!(r.namespace(), "dcs-system");
        assert_eq!(r.username, "system:serviceaccount:dcs-system:dcs-agent");
    }

    #[tokio::test]
    async fn a_remembered_token_is_answered_from_the_cache() {
        let r = reviewer().await;
        assert_eq!(r.cached("t1"), None);
        r.remember("t1", "node-a".to_string());
        assert_eq!(r.cached("t1").as_deref(), Some("node-a"));
        assert_eq!(r.cached("t2"), None);
        // The Debug form never shows a token.
        assert!(!format!("{r:?}").contains("t1"));
    }

    #[tokio::test]
    async fn an_expired_entry_is_not_used_and_is_dropped() {
        let r = reviewer().await;
        let long_ago = Instant::now()
            .checked_sub(CACHE_TTL + Duration::from_secs(1))
            .expect("a monotonic clock older than the cache's lifetime");
        r.cache
            .lock()
            .unwrap()
            .insert("old".to_string(), ("node-a".to_string(), long_ago));
        assert_eq!(r.cached("old"), None);
        r.remember("new", "node-b".to_string());
        assert!(!r.cache.lock().unwrap().contains_key("old"));
    }
}
