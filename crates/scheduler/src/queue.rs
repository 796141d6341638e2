//! The scheduling queue (`PriorityQueue`): activeQ ordered by priority then queue time,
//! backoffQ (1 s doubling to 10 s per attempt), the unschedulable pool that cluster events
//! (filtered by the plugins that rejected each pod, like queueing hints) move back, and a
//! 5-minute safety flush of the pool.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::plugins::names;
use crate::types::PodInfo;

/// `podMaxInUnschedulablePodsDuration`.
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// A change in the cluster that may make pending pods schedulable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A node appeared.
    NodeAdd,
    /// A node's allocatable grew.
    NodeAllocatable,
    /// A node's labels changed.
    NodeLabel,
    /// A node's taints or `spec.unschedulable` changed.
    NodeTaint,
    /// A node was deleted.
    NodeDelete,
    /// A pod was bound or appeared bound.
    AssignedPodAdd,
    /// A bound pod's labels changed.
    AssignedPodUpdate,
    /// A bound pod was deleted (or finished).
    AssignedPodDelete,
}

impl ClusterEvent {
    /// Label for `scheduler_queue_incoming_pods_total{event}`.
    pub fn label(self) -> &'static str {
        match self {
            ClusterEvent::NodeAdd => "NodeAdd",
            ClusterEvent::NodeAllocatable => "NodeAllocatableChange",
            ClusterEvent::NodeLabel => "NodeLabelChange",
            ClusterEvent::NodeTaint => "NodeTaintChange",
            ClusterEvent::NodeDelete => "NodeDelete",
            ClusterEvent::AssignedPodAdd => "AssignedPodAdd",
            ClusterEvent::AssignedPodUpdate => "AssignedPodUpdate",
            ClusterEvent::AssignedPodDelete => "AssignedPodDelete",
        }
    }
}

/// `EventsToRegister` of each plugin: whether `ev` may make a pod that `plugin` rejected
/// schedulable.
pub fn plugin_interested(plugin: &str, ev: ClusterEvent) -> bool {
    use ClusterEvent::*;
    match plugin {
        names::NODE_UNSCHEDULABLE | names::TAINT_TOLERATION => matches!(ev, NodeAdd | NodeTaint),
        names::NODE_NAME => ev == NodeAdd,
        names::NODE_AFFINITY => matches!(ev, NodeAdd | NodeLabel),
        names::NODE_PORTS => matches!(ev, NodeAdd | AssignedPodDelete),
        names::NODE_RESOURCES_FIT => matches!(ev, NodeAdd | NodeAllocatable | AssignedPodDelete),
        names::POD_TOPOLOGY_SPREAD => matches!(
            ev,
            NodeAdd
                | NodeDelete
                | NodeLabel
                | NodeTaint
                | AssignedPodAdd
                | AssignedPodUpdate
                | AssignedPodDelete
        ),
        names::INTER_POD_AFFINITY => matches!(
            ev,
            NodeAdd | NodeLabel | AssignedPodAdd | AssignedPodUpdate | AssignedPodDelete
        ),
        _ => true,
    }
}

/// Where a pod is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// activeQ.
    Active,
    /// backoffQ.
    Backoff,
    /// The unschedulable pool.
    Unschedulable,
    /// Popped, being scheduled.
    InFlight,
    /// Has scheduling gates.
    Gated,
}

/// A pod in the queue (`QueuedPodInfo`).
#[derive(Debug, Clone)]
pub struct QueuedPod {
    /// The pod.
    pub info: Arc<PodInfo>,
    /// Scheduling attempts so far.
    pub attempts: u32,
    /// When the pod entered the queue the first time.
    pub initial_attempt: Instant,
    /// Queue timestamp: ordering among equal priorities, and the backoff start.
    pub timestamp: Instant,
    /// Plugins that rejected it last time.
    pub unschedulable_plugins: BTreeSet<&'static str>,
    /// Where it is.
    pub location: Location,
    seq: u64,
    generation: u64,
    cycle: u64,
    /// The pod changed while in flight.
    updated_in_flight: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    seq: u64,
    uid: String,
    generation: u64,
}

