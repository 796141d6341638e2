//! The Job controller (upstream `pkg/controller/job`), for NonIndexed and Indexed Jobs:
//! keeps `min(parallelism, remaining completions)` pods running, tracks finished pods with
//! the `batch.kubernetes.io/job-tracking` finalizer and `status.uncountedTerminatedPods`
//! (so counts survive pod deletion), backs off recreating after failures (10 s doubling to
//! 6 min), and finishes with `Complete`, or `Failed` on `BackoffLimitExceeded` or
//! `DeadlineExceeded`; `suspend` deletes the active pods.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kumo_client::WorkQueue;
use parking_lot::Mutex;
use tracing::{debug, info};

use crate::Ctx;
use crate::expectations::Expectations;
use crate::informer::{Change, Informer};
use crate::util::{self, Events};

/// The finalizer that keeps finished pods until they are counted.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// `batch.kubernetes.io/job-completion-index`.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Upstream's `DefaultJobPodFailureBackOff` and its cap.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// The Job controller.
pub struct JobController {
    client: kube::Client,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    queue: WorkQueue<String>,
    expectations: Expectations,
    events: Events,
    /// When each Job last saw a new pod failure (for the recreate backoff).
    last_failure: Mutex<HashMap<String, Instant>>,
}

fn has_condition(job: &Job, t: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
}

fn is_finished(job: &Job) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

fn pod_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}

