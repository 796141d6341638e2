//! A cached view of the server's resources (preferred version of each group), refreshed at
//! most every 30 s, for the controllers that work on every kind (namespace deletion, GC).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::discovery::{ApiCapabilities, ApiResource, Discovery};
use tokio::sync::Mutex;

/// How long a discovery result is reused.
const TTL: Duration = Duration::from_secs(30);

/// One resource: its API coordinates and capabilities.
pub type Resource = (ApiResource, ApiCapabilities);

/// When the resources were discovered, and what they are.
type Cached = Option<(Instant, Arc<Vec<Resource>>)>;

/// A discovery cache.
#[derive(Clone)]
pub struct DiscoveryCache {
    client: kube::Client,
    cached: Arc<Mutex<Cached>>,
}

impl std::fmt::Debug for DiscoveryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiscoveryCache")
    }
}

impl DiscoveryCache {
    /// An empty cache over `client`.
    pub fn new(client: kube::Client) -> Self {
        DiscoveryCache {
            client,
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// Every top-level resource in its group's preferred version (fresh within 30 s).
    pub async fn resources(&self) -> kube::Result<Arc<Vec<Resource>>> {
        self.get(false).await
    }

    /// Like [`resources`](Self::resources) but ignores the cache.
    pub async fn refresh(&self) -> kube::Result<Arc<Vec<Resource>>> {
        self.get(true).await
    }

    async fn get(&self, force: bool) -> kube::Result<Arc<Vec<Resource>>> {
        let mut guard = self.cached.lock().await;
        if !force
            && let Some((at, res)) = guard.as_ref()
            && at.elapsed() < TTL
        {
            return Ok(res.clone());
        }
        let discovery = Discovery::new(self.client.clone()).run().await?;
        let mut out = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                out.push((ar, caps));
            }
        }
        let res = Arc::new(out);
        *guard = Some((Instant::now(), res.clone()));
        Ok(res)
    }
}
