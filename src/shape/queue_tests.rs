//! AdmissionQueue tests, on a paused clock: order, fairness, shedding, expiry, cancellation.

use super::{AdmissionQueue, Shed, Ticket};
use crate::config::Priority::{self, Batch, Critical, High, Low, Normal};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{Instant, advance};

type Waiting = JoinHandle<Result<(), Shed>>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Let every runnable task run until all are blocked again.
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

fn take(slots: &AtomicUsize) -> Option<()> {
    slots
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .ok()
        .map(|_| ())
}

/// A queue in front of a pool of slots, recording who got one in which order.
struct Rig {
    q: Arc<AdmissionQueue>,
    slots: Arc<AtomicUsize>,
    order: Arc<Mutex<Vec<String>>>,
}

impl Rig {
    fn new(max_len: usize) -> Rig {
        Rig::with(AdmissionQueue::new(
            max_len,
            ms(60_000),
            ms(10_000),
            ms(10_000),
        ))
    }

    fn with(q: AdmissionQueue) -> Rig {
        Rig {
            q: Arc::new(q),
            slots: Arc::new(AtomicUsize::new(0)),
            order: Arc::default(),
        }
    }

    /// Start a waiter and let it reach its place in the queue.
    async fn spawn(&self, name: impl Into<String>, ticket: Ticket) -> Waiting {
        let (q, slots, order, name) = (
            self.q.clone(),
            self.slots.clone(),
            self.order.clone(),
            name.into(),
        );
        let h = tokio::spawn(async move {
            q.wait(ticket, || take(&slots)).await?;
            order.lock().unwrap().push(name);
            Ok(())
        });
        settle().await;
        h
    }

    async fn release(&self, n: usize) {
        self.slots.fetch_add(n, Ordering::SeqCst);
        self.q.notify();
        settle().await;
    }

    fn order(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }
}

fn ticket(p: Priority, tenant: &str) -> Ticket {
    Ticket::new(p, tenant)
}

/// Advance the paused clock to `t` ms after the start, 10ms at a time.
async fn step(at: &mut u64, t: u64) {
    while *at < t {
        advance(ms(10)).await;
        settle().await;
        *at += 10;
    }
}

