//! In a cluster, the API calls agents with its projected service-account
//! token; the agent checks it with a TokenReview (right audience, the API's
//! service account). Reviews are cached briefly, so a burst of calls costs
//! one review.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

const CACHE: Duration = Duration::from_secs(30);

pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
    /// `system:serviceaccount:<namespace>:<name>` of the API.
    username: String,
    cache: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// `api_url`: a plain, unauthenticated API server (tests); else the
    /// in-cluster configuration.
    pub async fn connect(
        api_url: Option<&str>,
        audience: &str,
        service_account: &str,
    ) -> anyhow::Result<Self> {
        let config = match api_url {
            Some(url) => kube::Config::new(url.parse()?),
            None => kube::Config::infer().await?,
        };
        let (namespace, name) = service_account
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("the API service account must be <namespace>:<name>"))?;
        Ok(Self {
            client: kube::Client::try_from(config)?,
            audience: audience.to_string(),
            username: format!("system:serviceaccount:{namespace}:{name}"),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `token` is the API's, for this agent's audience.
    pub async fn is_api(&self, token: &str) -> bool {
        if let Ok(cache) = self.cache.lock()
            && cache.get(token).is_some_and(|at| at.elapsed() < CACHE)
        {
            return true;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let status = match reviews.create(&PostParams::default(), &review).await {
            Ok(answer) => answer.status,
            Err(e) => {
                tracing::warn!(error = %e, "TokenReview failed");
                return false;
            }
        };
        let Some(status) = status else {
            return false;
        };
        let ok = status.authenticated == Some(true)
            && status
                .audiences
                .as_ref()
                .is_some_and(|a| a.iter().any(|x| x == &self.audience))
            && status.user.and_then(|u| u.username).as_deref() == Some(self.username.as_str());
        if ok && let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, at| at.elapsed() < CACHE);
            cache.insert(token.to_string(), Instant::now());
        }
        ok
    }
}
