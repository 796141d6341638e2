//! A member's availability over time, for failover and failback: pure (time is passed in) so
//! the hysteresis is unit-tested.

use std::time::{Duration, Instant};

/// Ready/NotReady history of one member as seen by the health probes.
#[derive(Debug, Clone, Default)]
pub struct Availability {
    pub ready: bool,
    pub not_ready_since: Option<Instant>,
    pub ready_since: Option<Instant>,
    /// Length of the last finished NotReady period: a member back from an outage longer than
    /// an object's toleration gets replicas again only after the stable period.
    pub last_outage: Duration,
    /// The unfinished recovery's outage, carried into a new NotReady period that starts
    /// before the member was stable again (a flap does not reset the hysteresis).
    carried: Duration,
}

impl Availability {
    /// Records one probe result. A member never seen Ready has no outage to recover from;
    /// one that goes NotReady again within `stable` of its return keeps its earlier outage.
    pub fn observe(&mut self, ready: bool, now: Instant, stable: Duration) {
        if ready && !self.ready {
            self.ready_since = Some(now);
            self.last_outage = self
                .not_ready_since
                .take()
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
                + std::mem::take(&mut self.carried);
        } else if !ready && self.ready {
            let recovering = self
                .ready_since
                .is_some_and(|t| now.saturating_duration_since(t) < stable);
            self.carried = if recovering {
                self.last_outage
            } else {
                Duration::ZERO
            };
            self.not_ready_since = Some(now);
            self.ready_since = None;
        }
        self.ready = ready;
    }

    /// Whether the member takes part in division for an object tolerating `toleration` of
    /// NotReady: Ready (or NotReady for less than that), and, back from a longer outage, Ready
    /// for `stable` already (hysteresis: a flapping member does not pull replicas back and
    /// forth). A member never seen Ready is not schedulable.
    pub fn schedulable(&self, toleration: Duration, stable: Duration, now: Instant) -> bool {
        if self.ready {
            self.last_outage < toleration
                || self
                    .ready_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= stable)
        } else {
            self.not_ready_since
                .is_some_and(|t| now.saturating_duration_since(t) < toleration)
        }
    }
    /// How long until [`schedulable`](Self::schedulable) may change by the clock alone: the
    /// end of the toleration of a NotReady member, or of the stable period of one back from
    /// a longer outage. `None` when only a probe can change it.
    pub fn next_change(
        &self,
        toleration: Duration,
        stable: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let at = if self.ready {
            if self.last_outage < toleration {
                return None;
            }
            self.ready_since? + stable
        } else {
            self.not_ready_since? + toleration
        };
        let left = at.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Duration = Duration::from_secs(60);
    const STABLE: Duration = Duration::from_secs(30);

    #[test]
    fn new_member_waits_for_ready() {
        let t0 = Instant::now();
        let mut a = Availability::default();
        a.observe(false, t0, STABLE);
        assert!(!a.schedulable(TOL, STABLE, t0));
        a.observe(true, t0, STABLE);
        assert!(a.schedulable(TOL, STABLE, t0));
    }

    #[test]
    fn short_outage_keeps_replicas_long_one_fails_over_and_back_after_stable() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut a = Availability::default();
        a.observe(true, t0, STABLE);
        a.observe(false, s(10), STABLE);
        assert!(a.schedulable(TOL, STABLE, s(69)), "within the toleration");
        assert!(
            !a.schedulable(TOL, STABLE, s(70)),
            "toleration over: fail over"
        );
        // A short blip: straight back.
        let mut b = a.clone();
        b.observe(true, s(20), STABLE);
        assert!(b.schedulable(TOL, STABLE, s(20)));
        // Back after 100 s down: only after 30 s of Ready.
        a.observe(true, s(110), STABLE);
        assert!(!a.schedulable(TOL, STABLE, s(139)));
        assert!(a.schedulable(TOL, STABLE, s(140)));
        // Flapping during the stable period restarts it: the long outage is not forgotten.
        let mut c = a.clone();
        c.observe(false, s(115), STABLE);
        c.observe(true, s(116), STABLE);
        assert!(!c.schedulable(TOL, STABLE, s(145)));
        assert!(c.schedulable(TOL, STABLE, s(146)));
        // Once stable, a later blip is just a blip.
        a.observe(false, s(200), STABLE);
        a.observe(true, s(201), STABLE);
        assert!(a.schedulable(TOL, STABLE, s(201)));
    }

    #[test]
    fn next_change_is_the_end_of_the_toleration_or_the_stable_period() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut a = Availability::default();
        a.observe(true, t0, STABLE);
        assert_eq!(a.next_change(TOL, STABLE, s(5)), None);
        a.observe(false, s(10), STABLE);
        assert_eq!(
            a.next_change(TOL, STABLE, s(30)),
            Some(Duration::from_secs(40))
        );
        assert_eq!(
            a.next_change(TOL, STABLE, s(70)),
            None,
            "already failed over"
        );
        a.observe(true, s(110), STABLE);
        assert_eq!(
            a.next_change(TOL, STABLE, s(120)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(a.next_change(TOL, STABLE, s(140)), None, "failed back");
        let mut b = Availability::default();
        b.observe(true, t0, STABLE);
        b.observe(false, s(1), STABLE);
        b.observe(true, s(2), STABLE);
        assert_eq!(b.next_change(TOL, STABLE, s(3)), None, "a blip");
    }

    #[test]
    fn per_object_toleration() {
        let t0 = Instant::now();
        let mut a = Availability::default();
        a.observe(true, t0, STABLE);
        a.observe(false, t0, STABLE);
        let later = t0 + Duration::from_secs(10);
        assert!(!a.schedulable(Duration::from_secs(5), STABLE, later));
        assert!(a.schedulable(Duration::from_secs(60), STABLE, later));
    }
}