async fn result(h: Waiting) -> Result<(), Shed> {
    assert!(h.is_finished(), "waiter still queued");
    h.await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn fast_path_admits_at_once() {
    let rig = Rig::new(4);
    rig.slots.store(1, Ordering::SeqCst);
    assert_eq!(
        rig.q.wait(ticket(Normal, "a"), || take(&rig.slots)).await,
        Ok(())
    );
    assert!(rig.q.is_empty());
    // An already expired deadline is refused even with capacity free.
    rig.slots.store(1, Ordering::SeqCst);
    let mut t = ticket(Normal, "a");
    t.deadline = Some(Instant::now());
    let r = rig.q.wait(t, || take(&rig.slots)).await;
    assert_eq!(r, Err(Shed::DeadlineExpired));
    assert_eq!(rig.slots.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn higher_priority_is_admitted_first() {
    let rig = Rig::new(16);
    let mut hs = Vec::new();
    for p in [Batch, Normal, Low, Critical, High] {
        hs.push(rig.spawn(p.as_str(), ticket(p, "a")).await);
    }
    assert_eq!(rig.q.len_by_priority(), [1; 5]);
    assert_eq!(rig.q.len(), 5);
    rig.release(5).await;
    assert_eq!(rig.order(), ["critical", "high", "normal", "low", "batch"]);
    for h in hs {
        assert_eq!(result(h).await, Ok(()));
    }
    assert_eq!(rig.q.len_by_priority(), [0; 5]);
}

#[tokio::test(start_paused = true)]
async fn earliest_deadline_first_within_a_tenant() {
    let rig = Rig::new(16);
    let now = Instant::now();
    for (name, d) in [
        ("d400", Some(400)),
        ("none1", None),
        ("d100", Some(100)),
        ("none2", None),
        ("d200", Some(200)),
    ] {
        let mut t = ticket(Normal, "a");
        t.deadline = d.map(|d| now + ms(d));
        rig.spawn(name, t).await;
    }
    rig.release(5).await;
    assert_eq!(rig.order(), ["d100", "d200", "d400", "none1", "none2"]);
}

#[tokio::test(start_paused = true)]
async fn quiet_tenant_is_interleaved_with_a_noisy_one() {
    let rig = Rig::new(1000);
    for i in 0..100 {
        rig.spawn(format!("A{i}"), ticket(Normal, "a")).await;
    }
    for i in 0..10 {
        rig.spawn(format!("B{i}"), ticket(Normal, "b")).await;
    }
    for _ in 0..110 {
        rig.release(1).await;
    }
    let order = rig.order();
    let first: Vec<String> = (0..10)
        .flat_map(|i| [format!("A{i}"), format!("B{i}")])
        .collect();
    assert_eq!(order[..20], first[..]);
    let rest: Vec<String> = (10..100).map(|i| format!("A{i}")).collect();
    assert_eq!(order[20..], rest[..]);
}

#[tokio::test(start_paused = true)]
async fn weights_share_service_proportionally() {
    let rig = Rig::new(1000);
    for i in 0..30 {
        let mut t = ticket(Normal, "a");
        t.weight = 2;
        rig.spawn(format!("a{i}"), t).await;
        rig.spawn(format!("b{i}"), ticket(Normal, "b")).await;
    }
    for _ in 0..30 {
        rig.release(1).await;
    }
    let tenants: String = rig.order().iter().map(|n| &n[..1]).collect();
    assert_eq!(tenants, "aab".repeat(10));
}

#[tokio::test(start_paused = true)]
async fn full_queue_sheds_the_lowest_priority_first() {
    let rig = Rig::new(3);
    let low = rig.spawn("low", ticket(Low, "a")).await;
    let batch = rig.spawn("batch", ticket(Batch, "a")).await;
    let normal = rig.spawn("normal", ticket(Normal, "a")).await;
    let high = rig.spawn("high", ticket(High, "a")).await;
    assert_eq!(result(batch).await, Err(Shed::QueueFull));
    let late = rig.spawn("late", ticket(Batch, "b")).await;
    assert_eq!(result(late).await, Err(Shed::QueueFull));
    let c1 = rig.spawn("c1", ticket(Critical, "a")).await;
    assert_eq!(result(low).await, Err(Shed::QueueFull));
    let c2 = rig.spawn("c2", ticket(Critical, "a")).await;
    assert_eq!(result(normal).await, Err(Shed::QueueFull));
    // Same class as the least important waiter: the newcomer is the one refused.
    let c3 = rig.spawn("c3", ticket(High, "z")).await;
    assert_eq!(result(c3).await, Err(Shed::QueueFull));
    assert_eq!(rig.q.len_by_priority(), [2, 1, 0, 0, 0]);
    rig.release(3).await;
    assert_eq!(rig.order(), ["c1", "c2", "high"]);
    for h in [c1, c2, high] {
        assert_eq!(result(h).await, Ok(()));
    }
}

#[tokio::test(start_paused = true)]
async fn expired_deadline_is_shed_and_never_admitted() {
    let rig = Rig::new(8);
    let mut t = ticket(High, "a");
    t.deadline = Some(Instant::now() + ms(100));
    let hurried = rig.spawn("hurried", t).await;
    let patient = rig.spawn("patient", ticket(Normal, "a")).await;
    advance(ms(99)).await;
    settle().await;
    assert!(!hurried.is_finished());
    advance(ms(1)).await;
    rig.slots.fetch_add(1, Ordering::SeqCst);
    rig.q.notify();
    settle().await;
    assert_eq!(result(hurried).await, Err(Shed::DeadlineExpired));
    assert_eq!(result(patient).await, Ok(()));
    assert_eq!(rig.order(), ["patient"]);
}

#[tokio::test(start_paused = true)]
async fn max_wait_sheds() {
    let rig = Rig::with(AdmissionQueue::new(8, ms(1000), ms(10_000), ms(10_000)));
    let h = rig.spawn("w", ticket(Critical, "a")).await;
    advance(ms(999)).await;
    settle().await;
    assert!(!h.is_finished());
    advance(ms(1)).await;
    settle().await;
    assert_eq!(result(h).await, Err(Shed::MaxWait));
    assert!(rig.q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn codel_sheds_batch_while_critical_waits_on() {
    let rig = Rig::with(AdmissionQueue::new(64, ms(60_000), ms(50), ms(100)));
    let c1 = rig.spawn("c1", ticket(Critical, "x")).await;
    let mut batch = Vec::new();
    for i in 0..3 {
        batch.push(rig.spawn(format!("b{i}"), ticket(Batch, "y")).await);
    }
    let c2 = rig.spawn("c2", ticket(Critical, "x")).await;
    let shed = |b: &[Waiting]| b.iter().filter(|h| h.is_finished()).count();
    let mut at = 0;
    // Above target from 50ms; a whole interval later (150ms) the first batch request goes, then the
    // next after interval / sqrt(1), then interval / sqrt(2).
    step(&mut at, 140).await;
    assert_eq!(shed(&batch), 0);
    step(&mut at, 150).await;
    assert_eq!(shed(&batch), 1);
    step(&mut at, 240).await;
    assert_eq!(shed(&batch), 1);
    step(&mut at, 250).await;
    assert_eq!(shed(&batch), 2);
    step(&mut at, 320).await;
    assert_eq!(shed(&batch), 2);
    step(&mut at, 330).await;
    assert_eq!(shed(&batch), 3);
    step(&mut at, 2000).await;
    assert_eq!(rig.q.len_by_priority(), [2, 0, 0, 0, 0]);
    for b in batch {
        assert_eq!(result(b).await, Err(Shed::Congested));
    }
    rig.release(2).await;
    assert_eq!(rig.order(), ["c1", "c2"]);
    assert_eq!(result(c1).await, Ok(()));
    assert_eq!(result(c2).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn dropped_waiter_leaves_the_queue() {
    let rig = Rig::new(8);
    let first = rig.spawn("first", ticket(Normal, "a")).await;
    let second = rig.spawn("second", ticket(Normal, "a")).await;
    assert_eq!(rig.q.len(), 2);
    first.abort();
    settle().await;
    assert_eq!(rig.q.len(), 1);
    rig.release(1).await;
    assert_eq!(result(second).await, Ok(()));
    assert_eq!(rig.order(), ["second"]);
}

#[tokio::test(start_paused = true)]
async fn dropped_head_passes_its_wake_up_on() {
    let rig = Rig::new(8);
    let first = rig.spawn("first", ticket(Normal, "a")).await;
    let second = rig.spawn("second", ticket(Normal, "a")).await;
    // The head is woken for the freed slot but goes away before it runs.
    rig.slots.fetch_add(1, Ordering::SeqCst);
    rig.q.notify();
    first.abort();
    settle().await;
    assert_eq!(result(second).await, Ok(()));
    assert_eq!(rig.order(), ["second"]);
    assert!(rig.q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_blocked_head_keeps_its_resource_but_does_not_block_others() {
    let q = Arc::new(AdmissionQueue::new(8, ms(60_000), ms(10_000), ms(10_000)));
    let a = Arc::new(AtomicUsize::new(0));
    let b = Arc::new(AtomicUsize::new(1));
    let spawn = |p, pool: &Arc<AtomicUsize>| {
        let (q, pool) = (q.clone(), pool.clone());
        tokio::spawn(async move { q.wait(ticket(p, "t"), || take(&pool)).await })
    };
    // Same resource: the waiter behind does not take the slot the head is waiting for.
    let head = spawn(High, &a);
    settle().await;
    let same = spawn(Normal, &a);
    settle().await;
    q.notify();
    settle().await;
    assert!(!head.is_finished() && !same.is_finished());
    // A waiter for another resource (another backend set) starts although the head cannot.
    let other = spawn(Normal, &b);
    settle().await;
    q.notify();
    settle().await;
    assert_eq!(result(other).await, Ok(()));
    assert!(!head.is_finished() && !same.is_finished());
    // One slot on `a`: the head gets it, not the one behind.
    a.fetch_add(1, Ordering::SeqCst);
    q.notify();
    settle().await;
    assert_eq!(result(head).await, Ok(()));
    assert!(!same.is_finished());
    a.fetch_add(1, Ordering::SeqCst);
    q.notify();
    settle().await;
    assert_eq!(result(same).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn retry_after_tries_again_without_notify() {
    let q = AdmissionQueue::new(8, ms(60_000), ms(10_000), ms(10_000));
    let ready = Instant::now() + ms(100);
    let tries = AtomicUsize::new(0);
    let got = q
        .wait_or_retry(ticket(Normal, "a"), || {
            tries.fetch_add(1, Ordering::SeqCst);
            let now = Instant::now();
            if now >= ready {
                Ok(now)
            } else {
                Err(Some(ready - now))
            }
        })
        .await;
    assert_eq!(got, Ok(ready));
    assert_eq!(tries.load(Ordering::SeqCst), 3);
}

#[test]
fn wait_future_is_send() {
    fn send<F: Send>(_: F) {}
    let q = AdmissionQueue::new(1, ms(1), ms(1), ms(1));
    send(q.wait(ticket(Normal, "a"), || Some(())));
}
