//! Backend health: active-probe state machine, passive outlier ejection with
//! backoff and probe-back, and 429 cooldown.
//!
//! Passive ejection works like a circuit breaker: `eject_after` consecutive failures open it for
//! `eject_for`, doubling with each ejection up to `eject_max`. While it is open a probe runs every
//! probe interval; a successful probe closes it early, on probation: the next real request decides
//! (a success resets the backoff, a failure ejects again at once, for the doubled time). Each such
//! relapse also doubles the wait before the next probe (up to `eject_max`), so a backend that answers
//! probes but fails real traffic gets real requests ever more rarely, not once per interval.

use std::time::{Duration, Instant};

/// Health as decided by active probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy,
    Unhealthy,
}

/// Thresholds for [`Health`].
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// Consecutive probe failures → `Unhealthy` (0 counts as 1).
    pub unhealthy_threshold: u32,
    /// Consecutive probe successes → `Healthy` again (0 counts as 1).
    pub healthy_threshold: u32,
    /// Consecutive passive failures (connect error or 5xx) → ejected.
    /// 0 disables passive ejection.
    pub eject_after: u32,
    /// Ejection time; doubles on each repeated ejection up to `eject_max`,
    /// back to 1x after a passive success.
    pub eject_for: Duration,
    /// Longest ejection (below `eject_for` counts as `eject_for`).
    pub eject_max: Duration,
}

impl Default for HealthPolicy {
    /// 3 failed probes to go down, 2 good ones to come back, eject for 30 s
    /// (doubling up to 4 min) after 5 failures in a row.
    fn default() -> Self {
        HealthPolicy {
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            eject_after: 5,
            eject_for: Duration::from_secs(30),
            eject_max: Duration::from_secs(240),
        }
    }
}

/// `base` doubled `doublings` times, capped at `cap` (saturating: never overflows).
pub fn doubled(base: Duration, doublings: u32, cap: Duration) -> Duration {
    1u32.checked_shl(doublings)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(cap, |d| d.min(cap))
}

impl HealthPolicy {
    /// The length of ejection number `previous + 1` since the last passive success.
    pub fn ejection_length(&self, previous: u32) -> Duration {
        doubled(self.eject_for, previous, self.eject_max.max(self.eject_for))
    }
}

/// One backend's health, fed by active probes and passive outcomes.
#[derive(Debug, Clone)]
pub struct Health {
    state: HealthState,
    probe_successes: u32,
    probe_failures: u32,
    passive_failures: u32,
    /// Ejections since the last passive success: sets the backoff.
    ejections: u32,
    /// Ejections since the last passive success that came right after a probe-back (the backend
    /// answered probes but failed real traffic): sets the probe backoff.
    relapses: u32,
    /// A probe ended the last ejection and no real request has answered since: the next failure
    /// ejects at once.
    probation: bool,
    ejected_until: Option<Instant>,
    cooldown: Option<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Healthy, not ejected, no cooldown.
    pub fn new() -> Self {
        Health {
            state: HealthState::Healthy,
            probe_successes: 0,
            probe_failures: 0,
            passive_failures: 0,
            ejections: 0,
            relapses: 0,
            probation: false,
            ejected_until: None,
            cooldown: None,
        }
    }

    /// An active probe result. Returns `Some(new_state)` when the state
    /// changes.
    pub fn probe(&mut self, ok: bool, p: &HealthPolicy) -> Option<HealthState> {
        if ok {
            self.probe_failures = 0;
            self.probe_successes = self.probe_successes.saturating_add(1);
            if self.state == HealthState::Unhealthy
                && self.probe_successes >= p.healthy_threshold.max(1)
            {
                self.state = HealthState::Healthy;
                return Some(self.state);
            }
        } else {
            self.probe_successes = 0;
            self.probe_failures = self.probe_failures.saturating_add(1);
            if self.state == HealthState::Healthy
                && self.probe_failures >= p.unhealthy_threshold.max(1)
            {
                self.state = HealthState::Unhealthy;
                return Some(self.state);
            }
        }
        None
    }

    /// The outcome of a real request (failure = connect error or 5xx).
    /// Returns `true` when this outcome ejected the backend.
    ///
    /// A success resets the failure count and both backoffs. Failures
    /// reported while the backend is ejected (requests that were already in
    /// flight) are ignored. On probation (a probe ended the ejection) one
    /// failure ejects again.
    pub fn passive(&mut self, ok: bool, p: &HealthPolicy, now: Instant) -> bool {
        if ok {
            self.passive_failures = 0;
            self.ejections = 0;
            self.relapses = 0;
            self.probation = false;
            return false;
        }
        if self.is_ejected(now) {
            return false;
        }
        self.passive_failures = self.passive_failures.saturating_add(1);
        if p.eject_after == 0 || (self.passive_failures < p.eject_after && !self.probation) {
            return false;
        }
        let length = p.ejection_length(self.ejections);
        self.ejected_until = Some(now.checked_add(length).unwrap_or(now));
        self.ejections = self.ejections.saturating_add(1);
        if self.probation {
            self.relapses = self.relapses.saturating_add(1);
        }
        self.probation = false;
        self.passive_failures = 0;
        true
    }

