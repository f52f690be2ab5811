//! In a cluster, the API calls agents with its projected service-account
//! token; the agent checks it with a TokenReview (right audience, the API's
//! service account), through the reviewer the API uses for agents' tokens
//! (`dcs_support::token_review`, which caches reviews briefly).

use dcs_support::token_review::{self, TokenReviewer};

/// Recognises the API's tokens; a cached entry means "the API's".
#[derive(Debug)]
pub struct ApiTokenReviewer(TokenReviewer<()>);

impl ApiTokenReviewer {
    /// `api_url`: a plain, unauthenticated API server (tests); else the
    /// in-cluster configuration.
    pub async fn connect(
        api_url: Option<&str>,
        audience: &str,
        service_account: &str,
    ) -> anyhow::Result<Self> {
        let client = token_review::client(api_url).await?;
        let reviewer = TokenReviewer::new(client, audience, service_account)
            .ok_or_else(|| anyhow::anyhow!("the API service account must be <namespace>:<name>"))?;
        Ok(Self(reviewer))
    }

    /// Whether `token` is the API's, for this agent's audience.
    pub async fn is_api(&self, token: &str) -> bool {
        if self.0.cached(token).is_some() {
            return true;
        }
        match self.0.review(token).await {
            Ok(Some(_)) => {
                self.0.remember(token, ());
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "TokenReview failed");
                false
            }
        }
    }
}
