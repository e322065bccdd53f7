//! The waiting room's order (pure): priority class, then weighted fair queuing among tenants, then
//! earliest deadline first (then FIFO) within a tenant.
//!
//! Fair queuing is self-clocked (SCFQ): each backlogged tenant of a class carries the virtual finish
//! tag of its next request; the smallest tag is served next; serving a tenant advances its tag by
//! `SCALE / weight` and moves the class's virtual time to the served tag. A tenant that becomes
//! backlogged starts at `virtual time + SCALE / weight`, so a newcomer is interleaved right away
//! instead of waiting behind another tenant's whole backlog.

use crate::config::Priority;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::time::Instant;

/// One service, in virtual time, at weight 1.
const SCALE: u128 = 1 << 32;

fn cost(weight: u32) -> u128 {
    SCALE / u128::from(weight.max(1))
}

/// Order of waiters within a tenant: those with a deadline first (earliest first), then FIFO by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    no_deadline: bool,
    deadline: Option<Instant>,
    pub id: u64,
}

impl Key {
    pub fn new(deadline: Option<Instant>, id: u64) -> Key {
        Key {
            no_deadline: deadline.is_none(),
            deadline,
            id,
        }
    }
}

/// Where a waiter sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pos {
    pub priority: Priority,
    pub tenant: Arc<str>,
    pub key: Key,
}

#[derive(Debug)]
pub(super) struct Waiter<S> {
    pub slot: S,
    pub enqueued: Instant,
    /// Running its `try_start` outside the lock: not to be shed meanwhile.
    pub trying: bool,
    /// The capacity generation at which its last `try_start` failed.
    pub blocked: Option<u64>,
}

#[derive(Debug)]
struct Tenant<S> {
    tag: u128,
    seq: u64,
    weight: u32,
    waiters: BTreeMap<Key, Waiter<S>>,
}

#[derive(Debug)]
struct Class<S> {
    vtime: u128,
    tenants: HashMap<Arc<str>, Tenant<S>>,
    /// (finish tag, backlog sequence) → tenant: the first entry is served next.
    order: BTreeMap<(u128, u64), Arc<str>>,
    len: usize,
}

impl<S> Default for Class<S> {
    fn default() -> Self {
        Class {
            vtime: 0,
            tenants: HashMap::new(),
            order: BTreeMap::new(),
            len: 0,
        }
    }
}

#[derive(Debug)]
pub(super) struct Fair<S> {
    classes: [Class<S>; 5],
    len: usize,
    next_seq: u64,
}

impl<S> Default for Fair<S> {
    fn default() -> Self {
        Fair {
            classes: Default::default(),
            len: 0,
            next_seq: 0,
        }
    }
}