impl Ord for ActiveEntry {
    fn cmp(&self, o: &Self) -> Ordering {
        // Max-heap: higher priority first, then the earlier (smaller) sequence.
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Counts per sub-queue, for `scheduler_pending_pods`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// activeQ.
    pub active: usize,
    /// backoffQ.
    pub backoff: usize,
    /// Unschedulable pool.
    pub unschedulable: usize,
    /// Gated pods.
    pub gated: usize,
}

/// The scheduling queue.
#[derive(Debug)]
pub struct SchedulingQueue {
    pods: HashMap<String, QueuedPod>,
    /// Uids in the unschedulable pool (kept in step with `Location::Unschedulable`).
    unschedulable: HashSet<String>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String, u64)>>,
    seq: u64,
    generation: u64,
    scheduling_cycle: u64,
    move_request_cycle: u64,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl SchedulingQueue {
    /// A queue with the given pod backoff bounds (upstream: 1 s and 10 s).
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        SchedulingQueue {
            pods: HashMap::new(),
            unschedulable: HashSet::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            seq: 0,
            generation: 0,
            scheduling_cycle: 0,
            move_request_cycle: 0,
            initial_backoff,
            max_backoff,
        }
    }

    fn push_active(&mut self, uid: &str) {
        self.generation += 1;
        let generation = self.generation;
        if let Some(p) = self.pods.get_mut(uid) {
            p.location = Location::Active;
            self.unschedulable.remove(uid);
            p.generation = generation;
            self.active.push(ActiveEntry {
                priority: p.info.priority,
                seq: p.seq,
                uid: uid.to_string(),
                generation,
            });
        }
    }

    fn push_backoff(&mut self, uid: &str) {
        self.generation += 1;
        let generation = self.generation;
        let (initial, max) = (self.initial_backoff, self.max_backoff);
        if let Some(p) = self.pods.get_mut(uid) {
            p.location = Location::Backoff;
            self.unschedulable.remove(uid);
            p.generation = generation;
            let at = p.timestamp + backoff_duration(p.attempts, initial, max);
            self.backoff
                .push(Reverse((at, p.seq, uid.to_string(), generation)));
        }
    }

    /// Whether the pod's backoff has not expired yet.
    fn backing_off(&self, p: &QueuedPod, now: Instant) -> bool {
        p.attempts > 0
            && p.timestamp + backoff_duration(p.attempts, self.initial_backoff, self.max_backoff)
                > now
    }

    /// Adds a new pending pod, or updates one already queued. A spec or label change moves a
    /// pod out of the unschedulable pool (to backoffQ if still backing off).
    pub fn add_or_update(&mut self, info: Arc<PodInfo>, now: Instant) {
        let uid = info.uid.clone();
        let Some(p) = self.pods.get_mut(&uid) else {
            self.seq += 1;
            let gated = info.gated;
            self.pods.insert(
                uid.clone(),
                QueuedPod {
                    info,
                    attempts: 0,
                    initial_attempt: now,
                    timestamp: now,
                    unschedulable_plugins: BTreeSet::new(),
                    location: Location::Gated,
                    seq: self.seq,
                    generation: 0,
                    cycle: 0,
                    updated_in_flight: false,
                },
            );
            if !gated {
                self.push_active(&uid);
            }
            return;
        };
        let changed = p.info.pod.spec != info.pod.spec || p.info.labels != info.labels;
        let priority_changed = p.info.priority != info.priority;
        p.info = info;
        let location = p.location;
        if location == Location::InFlight && changed {
            p.updated_in_flight = true;
        }
        let gated = p.info.gated;
        let backing_off = self.backing_off(&self.pods[&uid], now);
        match location {
            Location::Gated if !gated => self.push_active(&uid),
            Location::Unschedulable if changed => {
                if gated {
                    if let Some(p) = self.pods.get_mut(&uid) {
                        p.location = Location::Gated;
                    }
                    self.unschedulable.remove(&uid);
                } else if backing_off {
                    self.push_backoff(&uid);
                } else {
                    self.push_active(&uid);
                }
            }
            Location::Active if priority_changed => self.push_active(&uid),
            _ => {}
        }
    }

    /// Replaces the pod info without moving it (e.g. a nomination recorded in memory).
    pub fn set_info(&mut self, info: Arc<PodInfo>) {
        if let Some(p) = self.pods.get_mut(&info.uid) {
            p.info = info;
        }
    }

    /// The queued pod with `uid`.
    pub fn get(&self, uid: &str) -> Option<&QueuedPod> {
        self.pods.get(uid)
    }

    /// Removes a pod (deleted, bound elsewhere, or assumed).
    pub fn delete(&mut self, uid: &str) -> Option<QueuedPod> {
        self.unschedulable.remove(uid);
        self.pods.remove(uid)
    }