/// Parses `completedIndexes` ("1,3-5").
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(n) = part.parse() {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// Formats indexes as upstream does ("1,3-5").
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().peekable();
    while let Some(&start) = iter.next() {
        let mut end = start;
        while iter.peek().is_some_and(|n| **n == end + 1) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

impl JobController {
    /// Builds the controller and registers its handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(JobController {
            client: ctx.client.clone(),
            jobs: ctx.factory.get::<Job>(),
            pods: ctx.factory.get::<Pod>(),
            queue: ctx.queue("job"),
            expectations: Expectations::new(),
            events: Events::new(ctx.client.clone(), "job-controller"),
            last_failure: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&c);
        c.jobs.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let j = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                c.queue.add(util::key_of(&j.metadata));
            }
        });
        let weak = Arc::downgrade(&c);
        c.pods.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let (p, added, deleted) = match ch {
                    Change::Added(o) => (*o, true, false),
                    Change::Deleted(o) => (*o, false, true),
                    Change::Updated { new, .. } => (*new, false, false),
                };
                let ns = p.metadata.namespace.as_deref().unwrap_or("");
                if let Some(owner) = util::controller_of(&p.metadata)
                    && owner.kind == "Job"
                    && let Some(job) = c.jobs.get(Some(ns), &owner.name)
                    && job.metadata.uid.as_deref() == Some(owner.uid.as_str())
                {
                    let key = util::key_of(&job.metadata);
                    if added {
                        c.expectations.creation_observed(&key);
                    }
                    if deleted || p.metadata.deletion_timestamp.is_some() {
                        c.expectations
                            .deletion_observed(&key, &util::key_of(&p.metadata));
                    }
                    c.queue.add(key);
                }
            }
        });
        c
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.jobs.synced().await;
        self.pods.synced().await;
        info!("job controller synced; starting workers");
        let c = self.clone();
        util::run_workers("job", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    fn pods_of(&self, job: &Job) -> Vec<Arc<Pod>> {
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        let uid = job.metadata.uid.clone().unwrap_or_default();
        self.pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| util::controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
            .collect()
    }

    /// `syncJob`.
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(job) = self.jobs.get(Some(ns), name) else {
            self.expectations.delete(key);
            self.last_failure.lock().remove(key);
            return Ok(());
        };
        let mut job = (*job).clone();
        let pods = self.pods_of(&job);
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        // Count finished pods first (they must not be lost if they are deleted).
        self.track_finished(&mut job, &pods, &pods_api).await?;
        if is_finished(&job) || util::is_deleting(&job.metadata) {
            return Ok(());
        }
        if !self.expectations.satisfied(key) {
            return Ok(());
        }
        let spec = job.spec.clone().unwrap_or_default();
        let mut status = job.status.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| util::is_pod_active(p)).collect();
        let suspended = spec.suspend.unwrap_or(false);
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let succeeded = status.succeeded.unwrap_or(0);
        let failed = status.failed.unwrap_or(0);
        let mut finish: Option<(&str, &str, String)> = None;
        if failed > spec.backoff_limit.unwrap_or(6) {
            finish = Some((
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ));
        } else if let (Some(ads), Some(start)) =
            (spec.active_deadline_seconds, status.start_time.as_ref())
            && !suspended
            && start.0 + jiff::SignedDuration::from_secs(ads) <= now
        {
            finish = Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ));
        } else {
            let complete = match spec.completions {
                Some(c) if indexed => {
                    parse_indexes(status.completed_indexes.as_deref().unwrap_or("")).len()
                        >= usize::try_from(c).unwrap_or(0)
                }
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active.is_empty(),
            };
            if complete {
                finish = Some((
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods".into(),
                ));
            }
        }
        if let Some((ctype, reason, message)) = finish {
            // Stop what still runs, then record the outcome.
            self.delete_pods(key, &pods_api, &active).await?;
            let t = Time(now);
            let conds = status.conditions.get_or_insert_with(Vec::new);
            let interim = if ctype == "Complete" {
                "SuccessCriteriaMet"
            } else {
                "FailureTarget"
            };
            for ty in [interim, ctype] {
                if !conds.iter().any(|c| c.type_ == ty) {
                    conds.push(JobCondition {
                        type_: ty.into(),
                        status: "True".into(),
                        reason: Some(reason.into()),
                        message: Some(message.clone()),
                        last_probe_time: Some(t.clone()),
                        last_transition_time: Some(t.clone()),
                    });
                }
            }
            if ctype == "Complete" {
                status.completion_time = Some(t);
                self.events
                    .normal(util::object_ref(&job), "Completed", "Job completed".into());
            } else {
                self.events
                    .warning(util::object_ref(&job), reason, message.clone());
            }
            status.active = Some(0);
            status.ready = Some(0);
            info!(job = key, outcome = ctype, reason, "job finished");
            return self.update_status(&mut job, status).await;
        }
        if suspended {
            self.delete_pods(key, &pods_api, &active).await?;
            let conds = status.conditions.get_or_insert_with(Vec::new);
            if !conds
                .iter()
                .any(|c| c.type_ == "Suspended" && c.status == "True")
            {
                conds.retain(|c| c.type_ != "Suspended");
                conds.push(JobCondition {
                    type_: "Suspended".into(),
                    status: "True".into(),
                    reason: Some("JobSuspended".into()),
                    message: Some("Job suspended".into()),
                    last_probe_time: Some(Time(now)),
                    last_transition_time: Some(Time(now)),
                });
            }
            status.active = Some(0);
            status.start_time = None;
            return self.update_status(&mut job, status).await;
        }
        if let Some(conds) = status.conditions.as_mut()
            && conds
                .iter()
                .any(|c| c.type_ == "Suspended" && c.status == "True")
        {
            for c in conds.iter_mut().filter(|c| c.type_ == "Suspended") {
                c.status = "False".into();
                c.reason = Some("JobResumed".into());
                c.message = Some("Job resumed".into());
                c.last_transition_time = Some(Time(now));
            }
        }
        if status.start_time.is_none() {
            status.start_time = Some(Time(now));
            if let Some(ads) = spec.active_deadline_seconds {
                self.queue.add_after(
                    key.to_string(),
                    Duration::from_secs(u64::try_from(ads).unwrap_or(0)),
                );
            }
        }
        // Backoff after failures.
        let backoff_left = {
            let lf = self.last_failure.lock();
            lf.get(key).and_then(|at| {
                let exp = u32::try_from(failed.max(1) - 1).unwrap_or(0).min(16);
                let delay = BACKOFF_BASE
                    .saturating_mul(2u32.saturating_pow(exp))
                    .min(BACKOFF_MAX);
                delay.checked_sub(at.elapsed())
            })
        };
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let want = match spec.completions {
            Some(c) if indexed => {
                let done = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
                parallelism
                    .min(c - i32::try_from(done.len()).unwrap_or(0))
                    .max(0)
            }
            Some(c) => parallelism.min(c - succeeded).max(0),
            None if succeeded > 0 => i32::try_from(active.len()).unwrap_or(0).min(parallelism),
            None => parallelism,
        };
        let have = i32::try_from(active.len()).unwrap_or(0);
        if want > have {
            match backoff_left {
                Some(left) if !left.is_zero() => {
                    debug!(?left, "backing off before creating pods");
                    self.queue.add_after(key.to_string(), left);
                }
                _ => {
                    self.create_pods(key, &job, want - have, &active, &status)
                        .await?
                }
            }
        } else if want < have {
            let mut victims: Vec<&Arc<Pod>> = active.clone();
            victims.sort_by_key(|p| {
                (
                    util::is_pod_ready(p),
                    std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                )
            });
            victims.truncate(usize::try_from(have - want).unwrap_or(0));
            self.delete_pods(key, &pods_api, &victims).await?;
        }
        let live = self.pods_of(&job);
        status.active = Some(
            i32::try_from(live.iter().filter(|p| util::is_pod_active(p)).count()).unwrap_or(0),
        );
        status.ready = Some(
            i32::try_from(
                live.iter()
                    .filter(|p| util::is_pod_active(p) && util::is_pod_ready(p))
                    .count(),
            )
            .unwrap_or(0),
        );
        status.terminating = Some(
            i32::try_from(
                live.iter()
                    .filter(|p| {
                        p.metadata.deletion_timestamp.is_some() && !util::is_pod_terminated(p)
                    })
                    .count(),
            )
            .unwrap_or(0),
        );
        if job.status.as_ref() != Some(&status) {
            self.update_status(&mut job, status).await?;
        }
        Ok(())
    }

    /// Moves finished pods into the counts through `uncountedTerminatedPods`, removing their
    /// tracking finalizers in between.
    async fn track_finished(
        &self,
        job: &mut Job,
        pods: &[Arc<Pod>],
        api: &Api<Pod>,
    ) -> anyhow::Result<()> {
        let key = util::key_of(&job.metadata);
        let indexed =
            job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed");
        let mut status = job.status.clone().unwrap_or_default();
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut unc_s: BTreeSet<String> = uncounted
            .succeeded
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut unc_f: BTreeSet<String> = uncounted
            .failed
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
        let mut changed = false;
        let mut new_failure = false;
        // 1. Finished pods that still carry the finalizer become uncounted.
        for p in pods {
            let has_fin = p
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == TRACKING_FINALIZER);
            let uid = p.metadata.uid.clone().unwrap_or_default();
            if !has_fin || unc_s.contains(&uid) || unc_f.contains(&uid) {
                continue;
            }
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("");
            // A pod deleted before finishing counts as failed (upstream, without a policy).
            let failed = phase == "Failed"
                || (p.metadata.deletion_timestamp.is_some() && phase != "Succeeded");
            if phase == "Succeeded" {
                if indexed && let Some(i) = pod_index(p) {
                    if completed.contains(&i) {
                        // A duplicate success: count nothing, just let it go.
                        unc_f.insert(uid);
                        changed = true;
                        continue;
                    }
                    completed.insert(i);
                }
                unc_s.insert(uid);
                changed = true;
            } else if failed {
                unc_f.insert(uid);
                new_failure = true;
                changed = true;
            }
        }
        if new_failure {
            self.last_failure.lock().insert(key.clone(), Instant::now());
        }
        if changed {
            uncounted.succeeded = Some(unc_s.iter().cloned().collect());
            uncounted.failed = Some(unc_f.iter().cloned().collect());
            status.uncounted_terminated_pods = Some(uncounted.clone());
            if indexed {
                status.completed_indexes = Some(format_indexes(&completed));
            }
            self.update_status(job, status.clone()).await?;
        }
        // 2. Remove the finalizers of uncounted pods.
        let targets: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                (unc_s.contains(&uid) || unc_f.contains(&uid))
                    && p.metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == TRACKING_FINALIZER)
            })
            .collect();
        for p in &targets {
            remove_finalizer(api, p).await?;
        }
        // 3. Count what is uncounted and no longer held.
        let held: BTreeSet<String> = pods
            .iter()
            .filter(|p| {
                p.metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == TRACKING_FINALIZER)
                    && !targets.iter().any(|t| t.metadata.uid == p.metadata.uid)
            })
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let done_s: Vec<String> = unc_s
            .iter()
            .filter(|u| !held.contains(*u))
            .cloned()
            .collect();
        let done_f: Vec<String> = unc_f
            .iter()
            .filter(|u| !held.contains(*u))
            .cloned()
            .collect();
        if done_s.is_empty() && done_f.is_empty() {
            return Ok(());
        }
        let mut status = job.status.clone().unwrap_or_default();
        // Indexed duplicates were put in `failed` only to release them; don't count them.
        let dup_successes = pods
            .iter()
            .filter(|p| {
                done_f.contains(&p.metadata.uid.clone().unwrap_or_default())
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
            })
            .count();
        status.succeeded =
            Some(status.succeeded.unwrap_or(0) + i32::try_from(done_s.len()).unwrap_or(0));
        status.failed = Some(
            status.failed.unwrap_or(0)
                + i32::try_from(done_f.len().saturating_sub(dup_successes)).unwrap_or(0),
        );
        unc_s.retain(|u| !done_s.contains(u));
        unc_f.retain(|u| !done_f.contains(u));
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: Some(unc_s.into_iter().collect()),
            failed: Some(unc_f.into_iter().collect()),
        });
        self.update_status(job, status).await
    }

    async fn create_pods(
        &self,
        key: &str,
        job: &Job,
        n: i32,
        active: &[&Arc<Pod>],
        status: &JobStatus,
    ) -> anyhow::Result<()> {
        let spec = job.spec.clone().unwrap_or_default();
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let mut indexes: Vec<Option<i32>> = Vec::new();
        if indexed {
            let done = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
            let running: BTreeSet<i32> = active.iter().filter_map(|p| pod_index(p)).collect();
            let total = spec.completions.unwrap_or(0);
            for i in 0..total {
                if indexes.len() >= usize::try_from(n).unwrap_or(0) {
                    break;
                }
                if !done.contains(&i) && !running.contains(&i) {
                    indexes.push(Some(i));
                }
            }
        } else {
            indexes = vec![None; usize::try_from(n).unwrap_or(0)];
        }
        if indexes.is_empty() {
            return Ok(());
        }
        self.expectations.expect_creations(key, indexes.len());
        let tm = spec.template.metadata.clone().unwrap_or_default();
        let mut labels = tm.labels.clone().unwrap_or_default();
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("controller-uid", uid.as_str()),
            ("job-name", name.as_str()),
        ] {
            labels.insert(k.into(), v.into());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let pods: Vec<Pod> = indexes
            .iter()
            .map(|idx| {
                let mut annotations: BTreeMap<String, String> =
                    tm.annotations.clone().unwrap_or_default();
                let mut pod_labels = labels.clone();
                let mut pspec = spec.template.spec.clone().unwrap_or_default();
                let mut generate = format!("{name}-");
                if let Some(i) = idx {
                    annotations.insert(COMPLETION_INDEX.into(), i.to_string());
                    pod_labels.insert(COMPLETION_INDEX.into(), i.to_string());
                    generate = format!("{name}-{i}-");
                    if pspec.hostname.is_none() {
                        pspec.hostname = Some(format!("{name}-{i}"));
                    }
                    for c in pspec
                        .containers
                        .iter_mut()
                        .chain(pspec.init_containers.iter_mut().flatten())
                    {
                        c.env.get_or_insert_with(Vec::new).push(EnvVar {
                            name: "JOB_COMPLETION_INDEX".into(),
                            value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                                field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                                    field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
                                    api_version: None,
                                }),
                                ..Default::default()
                            }),
                            value: None,
                        });
                    }
                }
                let mut finalizers = tm.finalizers.clone().unwrap_or_default();
                finalizers.push(TRACKING_FINALIZER.into());
                Pod {
                    metadata: ObjectMeta {
                        generate_name: Some(generate),
                        namespace: Some(ns.clone()),
                        labels: Some(pod_labels),
                        annotations: (!annotations.is_empty()).then_some(annotations),
                        finalizers: Some(finalizers),
                        owner_references: Some(vec![util::controller_ref(job)]),
                        ..Default::default()
                    },
                    spec: Some(pspec),
                    status: None,
                }
            })
            .collect();
        let pp = PostParams::default();
        let results = join_all(pods.iter().map(|p| api.create(&pp, p))).await;
        let mut err = None;
        for r in results {
            match r {
                Ok(p) => self.events.normal(
                    util::object_ref(job),
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                ),
                Err(e) => {
                    self.expectations.creation_observed(key);
                    if !util::is_namespace_terminating(&e) {
                        err = Some(e);
                    }
                }
            }
        }
        match err {
            Some(e) => Err(e).context("create job pods"),
            None => Ok(()),
        }
    }

    async fn delete_pods(
        &self,
        key: &str,
        api: &Api<Pod>,
        pods: &[&Arc<Pod>],
    ) -> anyhow::Result<()> {
        if pods.is_empty() {
            return Ok(());
        }
        self.expectations.expect_deletions(
            key,
            pods.iter().map(|p| util::key_of(&p.metadata)).collect(),
        );
        for p in pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => self
                    .expectations
                    .deletion_observed(key, &util::key_of(&p.metadata)),
                Err(e) => {
                    self.expectations
                        .deletion_observed(key, &util::key_of(&p.metadata));
                    return Err(e).context("delete job pod");
                }
            }
        }
        Ok(())
    }

    async fn update_status(&self, job: &mut Job, status: JobStatus) -> anyhow::Result<()> {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let mut target = job.clone();
        target.status = Some(status);
        *job = api
            .replace_status(&name, &PostParams::default(), &target)
            .await
            .context("update job status")?;
        Ok(())
    }
}

/// Removes the tracking finalizer (merge patch with a resourceVersion precondition).
async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> anyhow::Result<()> {
    let rest: Vec<&String> = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let patch = serde_json::json!({"metadata": {
        "finalizers": if rest.is_empty() { serde_json::Value::Null } else { serde_json::to_value(&rest)? },
        "resourceVersion": pod.metadata.resource_version,
    }});
    let name = pod.metadata.name.clone().unwrap_or_default();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e).context("remove job tracking finalizer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_sets() {
        let s = parse_indexes("0,2-4,7");
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&s), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }
}
