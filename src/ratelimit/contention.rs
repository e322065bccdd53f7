//! How many slots other nodes book between two of this node's bookings, learnt from the waits Redis
//! answers with. After a booking, this node's next chance is not one slot interval later but one
//! interval per node booking in turn: asking earlier would only be refused (one wasted Redis call per
//! node per slot, the herd). A node alone sees no others and asks again one interval later, so a
//! node carrying all the traffic still gets every slot.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Most other bookings assumed between two of ours (a bound on how long a node holds back).
const MAX_OTHERS: f64 = 16.0;
/// Refusals in a row that still double the hold-back (2^4 = 16 times the others' turns at most).
const MAX_DOUBLINGS: u32 = 4;

#[derive(Debug, Default)]
pub(crate) struct Contention {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Our last booking: when it was answered and how far ahead its slot was.
    last: Option<(Instant, Duration)>,
    /// Smoothed count of other bookings between two of ours.
    others: f64,
    /// Refusals since our last booking.
    refusals: u32,
}

impl Contention {
    /// Before anything is learnt, assume `others` nodes compete for the slots (the other members).
    pub(crate) fn assume(&self, others: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.last.is_none() {
            s.others = (others as f64).min(MAX_OTHERS);
        }
    }

    /// A refusal answered with the slot `wait` ahead: how far ahead this node's chance is, with
    /// the others booking slots as they come within reach. Each refusal in a row doubles the
    /// others' turns: a node whose requests keep arriving just after another node's (the slot that
    /// came within reach is always taken first) asks less and less often instead of spending a
    /// Redis call on every turn it loses; a booking resets it.
    pub(crate) fn refused(&self, wait: Duration, step: Duration) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let doublings = s.refusals.min(MAX_DOUBLINGS);
        s.refusals = s.refusals.saturating_add(1);
        wait + step.mul_f64(s.others.round() * f64::from(1u32 << doublings))
    }

    /// A booking answered at `now` with its slot `wait` ahead, slots `step` apart: how far ahead
    /// this node's next slot can be expected.
    pub(crate) fn booked(&self, now: Instant, wait: Duration, step: Duration) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, last_wait)) = s.last {
            let last_slot = at + last_wait;
            let this_slot = now + wait;
            // Our previous slot still counted (the debt it made is still there): the gap between the
            // two slots, less our own one interval, is what the others booked meanwhile.
            if last_slot > now && !step.is_zero() {
                let gap = this_slot.saturating_duration_since(last_slot);
                let seen = (gap.as_secs_f64() / step.as_secs_f64() - 1.0).clamp(0.0, MAX_OTHERS);
                s.others = 0.7 * s.others + 0.3 * seen;
            } else {
                // The queue drained between our bookings: nobody was ahead.
                s.others *= 0.7;
            }
        }
        s.last = Some((now, wait));
        s.refusals = 0;
        wait + step.mul_f64(1.0 + s.others.round())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(100);

    #[tokio::test(start_paused = true)]
    async fn alone_the_next_slot_is_one_interval_later() {
        let c = Contention::default();
        let t0 = Instant::now();
        assert_eq!(c.booked(t0, STEP, STEP), 2 * STEP);
        // Our next booking, one interval later, got the very next slot: no others.
        let t1 = t0 + STEP;
        assert_eq!(c.booked(t1, STEP, STEP), 2 * STEP);
    }

    #[tokio::test(start_paused = true)]
    async fn with_two_others_booking_in_turn_it_learns_to_wait_three_intervals() {
        let c = Contention::default();
        let mut now = Instant::now();
        let mut wait = Duration::from_secs(5);
        let mut next = Duration::ZERO;
        for _ in 0..20 {
            next = c.booked(now, wait, STEP);
            // Two other nodes book the two slots after ours before we ask again.
            now += STEP;
            wait = wait + 3 * STEP - STEP;
        }
        assert_eq!(next, wait - 2 * STEP + 3 * STEP);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_assumes_the_other_members_compete_until_it_learns() {
        let c = Contention::default();
        c.assume(2);
        assert_eq!(c.refused(STEP, STEP), 3 * STEP);
        let mut now = Instant::now();
        // Alone after all: each booking gets the very next slot; the assumption fades.
        let mut next = Duration::ZERO;
        for _ in 0..10 {
            next = c.booked(now, 2 * STEP, STEP);
            now += STEP;
        }
        assert_eq!(next, 3 * STEP);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_in_a_row_hold_back_longer_until_a_booking() {
        let c = Contention::default();
        c.assume(2);
        assert_eq!(c.refused(STEP, STEP), 3 * STEP);
        assert_eq!(c.refused(STEP, STEP), 5 * STEP);
        assert_eq!(c.refused(STEP, STEP), 9 * STEP);
        for _ in 0..10 {
            c.refused(STEP, STEP);
        }
        assert_eq!(c.refused(STEP, STEP), 33 * STEP);
        c.booked(Instant::now(), STEP, STEP);
        assert_eq!(c.refused(STEP, STEP), 3 * STEP);
        // Alone, a refusal holds back nothing more than its wait.
        let alone = Contention::default();
        alone.refused(STEP, STEP);
        assert_eq!(alone.refused(STEP, STEP), STEP);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_queue_forgets_the_others() {
        let c = Contention::default();
        let t0 = Instant::now();
        c.booked(t0, STEP, STEP);
        c.booked(t0 + STEP / 2, 4 * STEP, STEP);
        // Long after our slot passed: the estimate decays towards alone.
        let mut now = t0 + Duration::from_secs(10);
        let mut next = Duration::ZERO;
        for _ in 0..10 {
            next = c.booked(now, STEP, STEP);
            now += Duration::from_secs(10);
        }
        assert_eq!(next, 2 * STEP);
    }
}