    /// Pops the highest-priority active pod; it stays tracked as in flight.
    pub fn pop(&mut self) -> Option<QueuedPod> {
        while let Some(e) = self.active.pop() {
            let Some(p) = self.pods.get_mut(&e.uid) else {
                continue;
            };
            if p.generation != e.generation || p.location != Location::Active {
                continue;
            }
            self.scheduling_cycle += 1;
            p.location = Location::InFlight;
            p.attempts += 1;
            p.cycle = self.scheduling_cycle;
            p.updated_in_flight = false;
            return Some(p.clone());
        }
        None
    }

    /// The pod was bound (assumed): it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.unschedulable.remove(uid);
        self.pods.remove(uid);
    }

    /// `AddUnschedulableIfNotPresent`: an unschedulable pod goes to the pool, unless a move
    /// request (or its own update) happened while it was in flight — then to backoffQ. An
    /// error (not unschedulable) always goes to backoffQ.
    pub fn failed(
        &mut self,
        uid: &str,
        plugins: BTreeSet<&'static str>,
        unschedulable: bool,
        now: Instant,
    ) {
        let move_cycle = self.move_request_cycle;
        let Some(p) = self.pods.get_mut(uid) else {
            return;
        };
        p.timestamp = now;
        p.unschedulable_plugins = plugins;
        if p.info.gated {
            p.location = Location::Gated;
            return;
        }
        if !unschedulable || move_cycle >= p.cycle || p.updated_in_flight {
            self.push_backoff(uid);
        } else {
            p.location = Location::Unschedulable;
            self.unschedulable.insert(uid.to_string());
        }
    }

    /// Re-adds a pod whose binding failed (its assumed placement was forgotten).
    pub fn requeue_after_error(
        &mut self,
        info: Arc<PodInfo>,
        attempts: u32,
        initial: Instant,
        now: Instant,
    ) {
        let uid = info.uid.clone();
        self.add_or_update(info, now);
        if let Some(p) = self.pods.get_mut(&uid) {
            p.attempts = attempts.max(1);
            p.initial_attempt = initial;
            p.timestamp = now;
        }
        self.push_backoff(&uid);
    }

    /// `MoveAllToActiveOrBackoffQueue` for the pods whose rejecting plugins care about `ev`.
    /// Returns how many moved.
    pub fn move_all(&mut self, ev: ClusterEvent, now: Instant) -> usize {
        self.move_request_cycle = self.scheduling_cycle;
        let uids: Vec<String> = self
            .unschedulable
            .iter()
            .filter_map(|u| self.pods.get(u).map(|p| (u, p)))
            .filter(|(_, p)| {
                p.location == Location::Unschedulable
                    && (p.unschedulable_plugins.is_empty()
                        || p.unschedulable_plugins
                            .iter()
                            .any(|pl| plugin_interested(pl, ev)))
            })
            .map(|(u, _)| u.clone())
            .collect();
        for uid in &uids {
            if self.backing_off(&self.pods[uid], now) {
                self.push_backoff(uid);
            } else {
                self.push_active(uid);
            }
        }
        uids.len()
    }

    /// Moves expired backoffs to activeQ and pods older than 5 minutes out of the pool.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((at, _, uid, generation))) = self.backoff.peek().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop();
            if self
                .pods
                .get(&uid)
                .is_some_and(|p| p.generation == generation && p.location == Location::Backoff)
            {
                self.push_active(&uid);
            }
        }
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter_map(|u| self.pods.get(u).map(|p| (u, p)))
            .filter(|(_, p)| {
                p.location == Location::Unschedulable
                    && now.duration_since(p.timestamp) > MAX_IN_UNSCHEDULABLE
            })
            .map(|(u, _)| u.clone())
            .collect();
        for uid in stale {
            self.push_active(&uid);
        }
    }

    /// Uids of every queued pod.
    pub fn uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// When the next backoff expires.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((at, ..))| *at)
    }

    /// Whether any pod waits in the unschedulable pool.
    pub fn has_unschedulable(&self) -> bool {
        !self.unschedulable.is_empty()
    }

    /// Sizes of the sub-queues.
    pub fn pending(&self) -> Pending {
        let mut c = Pending::default();
        for p in self.pods.values() {
            match p.location {
                Location::Active | Location::InFlight => c.active += 1,
                Location::Backoff => c.backoff += 1,
                Location::Unschedulable => c.unschedulable += 1,
                Location::Gated => c.gated += 1,
            }
        }
        c
    }
}

