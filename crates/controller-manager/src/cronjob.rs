//! The CronJob controller (upstream `pkg/controller/cronjob`, v2): creates a Job
//! `<cronjob>-<minutes since epoch>` at each scheduled time (in `spec.timeZone`), honouring
//! `startingDeadlineSeconds`, `concurrencyPolicy` (Allow/Forbid/Replace) and `suspend`,
//! keeps `status.active`/`lastScheduleTime`/`lastSuccessfulTime`, and deletes finished Jobs
//! beyond the successful/failed history limits.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, PostParams};
use kumo_client::WorkQueue;
use tracing::{info, warn};

use crate::Ctx;
use crate::informer::{Change, Informer};
use crate::util::{self, Events};

/// `batch.kubernetes.io/cronjob-scheduled-timestamp`.
const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A parsed 5-field cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: BTreeSet<u8>,
    hours: BTreeSet<u8>,
    days: BTreeSet<u8>,
    months: BTreeSet<u8>,
    weekdays: BTreeSet<u8>,
    /// Day-of-month and day-of-week both restricted: either matches (cron's OR rule).
    dom_star: bool,
    dow_star: bool,
}

fn parse_field(field: &str, min: u8, max: u8, names: &[&str]) -> Option<(BTreeSet<u8>, bool)> {
    let mut out = BTreeSet::new();
    let star = field == "*" || field == "?";
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u8>().ok().filter(|s| *s > 0)?),
            None => (part, 1),
        };
        let value = |s: &str| -> Option<u8> {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
                return u8::try_from(i).ok().map(|i| i + min);
            }
            s.parse().ok()
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        // Sunday may be written 7.
        let hi = if max == 6 && hi == 7 { 6 } else { hi };
        let lo = if max == 6 && lo == 7 { 0 } else { lo };
        if lo < min || hi > max || lo > hi {
            return None;
        }
        out.extend((lo..=hi).step_by(usize::from(step)));
    }
    Some((out, star))
}

impl Schedule {
    /// Parses `m h dom mon dow` or a macro (`@hourly`, `@daily`/`@midnight`, `@weekly`,
    /// `@monthly`, `@yearly`/`@annually`).
    pub fn parse(s: &str) -> Option<Schedule> {
        let s = s.trim();
        let s = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        // A leading TZ=/CRON_TZ= is rejected upstream (use spec.timeZone).
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() != 5 {
            return None;
        }
        let months = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let (minutes, _) = parse_field(f[0], 0, 59, &[])?;
        let (hours, _) = parse_field(f[1], 0, 23, &[])?;
        let (dom, dom_star) = parse_field(f[2], 1, 31, &[])?;
        let (mon, _) = parse_field(f[3], 1, 12, &months)?;
        let (dow, dow_star) = parse_field(f[4], 0, 6, &days)?;
        Some(Schedule {
            minutes,
            hours,
            days: dom,
            months: mon,
            weekdays: dow,
            dom_star,
            dow_star,
        })
    }

    fn matches(&self, t: &jiff::civil::DateTime) -> bool {
        let dom = self.days.contains(&u8::try_from(t.day()).unwrap_or(0));
        let dow = self
            .weekdays
            .contains(&u8::try_from(t.weekday().to_sunday_zero_offset()).unwrap_or(9));
        let day_ok = match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        };
        day_ok
            && self
                .minutes
                .contains(&u8::try_from(t.minute()).unwrap_or(99))
            && self.hours.contains(&u8::try_from(t.hour()).unwrap_or(99))
            && self.months.contains(&u8::try_from(t.month()).unwrap_or(99))
    }

    /// The first scheduled time strictly after `after`, in `tz`.
    pub fn next_after(
        &self,
        after: jiff::Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Option<jiff::Timestamp> {
        let zoned = after.to_zoned(tz.clone());
        let mut t = zoned
            .datetime()
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?;
        t = t.checked_add(jiff::Span::new().minutes(1)).ok()?;
        // At most ~5 years of minutes; skip whole hours/days that cannot match.
        for _ in 0..(5 * 366 * 24 * 60) {
            if !self.months.contains(&u8::try_from(t.month()).unwrap_or(99)) {
                t = t
                    .first_of_month()
                    .checked_add(jiff::Span::new().months(1))
                    .ok()?
                    .with()
                    .hour(0)
                    .minute(0)
                    .build()
                    .ok()?;
                continue;
            }
            if self.matches(&t) {
                let ts = t.to_zoned(tz.clone()).ok()?.timestamp();
                if ts > after {
                    return Some(ts);
                }
            }
            t = t.checked_add(jiff::Span::new().minutes(1)).ok()?;
        }
        None
    }
}

/// The CronJob controller.
pub struct CronJobController {
    client: kube::Client,
    cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    queue: WorkQueue<String>,
    events: Events,
}

