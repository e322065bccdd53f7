//! What a waiter brings to the admission queue (`Ticket`) and why it may be sent away (`Shed`).

use crate::config::Priority;
use std::sync::Arc;
use tokio::time::Instant;

/// Who is waiting, and until when.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub priority: Priority,
    pub tenant: Arc<str>,
    /// Fair-queuing weight among tenants of the same class (0 counts as 1).
    pub weight: u32,
    /// Past it the request is shed with [`Shed::DeadlineExpired`] and never started.
    pub deadline: Option<Instant>,
    /// When the request arrived: `max_wait` and the queue delay count from here.
    pub enqueued: Instant,
}

impl Ticket {
    /// Weight 1, no deadline, enqueued now.
    pub fn new(priority: Priority, tenant: impl Into<Arc<str>>) -> Ticket {
        Ticket {
            priority,
            tenant: tenant.into(),
            weight: 1,
            deadline: None,
            enqueued: Instant::now(),
        }
    }
}

/// Why a request left the queue without starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shed {
    #[error("queue is full")]
    QueueFull,
    #[error("deadline passed while queued")]
    DeadlineExpired,
    #[error("waited longer than the maximum wait")]
    MaxWait,
    #[error("shed under congestion (queue delay above target)")]
    Congested,
}

impl Shed {
    pub(super) const ALL: [Shed; 4] = [
        Shed::QueueFull,
        Shed::DeadlineExpired,
        Shed::MaxWait,
        Shed::Congested,
    ];

    /// Metric label: `queue_full`, `deadline`, `max_wait`, `congested`.
    pub fn label(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue_full",
            Shed::DeadlineExpired => "deadline",
            Shed::MaxWait => "max_wait",
            Shed::Congested => "congested",
        }
    }
}