/// `calculateBackoffDuration`: `initial * 2^(attempts-1)`, capped at `max`.
pub fn backoff_duration(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let mut d = initial;
    for _ in 1..attempts {
        d *= 2;
        if d > max {
            return max;
        }
    }
    d.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::testutil::*;

    fn q() -> SchedulingQueue {
        SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10))
    }

    fn prio(name: &str, p: i32) -> Arc<PodInfo> {
        let mut pod = pod(name, &[]);
        pod.spec.as_mut().expect("spec").priority = Some(p);
        info(pod)
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = q();
        let now = Instant::now();
        q.add_or_update(prio("a", 0), now);
        q.add_or_update(prio("b", 10), now);
        q.add_or_update(prio("c", 0), now);
        q.add_or_update(prio("d", 10), now);
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop().map(|p| p.info.name.clone())).collect();
        assert_eq!(order, vec!["b", "d", "a", "c"]);
    }

    #[test]
    fn backoff_doubles_to_max() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(backoff_duration(1, i, m), Duration::from_secs(1));
        assert_eq!(backoff_duration(2, i, m), Duration::from_secs(2));
        assert_eq!(backoff_duration(4, i, m), Duration::from_secs(8));
        assert_eq!(backoff_duration(5, i, m), Duration::from_secs(10));
        assert_eq!(backoff_duration(50, i, m), Duration::from_secs(10));
    }

    #[test]
    fn unschedulable_moves_on_relevant_events_only() {
        let mut q = q();
        let t0 = Instant::now();
        q.add_or_update(prio("a", 0), t0);
        let p = q.pop().expect("pod");
        // Another cycle happens after, so no in-flight move request applies.
        q.failed(&p.info.uid, [names::NODE_RESOURCES_FIT].into(), true, t0);
        assert_eq!(q.pending().unschedulable, 1);
        // A label change does not help NodeResourcesFit.
        assert_eq!(q.move_all(ClusterEvent::NodeLabel, t0), 0);
        // A deleted pod does, but the pod is still backing off (1 s).
        assert_eq!(q.move_all(ClusterEvent::AssignedPodDelete, t0), 1);
        assert_eq!(q.pending().backoff, 1);
        assert!(q.pop().is_none());
        q.flush(t0 + Duration::from_millis(1100));
        assert_eq!(q.pop().map(|p| p.attempts), Some(2));
    }

    #[test]
    fn move_request_while_in_flight_goes_to_backoff() {
        let mut q = q();
        let t0 = Instant::now();
        q.add_or_update(prio("a", 0), t0);
        let p = q.pop().expect("pod");
        q.move_all(ClusterEvent::NodeAdd, t0);
        q.failed(&p.info.uid, [names::NODE_RESOURCES_FIT].into(), true, t0);
        assert_eq!(q.pending().backoff, 1);
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn spec_update_reactivates_and_status_update_does_not() {
        let mut q = q();
        let t0 = Instant::now();
        let a = prio("a", 0);
        q.add_or_update(a.clone(), t0);
        let p = q.pop().expect("pod");
        q.failed(&p.info.uid, [names::TAINT_TOLERATION].into(), true, t0);
        // Same spec (our own status patch): stays.
        q.add_or_update(a.clone(), t0 + Duration::from_secs(5));
        assert_eq!(q.pending().unschedulable, 1);
        let mut changed = (*a.pod).clone();
        changed.spec.as_mut().expect("spec").tolerations = Some(vec![Default::default()]);
        q.add_or_update(info(changed), t0 + Duration::from_secs(5));
        assert_eq!(q.pending().active, 1);
        // Five minutes in the pool → flushed.
        let p = q.pop().expect("pod");
        q.failed(&p.info.uid, [names::TAINT_TOLERATION].into(), true, t0);
        q.flush(t0 + Duration::from_secs(301));
        assert_eq!(q.pending().active, 1);
    }

    #[test]
    fn gated_pods_wait() {
        let mut q = q();
        let mut p = pod("g", &[]);
        p.spec.as_mut().expect("spec").scheduling_gates =
            Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: "x".into(),
            }]);
        q.add_or_update(info(p.clone()), Instant::now());
        assert!(q.pop().is_none());
        assert_eq!(q.pending().gated, 1);
        p.spec.as_mut().expect("spec").scheduling_gates = None;
        q.add_or_update(info(p), Instant::now());
        assert!(q.pop().is_some());
    }
}