fn job_finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

impl CronJobController {
    /// Builds the controller and registers its handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(CronJobController {
            client: ctx.client.clone(),
            cronjobs: ctx.factory.get::<CronJob>(),
            jobs: ctx.factory.get::<Job>(),
            queue: ctx.queue("cronjob"),
            events: Events::new(ctx.client.clone(), "cronjob-controller"),
        });
        let weak = Arc::downgrade(&c);
        c.cronjobs.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let cj = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                c.queue.add(util::key_of(&cj.metadata));
            }
        });
        let weak = Arc::downgrade(&c);
        c.jobs.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let j = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                if let Some(o) = util::controller_of(&j.metadata)
                    && o.kind == "CronJob"
                {
                    c.queue.add(format!(
                        "{}/{}",
                        j.metadata.namespace.as_deref().unwrap_or(""),
                        o.name
                    ));
                }
            }
        });
        c
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.cronjobs.synced().await;
        self.jobs.synced().await;
        info!("cronjob controller synced; starting workers");
        let c = self.clone();
        util::run_workers("cronjob", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    /// `syncCronJob`.
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(cj) = self.cronjobs.get(Some(ns), name) else {
            return Ok(());
        };
        let mut cj = (*cj).clone();
        if util::is_deleting(&cj.metadata) {
            return Ok(());
        }
        let spec = cj.spec.clone().unwrap_or_default();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let jobs: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(ns)
            .into_iter()
            .filter(|j| util::controller_of(&j.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let mut status = cj.status.clone().unwrap_or_default();
        // Active list and last success from the Jobs.
        let mut active: Vec<ObjectReference> = Vec::new();
        for j in &jobs {
            match job_finished(j) {
                None if !util::is_deleting(&j.metadata) => {
                    active.push(util::object_ref(j.as_ref()))
                }
                Some("Complete") => {
                    let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                    if let Some(done) = done
                        && status
                            .last_successful_time
                            .as_ref()
                            .is_none_or(|t| t.0 < done.0)
                    {
                        status.last_successful_time = Some(done);
                    }
                }
                _ => {}
            }
        }
        active.sort_by(|a, b| a.name.cmp(&b.name));
        status.active = (!active.is_empty()).then_some(active.clone());
        self.cleanup_history(ns, &spec, &jobs).await?;
        let tz = match spec.time_zone.as_deref() {
            Some(z) => {
                jiff::tz::TimeZone::get(z).map_err(|e| anyhow!("unknown timeZone {z:?}: {e}"))?
            }
            None => jiff::tz::TimeZone::system(),
        };
        let Some(schedule) = Schedule::parse(&spec.schedule) else {
            self.events.warning(
                util::object_ref(&cj),
                "UnparseableSchedule",
                format!("unparseable schedule: {:?}", spec.schedule),
            );
            return self.write_status(&mut cj, status).await;
        };
        let now = jiff::Timestamp::now();
        if spec.suspend.unwrap_or(false) {
            return self.write_status(&mut cj, status).await;
        }
        // The most recent missed time since the last schedule (or creation).
        let earliest = status
            .last_schedule_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(now);
        let earliest = match spec.starting_deadline_seconds {
            Some(d) => earliest.max(now - jiff::SignedDuration::from_secs(d)),
            None => earliest,
        };
        let mut scheduled = None;
        let mut t = earliest;
        let mut missed = 0;
        while let Some(next) = schedule.next_after(t, &tz) {
            if next > now {
                break;
            }
            scheduled = Some(next);
            t = next;
            missed += 1;
            if missed > 100 {
                warn!(
                    cronjob = key,
                    "too many missed start times; check clock skew"
                );
                // Jump to the last one before now.
                t = now - jiff::SignedDuration::from_secs(61);
                missed = 0;
            }
        }
        if let Some(at) = scheduled {
            self.start_job(&cj, &spec, at, &mut status, &active).await?;
        }
        self.write_status(&mut cj, status).await?;
        if let Some(next) = schedule.next_after(now, &tz) {
            let wait = next
                .duration_since(jiff::Timestamp::now())
                .as_secs_f64()
                .max(0.0)
                + 0.1;
            self.queue
                .add_after(key.to_string(), Duration::from_secs_f64(wait));
        }
        Ok(())
    }

    async fn start_job(
        &self,
        cj: &CronJob,
        spec: &k8s_openapi::api::batch::v1::CronJobSpec,
        at: jiff::Timestamp,
        status: &mut CronJobStatus,
        active: &[ObjectReference],
    ) -> anyhow::Result<()> {
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let name = cj.metadata.name.clone().unwrap_or_default();
        let job_name = format!("{name}-{}", at.as_second() / 60);
        let api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        if active
            .iter()
            .any(|a| a.name.as_deref() == Some(job_name.as_str()))
        {
            return Ok(());
        }
        match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
            "Forbid" if !active.is_empty() => {
                info!(cronjob = %name, "not starting a job: the previous one is still running (Forbid)");
                self.events.normal(
                    util::object_ref(cj),
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                );
                return Ok(());
            }
            "Replace" => {
                for a in active {
                    let n = a.name.clone().unwrap_or_default();
                    match api.delete(&n, &DeleteParams::background()).await {
                        Ok(_) => self.events.normal(
                            util::object_ref(cj),
                            "SuccessfulDelete",
                            format!("Deleted job {n}"),
                        ),
                        Err(e) if util::is_not_found(&e) => {}
                        Err(e) => return Err(e).context("replace active job"),
                    }
                }
            }
            _ => {}
        }
        let template = spec.job_template.clone();
        let tm = template.metadata.clone().unwrap_or_default();
        let mut annotations = tm.annotations.clone().unwrap_or_default();
        annotations.insert(
            SCHEDULED_TIMESTAMP.into(),
            at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
        let job = Job {
            metadata: ObjectMeta {
                name: Some(job_name.clone()),
                namespace: Some(ns.clone()),
                labels: tm.labels.clone(),
                annotations: Some(annotations),
                owner_references: Some(vec![util::controller_ref(cj)]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        match api.create(&PostParams::default(), &job).await {
            Ok(_) => {
                info!(cronjob = %name, job = %job_name, "created job");
                self.events.normal(
                    util::object_ref(cj),
                    "SuccessfulCreate",
                    format!("Created job {job_name}"),
                );
            }
            Err(e) if util::is_already_exists(&e) => {}
            Err(e) => return Err(e).context("create job"),
        }
        status.last_schedule_time = Some(Time(at));
        let mut act = status.active.clone().unwrap_or_default();
        if !act
            .iter()
            .any(|a| a.name.as_deref() == Some(job_name.as_str()))
        {
            act.push(ObjectReference {
                api_version: Some("batch/v1".into()),
                kind: Some("Job".into()),
                name: Some(job_name),
                namespace: Some(ns),
                ..Default::default()
            });
        }
        status.active = Some(act);
        Ok(())
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn cleanup_history(
        &self,
        ns: &str,
        spec: &k8s_openapi::api::batch::v1::CronJobSpec,
        jobs: &[Arc<Job>],
    ) -> anyhow::Result<()> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        for (kind, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let mut finished: Vec<&Arc<Job>> = jobs
                .iter()
                .filter(|j| job_finished(j) == Some(kind) && !util::is_deleting(&j.metadata))
                .collect();
            let extra = finished
                .len()
                .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
            if extra == 0 {
                continue;
            }
            finished.sort_by_key(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0)
            });
            for j in finished.into_iter().take(extra) {
                let n = j.metadata.name.clone().unwrap_or_default();
                match api.delete(&n, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e).context("delete old job"),
                }
            }
        }
        Ok(())
    }

    async fn write_status(&self, cj: &mut CronJob, status: CronJobStatus) -> anyhow::Result<()> {
        if cj.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let name = cj.metadata.name.clone().unwrap_or_default();
        let api: Api<CronJob> = Api::namespaced(self.client.clone(), &ns);
        let mut target = cj.clone();
        target.status = Some(status);
        *cj = api
            .replace_status(&name, &PostParams::default(), &target)
            .await
            .context("update cronjob status")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let utc = jiff::tz::TimeZone::UTC;
        let t: jiff::Timestamp = "2025-01-01T10:07:30Z".parse().expect("ts");
        let every5 = Schedule::parse("*/5 * * * *").expect("parse");
        assert_eq!(
            every5.next_after(t, &utc).map(|x| x.to_string()),
            Some("2025-01-01T10:10:00Z".into())
        );
        let daily = Schedule::parse("@daily").expect("parse");
        assert_eq!(
            daily.next_after(t, &utc).map(|x| x.to_string()),
            Some("2025-01-02T00:00:00Z".into())
        );
        let weekdays = Schedule::parse("30 9 * * mon-fri").expect("parse");
        // 2025-01-04 is a Saturday.
        let sat: jiff::Timestamp = "2025-01-04T12:00:00Z".parse().expect("ts");
        assert_eq!(
            weekdays.next_after(sat, &utc).map(|x| x.to_string()),
            Some("2025-01-06T09:30:00Z".into())
        );
        let yearly = Schedule::parse("0 0 1 jan *").expect("parse");
        assert_eq!(
            yearly.next_after(t, &utc).map(|x| x.to_string()),
            Some("2026-01-01T00:00:00Z".into())
        );
        assert!(Schedule::parse("61 * * * *").is_none());
        assert!(Schedule::parse("* * *").is_none());
    }
}