    /// Ejected at `now` (a passive ejection not yet over).
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }

    /// How long after an ejection starts (or after a failed probe) the next
    /// probe-back runs: `interval`, doubled per relapse, capped at the longest
    /// ejection.
    pub fn probe_back_delay(&self, p: &HealthPolicy, interval: Duration) -> Duration {
        doubled(
            interval,
            self.relapses,
            p.eject_max.max(p.eject_for).max(interval),
        )
    }

    /// A probe-back's result while ejected. A success ends the ejection (the
    /// backend goes on probation); returns `true` when it did.
    pub fn probe_back(&mut self, ok: bool, now: Instant) -> bool {
        if !ok || !self.is_ejected(now) {
            return false;
        }
        self.ejected_until = None;
        self.probation = true;
        self.passive_failures = 0;
        true
    }

    /// Do not send before `until` (an upstream 429's `Retry-After`); keeps
    /// the later of the current and the new deadline.
    pub fn cooldown_until(&mut self, until: Instant) {
        self.cooldown = Some(self.cooldown.map_or(until, |c| c.max(until)));
    }

    /// Healthy, not ejected and not cooling down at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.state == HealthState::Healthy
            && self.ejected_until.is_none_or(|t| now >= t)
            && self.cooldown.is_none_or(|t| now >= t)
    }

    /// The probe-driven state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// End of the latest ejection (possibly already past).
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// End of the latest 429 cooldown (possibly already past).
    pub fn cooldown(&self) -> Option<Instant> {
        self.cooldown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            eject_after: 2,
            eject_for: Duration::from_secs(10),
            eject_max: Duration::from_secs(80),
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn starts_healthy_and_available() {
        let h = Health::new();
        let now = Instant::now();
        assert_eq!(h.state(), HealthState::Healthy);
        assert!(h.available(now));
        assert_eq!(h.ejected_until(), None);
        assert_eq!(h.cooldown(), None);
        assert_eq!(Health::default().state(), HealthState::Healthy);
    }

    #[test]
    fn probe_thresholds() {
        let p = policy();
        let mut h = Health::new();
        let now = Instant::now();
        assert_eq!(h.probe(false, &p), None);
        assert_eq!(h.probe(false, &p), None);
        // A success in between resets the count.
        assert_eq!(h.probe(true, &p), None);
        assert_eq!(h.probe(false, &p), None);
        assert_eq!(h.probe(false, &p), None);
        assert_eq!(h.probe(false, &p), Some(HealthState::Unhealthy));
        assert!(!h.available(now));
        assert_eq!(h.probe(false, &p), None);
        assert_eq!(h.probe(true, &p), None);
        assert_eq!(h.probe(false, &p), None);
        assert_eq!(h.probe(true, &p), None);
        assert_eq!(h.probe(true, &p), Some(HealthState::Healthy));
        assert!(h.available(now));
        assert_eq!(h.probe(true, &p), None);
    }

    #[test]
    fn zero_probe_thresholds_act_as_one() {
        let p = HealthPolicy {
            unhealthy_threshold: 0,
            healthy_threshold: 0,
            ..policy()
        };
        let mut h = Health::new();
        assert_eq!(h.probe(false, &p), Some(HealthState::Unhealthy));
        assert_eq!(h.probe(true, &p), Some(HealthState::Healthy));
    }

    #[test]
    fn passive_ejection_and_expiry() {
        let p = policy();
        let mut h = Health::new();
        let t0 = Instant::now();
        assert!(!h.passive(false, &p, t0));
        assert!(!h.passive(true, &p, t0)); // resets
        assert!(!h.passive(false, &p, t0));
        assert!(h.passive(false, &p, t0));
        assert_eq!(h.ejected_until(), Some(t0 + 10 * S));
        assert!(!h.available(t0));
        assert!(!h.available(t0 + 10 * S - Duration::from_nanos(1)));
        assert!(h.available(t0 + 10 * S));
        // The probe state is untouched by ejection.
        assert_eq!(h.state(), HealthState::Healthy);
    }

    #[test]
    fn failures_while_ejected_are_ignored() {
        let p = policy();
        let mut h = Health::new();
        let t0 = Instant::now();
        h.passive(false, &p, t0);
        assert!(h.passive(false, &p, t0));
        for _ in 0..5 {
            assert!(!h.passive(false, &p, t0 + S));
        }
        assert_eq!(h.ejected_until(), Some(t0 + 10 * S));
        // After expiry it takes a full `eject_after` again.
        assert!(!h.passive(false, &p, t0 + 11 * S));
        assert!(h.passive(false, &p, t0 + 11 * S));
    }

    #[test]
    fn ejection_backoff_doubles_to_eject_max_and_resets_on_success() {
        let p = policy();
        let mut h = Health::new();
        let mut now = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..6 {
            h.passive(false, &p, now);
            assert!(h.passive(false, &p, now));
            let until = h.ejected_until().unwrap();
            lengths.push((until - now).as_secs());
            now = until;
        }
        assert_eq!(lengths, [10, 20, 40, 80, 80, 80]);
        assert!(!h.passive(true, &p, now));
        h.passive(false, &p, now);
        assert!(h.passive(false, &p, now));
        assert_eq!(h.ejected_until(), Some(now + 10 * S));
    }

    #[test]
    fn ejection_backoff_caps_at_eject_max() {
        let p = HealthPolicy {
            eject_max: Duration::from_secs(35),
            ..policy()
        };
        let lengths: Vec<u64> = (0..5).map(|n| p.ejection_length(n).as_secs()).collect();
        assert_eq!(lengths, [10, 20, 35, 35, 35]);
        // A maximum below `eject_for` counts as `eject_for`; huge counts saturate.
        let p = HealthPolicy {
            eject_max: Duration::from_secs(1),
            ..policy()
        };
        assert_eq!(p.ejection_length(3), 10 * S);
        let p = HealthPolicy {
            eject_max: Duration::MAX,
            ..policy()
        };
        assert_eq!(p.ejection_length(u32::MAX), Duration::MAX);
        assert_eq!(
            doubled(S, 40, Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn a_successful_probe_back_ends_the_ejection_on_probation() {
        let p = policy();
        let mut h = Health::new();
        let t0 = Instant::now();
        let every = Duration::from_millis(500);
        h.passive(false, &p, t0);
        assert!(h.passive(false, &p, t0));
        assert!(h.is_ejected(t0 + S));
        assert_eq!(h.probe_back_delay(&p, every), every);
        // A failed probe changes nothing.
        assert!(!h.probe_back(false, t0 + S));
        assert!(!h.available(t0 + S));
        // A good one ends it: available at once, long before the 10 s are over.
        assert!(h.probe_back(true, t0 + 2 * S));
        assert!(h.available(t0 + 2 * S));
        assert!(!h.is_ejected(t0 + 2 * S));
        assert_eq!(h.ejected_until(), None);
        // Not ejected: nothing to end.
        assert!(!h.probe_back(true, t0 + 2 * S));
        // On probation one failure ejects again, for the doubled time, and probes back off.
        assert!(h.passive(false, &p, t0 + 3 * S));
        assert_eq!(h.ejected_until(), Some(t0 + 23 * S));
        assert_eq!(h.probe_back_delay(&p, every), 2 * every);
        assert!(h.probe_back(true, t0 + 4 * S));
        assert!(h.passive(false, &p, t0 + 5 * S));
        assert_eq!(h.ejected_until(), Some(t0 + 45 * S));
        assert_eq!(h.probe_back_delay(&p, every), 4 * every);
        // A real success ends probation and resets both backoffs.
        assert!(h.probe_back(true, t0 + 6 * S));
        assert!(!h.passive(true, &p, t0 + 6 * S));
        assert_eq!(h.probe_back_delay(&p, every), every);
        assert!(
            !h.passive(false, &p, t0 + 7 * S),
            "eject_after applies again"
        );
        assert!(h.passive(false, &p, t0 + 7 * S));
        assert_eq!(h.ejected_until(), Some(t0 + 17 * S));
    }

    #[test]
    fn an_ejection_that_expires_is_no_probation_and_probes_do_not_back_off_for_it() {
        let p = policy();
        let mut h = Health::new();
        let t0 = Instant::now();
        let every = S;
        h.passive(false, &p, t0);
        assert!(h.passive(false, &p, t0));
        // Probes kept failing; the ejection ran out: `eject_after` failures eject again.
        assert!(!h.probe_back(true, t0 + 10 * S), "over already");
        assert!(!h.passive(false, &p, t0 + 10 * S));
        assert!(h.passive(false, &p, t0 + 10 * S));
        assert_eq!(h.ejected_until(), Some(t0 + 30 * S));
        assert_eq!(h.probe_back_delay(&p, every), every);
        // The probe delay never exceeds the longest ejection.
        let mut h = Health::new();
        h.relapses = 30;
        assert_eq!(h.probe_back_delay(&p, every), 80 * S);
    }

    #[test]
    fn eject_after_zero_disables_ejection() {
        let p = HealthPolicy {
            eject_after: 0,
            ..policy()
        };
        let mut h = Health::new();
        let now = Instant::now();
        for _ in 0..100 {
            assert!(!h.passive(false, &p, now));
        }
        assert!(h.available(now));
    }

    #[test]
    fn cooldown_keeps_the_later_deadline() {
        let mut h = Health::new();
        let t0 = Instant::now();
        h.cooldown_until(t0 + 5 * S);
        h.cooldown_until(t0 + 2 * S);
        assert_eq!(h.cooldown(), Some(t0 + 5 * S));
        assert!(!h.available(t0 + 4 * S));
        assert!(h.available(t0 + 5 * S));
        h.cooldown_until(t0 + 9 * S);
        assert_eq!(h.cooldown(), Some(t0 + 9 * S));
        assert!(!h.available(t0 + 6 * S));
    }
}
