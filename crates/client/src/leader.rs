//! Leader election on a `coordination.k8s.io/v1` Lease, the algorithm of client-go's
//! `tools/leaderelection` with its `LeaseLock`.
//!
//! A candidate reads the Lease; it may take it when nobody holds it or when the record it
//! observed has not changed for `lease_duration` (measured on the candidate's own clock from
//! when it observed the record, like client-go, so clock skew between candidates does not
//! matter). Every write is an update carrying the read `resourceVersion`, so two candidates
//! never both win. The leader renews every `retry_period`; if it cannot renew for
//! `renew_deadline` it stops the work and [`run_leader_elected`] returns
//! [`Error::LeaderElectionLost`].

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use rand::Rng as _;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::Error;

/// Client-go's `JitterFactor` for the acquire/renew loop.
const JITTER_FACTOR: f64 = 1.2;

/// Timing and identity of a leader election.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease (`kube-system` for the control plane).
    pub namespace: String,
    /// Name of the Lease (e.g. `kube-controller-manager`).
    pub name: String,
    /// This candidate's identity, `<hostname>_<uuid>` (see [`default_identity`]).
    pub identity: String,
    /// How long a non-leader waits after the last observed change before taking over (15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps retrying a renewal before giving up (10 s).
    pub renew_deadline: Duration,
    /// How often acquire and renew are tried (2 s).
    pub retry_period: Duration,
    /// Give the Lease up (holder cleared) when the work ends on its own.
    pub release_on_cancel: bool,
}

impl LeaderElectionConfig {
    /// Upstream's defaults (15 s / 10 s / 2 s) for the Lease `namespace/name`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaderElectionConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            release_on_cancel: true,
        }
    }
}

/// `<hostname>_<uuid>`, the identity upstream components use.
pub fn default_identity() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// Campaigns for the Lease `namespace/name` with upstream's timings and, once it is held,
/// runs `work`. Returns the work's output if it finishes while we lead, or
/// [`Error::LeaderElectionLost`] (after dropping the work future) if renewing fails for the
/// renew deadline or another candidate took the Lease.
pub async fn run_leader_elected<F, Fut, T>(
    client: kube::Client,
    namespace: &str,
    name: &str,
    identity: &str,
    work: F,
) -> Result<T, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let cfg = LeaderElectionConfig::new(namespace, name, identity);
    run_leader_elected_with(client, cfg, work).await
}

/// [`run_leader_elected`] with explicit timings.
pub async fn run_leader_elected_with<F, Fut, T>(
    client: kube::Client,
    cfg: LeaderElectionConfig,
    work: F,
) -> Result<T, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let span = info_span!("leader_election", lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity);
    let mut elector = Elector::new(client, cfg);
    async move {
        elector.acquire().await;
        info!("successfully acquired lease");
        let work = work();
        tokio::pin!(work);
        let result = tokio::select! {
            out = &mut work => Ok(out),
            () = elector.renew_loop() => Err(elector.lost()),
        };
        if result.is_ok() && elector.cfg.release_on_cancel {
            elector.release().await;
        }
        result
    }
    .instrument(span)
    .await
}

/// Outcome of one `tryAcquireOrRenew`.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease now.
    Held,
    /// Someone else holds an unexpired Lease.
    HeldByOther,
    /// The API call failed (conflict, network …).
    Failed,
}

/// The state of one candidate.
struct Elector {
    api: Api<Lease>,
    cfg: LeaderElectionConfig,
    /// The last record we observed and when (our clock).
    observed: Option<(LeaseSpec, Instant)>,
    /// The last Lease object we read or wrote (for resourceVersion).
    last: Option<Lease>,
}

impl Elector {
    fn new(client: kube::Client, cfg: LeaderElectionConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            last: None,
        }
    }

    fn lost(&self) -> Error {
        Error::LeaderElectionLost {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            identity: self.cfg.identity.clone(),
        }
    }

    fn jittered(&self, d: Duration) -> Duration {
        let f: f64 = rand::rng().random_range(0.0..JITTER_FACTOR);
        d + d.mul_f64(f)
    }

    /// Retries every `retry_period` (jittered) until the Lease is ours.
    async fn acquire(&mut self) {
        info!("attempting to acquire leader lease");
        loop {
            match self.try_acquire_or_renew().await {
                Attempt::Held => return,
                Attempt::HeldByOther => {
                    let holder = self
                        .observed
                        .as_ref()
                        .and_then(|(s, _)| s.holder_identity.clone())
                        .unwrap_or_default();
                    debug!(%holder, "lease is held by another candidate and has not yet expired");
                }
                Attempt::Failed => {}
            }
            tokio::time::sleep(self.jittered(self.cfg.retry_period)).await;
        }
    }

    /// Renews every `retry_period`; returns when a renewal did not succeed within
    /// `renew_deadline` (client-go's `renew`).
    async fn renew_loop(&mut self) {
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            let deadline = Instant::now() + self.cfg.renew_deadline;
            let renewed = loop {
                match self.try_acquire_or_renew().await {
                    Attempt::Held => break true,
                    Attempt::HeldByOther => break false,
                    Attempt::Failed => {}
                }
                if Instant::now() + self.cfg.retry_period > deadline {
                    break false;
                }
                tokio::time::sleep(self.cfg.retry_period).await;
            };
            if !renewed {
                warn!("failed to renew lease: leadership lost, stopping work");
                return;
            }
        }
    }

    /// Clears the holder so another candidate can take over at once.
    async fn release(&mut self) {
        let Some(mut lease) = self.last.clone() else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        let now = MicroTime(jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released leader lease"),
            Err(e) => warn!(error = %e, "failed to release lease"),
        }
    }

    /// client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Attempt {
        let now = jiff::Timestamp::now();
        let duration_secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(15);
        let current = match self.api.get_opt(&self.cfg.name).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "error retrieving lease");
                return Attempt::Failed;
            }
        };
        let Some(current) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    self.last = Some(created);
                    Attempt::Held
                }
                Err(e) => {
                    debug!(error = %e, "error creating lease");
                    Attempt::Failed
                }
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        self.observe(&current);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let am_leader = holder == self.cfg.identity;
        if !holder.is_empty() && !am_leader {
            let observed_at = self.observed.as_ref().map(|(_, t)| *t);
            let duration = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_secs)).unwrap_or(15),
            );
            if observed_at.is_some_and(|t| t.elapsed() < duration) {
                self.last = Some(current);
                return Attempt::HeldByOther;
            }
        }
        let mut next = current.clone();
        let new_spec = next.spec.get_or_insert_with(Default::default);
        if am_leader {
            new_spec.acquire_time = spec.acquire_time.clone().or(Some(MicroTime(now)));
            new_spec.lease_transitions = spec.lease_transitions;
        } else {
            new_spec.acquire_time = Some(MicroTime(now));
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.holder_identity = Some(self.cfg.identity.clone());
        new_spec.lease_duration_seconds = Some(duration_secs);
        new_spec.renew_time = Some(MicroTime(now));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &next)
            .await
        {
            Ok(updated) => {
                if !am_leader {
                    info!(previous = %holder, "took over the lease");
                }
                self.observe(&updated);
                self.last = Some(updated);
                Attempt::Held
            }
            Err(e) => {
                debug!(error = %e, "failed to update lease");
                self.last = Some(current);
                Attempt::Failed
            }
        }
    }

    /// Records the Lease's spec, restarting the observation clock if it changed.
    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        match &self.observed {
            Some((old, _)) if *old == spec => {}
            _ => self.observed = Some((spec, Instant::now())),
        }
    }
}