impl<S> Fair<S> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn class_len(&self, p: Priority) -> usize {
        self.classes[p as usize].len
    }

    pub fn push(&mut self, pos: &Pos, weight: u32, waiter: Waiter<S>) {
        let class = &mut self.classes[pos.priority as usize];
        if !class.tenants.contains_key(&pos.tenant) {
            let seq = self.next_seq;
            self.next_seq += 1;
            let tag = class.vtime + cost(weight);
            class.order.insert((tag, seq), pos.tenant.clone());
            let tenant = Tenant {
                tag,
                seq,
                weight,
                waiters: BTreeMap::new(),
            };
            class.tenants.insert(pos.tenant.clone(), tenant);
        }
        let Some(tenant) = class.tenants.get_mut(&pos.tenant) else {
            return;
        };
        tenant.weight = weight.max(1);
        tenant.waiters.insert(pos.key, waiter);
        class.len += 1;
        self.len += 1;
    }

    /// When the longest-waiting waiter arrived (the queue's delay, whatever the serve order).
    pub fn oldest(&self) -> Option<Instant> {
        self.classes
            .iter()
            .flat_map(|c| c.tenants.values())
            .flat_map(|t| t.waiters.values())
            .map(|w| w.enqueued)
            .min()
    }

    /// The first waiter, in serve order (class, tenant tag, key), that has not failed to start at
    /// capacity generation `epoch`.
    pub fn first_unblocked(&self, epoch: u64) -> Option<(u64, &Waiter<S>)> {
        self.classes.iter().find_map(|class| {
            class.order.values().find_map(|name| {
                class
                    .tenants
                    .get(name)?
                    .waiters
                    .iter()
                    .find_map(|(k, w)| (w.blocked != Some(epoch)).then_some((k.id, w)))
            })
        })
    }

    /// Up to `n` waiters that have not failed at `epoch`, in serve order, all of the first class
    /// that has one (a window never mixes classes).
    pub fn unblocked(&self, epoch: u64, n: usize) -> Vec<(u64, &Waiter<S>)> {
        let mut out = Vec::new();
        for class in &self.classes {
            for name in class.order.values() {
                let Some(t) = class.tenants.get(name) else {
                    continue;
                };
                for (k, w) in &t.waiters {
                    if w.blocked != Some(epoch) {
                        out.push((k.id, w));
                        if out.len() == n {
                            return out;
                        }
                    }
                }
            }
            if !out.is_empty() {
                return out;
            }
        }
        out
    }

    /// The waiter served next and its place.
    pub fn head(&self) -> Option<(Priority, &Key, &Waiter<S>)> {
        Priority::ALL.into_iter().find_map(|p| {
            let class = &self.classes[p as usize];
            let (_, name) = class.order.first_key_value()?;
            let (key, w) = class.tenants.get(name)?.waiters.first_key_value()?;
            Some((p, key, w))
        })
    }

    pub fn get_mut(&mut self, pos: &Pos) -> Option<&mut Waiter<S>> {
        let class = &mut self.classes[pos.priority as usize];
        class
            .tenants
            .get_mut(&pos.tenant)?
            .waiters
            .get_mut(&pos.key)
    }

    /// Take a waiter out; `served` charges its tenant one service (fair-queuing clock advances).
    pub fn remove(&mut self, pos: &Pos, served: bool) -> Option<Waiter<S>> {
        let class = &mut self.classes[pos.priority as usize];
        let tenant = class.tenants.get_mut(&pos.tenant)?;
        let waiter = tenant.waiters.remove(&pos.key)?;
        class.len -= 1;
        self.len -= 1;
        if served {
            class.vtime = class.vtime.max(tenant.tag);
            if !tenant.waiters.is_empty() {
                class.order.remove(&(tenant.tag, tenant.seq));
                tenant.tag += cost(tenant.weight);
                class
                    .order
                    .insert((tenant.tag, tenant.seq), pos.tenant.clone());
            }
        }
        if tenant.waiters.is_empty() {
            class.order.remove(&(tenant.tag, tenant.seq));
            class.tenants.remove(&pos.tenant);
        }
        if class.len == 0 {
            // Tags only matter among backlogged tenants: rebase so they never grow without bound.
            class.vtime = 0;
        }
        Some(waiter)
    }

    /// The waiter to shed first among classes `floor` and less important: in the least important
    /// non-empty class, the tenant with the largest backlog in virtual time (its last request would
    /// finish last), and its last waiter in serve order. Waiters busy trying are never chosen.
    pub fn victim(&self, floor: Priority) -> Option<Pos> {
        let p = Priority::ALL
            .into_iter()
            .rev()
            .take_while(|p| *p >= floor)
            .find(|p| self.classes[*p as usize].len > 0)?;
        let class = &self.classes[p as usize];
        let (name, tenant) = class.tenants.iter().max_by_key(|(_, t)| {
            let backlog = (t.waiters.len() as u128 - 1) * cost(t.weight);
            (t.tag + backlog, t.seq)
        })?;
        let (key, _) = tenant.waiters.iter().rev().find(|(_, w)| !w.trying)?;
        Some(Pos {
            priority: p,
            tenant: name.clone(),
            key: *key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pos(p: Priority, t: &str, deadline: Option<Instant>, id: u64) -> Pos {
        Pos {
            priority: p,
            tenant: t.into(),
            key: Key::new(deadline, id),
        }
    }

    fn push(f: &mut Fair<()>, p: &Pos, weight: u32) {
        let w = Waiter {
            slot: (),
            enqueued: Instant::now(),
            trying: false,
            blocked: None,
        };
        f.push(p, weight, w);
    }

    /// Serve everything, returning tenant names in serve order.
    fn drain(f: &mut Fair<()>, all: &[Pos]) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(id) = f.head().map(|(_, k, _)| k.id) {
            let p = all.iter().find(|p| p.key.id == id).unwrap();
            f.remove(p, true).unwrap();
            out.push(id);
        }
        out
    }

    #[test]
    fn deadline_order_within_tenant_then_fifo() {
        let now = Instant::now();
        let mut f = Fair::default();
        let d = |ms| Some(now + Duration::from_millis(ms));
        let all = [
            pos(Priority::Normal, "a", None, 0),
            pos(Priority::Normal, "a", d(300), 1),
            pos(Priority::Normal, "a", None, 2),
            pos(Priority::Normal, "a", d(100), 3),
        ];
        all.iter().for_each(|p| push(&mut f, p, 1));
        assert_eq!(drain(&mut f, &all), [3, 1, 0, 2]);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn victim_is_least_important_and_largest_backlog() {
        let mut f = Fair::default();
        let all = [
            pos(Priority::Low, "a", None, 0),
            pos(Priority::Batch, "a", None, 1),
            pos(Priority::Batch, "b", None, 2),
            pos(Priority::Batch, "b", None, 3),
            pos(Priority::Critical, "c", None, 4),
        ];
        all.iter().for_each(|p| push(&mut f, p, 1));
        assert_eq!(f.victim(Priority::Critical), Some(all[3].clone()));
        f.remove(&all[3], false);
        f.remove(&all[2], false);
        f.remove(&all[1], false);
        assert_eq!(f.victim(Priority::High), Some(all[0].clone()));
        f.remove(&all[0], false);
        assert_eq!(f.victim(Priority::High), None);
        assert_eq!(f.victim(Priority::Critical), Some(all[4].clone()));
        assert_eq!(f.class_len(Priority::Critical), 1);
    }
}
