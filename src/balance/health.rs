//! Backend health: active-probe state machine, passive outlier ejection with
//! backoff, and 429 cooldown.

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
    /// Ejection time; doubles on each repeated ejection up to 8x, back to 1x
    /// after a passive success.
    pub eject_for: Duration,
}

impl Default for HealthPolicy {
    /// 3 failed probes to go down, 2 good ones to come back, eject for 30 s
    /// after 5 failures in a row.
    fn default() -> Self {
        HealthPolicy {
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            eject_after: 5,
            eject_for: Duration::from_secs(30),
        }
    }
}

/// Most doublings of [`HealthPolicy::eject_for`]: 2^3 = 8x.
const MAX_BACKOFF_SHIFT: u32 = 3;

/// One backend's health, fed by active probes and passive outcomes.
#[derive(Debug, Clone)]
pub struct Health {
    state: HealthState,
    probe_successes: u32,
    probe_failures: u32,
    passive_failures: u32,
    /// Ejections since the last passive success: sets the backoff.
    ejections: u32,
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
    /// A success resets the failure count and the ejection backoff. Failures
    /// reported while the backend is ejected (requests that were already in
    /// flight) are ignored.
    pub fn passive(&mut self, ok: bool, p: &HealthPolicy, now: Instant) -> bool {
        if ok {
            self.passive_failures = 0;
            self.ejections = 0;
            return false;
        }
        if self.ejected_until.is_some_and(|t| now < t) {
            return false;
        }
        self.passive_failures = self.passive_failures.saturating_add(1);
        if p.eject_after == 0 || self.passive_failures < p.eject_after {
            return false;
        }
        let factor = 1u32 << self.ejections.min(MAX_BACKOFF_SHIFT);
        let until = now
            .checked_add(p.eject_for.saturating_mul(factor))
            .or_else(|| now.checked_add(p.eject_for))
            .unwrap_or(now);
        self.ejected_until = Some(until);
        self.ejections = self.ejections.saturating_add(1);
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
    fn ejection_backoff_doubles_to_8x_and_resets_on_success() {
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
