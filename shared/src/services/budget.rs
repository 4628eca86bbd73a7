//! How long a scheduled job may go on: Lambda's deadline less a reserve for the work in
//! flight. A job checks it before each unit of work and saves its progress when it is out.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// When a run must stop starting work.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    deadline: Instant,
    max_sends: Option<usize>,
}

impl Budget {
    /// Until `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            max_sends: None,
        }
    }

    /// For `span` from now.
    pub fn lasting(span: Duration) -> Self {
        Self::until(Instant::now() + span)
    }

    /// Until Lambda's deadline (Unix milliseconds) less `reserve`: the time a chunk in flight
    /// and the save after it may still take.
    pub fn before_deadline_ms(deadline_ms: u64, reserve: Duration) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        Self::lasting(left.saturating_sub(reserve))
    }

    /// As if the time ran out once `sends` calls were made (meter events sent, pages read: to
    /// stop a run at an exact point in a test).
    pub fn with_max_sends(self, sends: usize) -> Self {
        Self {
            max_sends: Some(sends),
            ..self
        }
    }

    /// Whether the time is up (or, in a test, `sent` reached the bound).
    pub fn out(&self, sent: usize) -> bool {
        Instant::now() >= self.deadline || self.max_sends.is_some_and(|max| sent >= max)
    }

    /// Whether the deadline has passed (whatever the test bound on calls).
    pub fn past_deadline(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// How many more sends the bound allows (unbounded outside tests).
    pub fn sends_left(&self, sent: usize) -> usize {
        self.max_sends
            .map_or(usize::MAX, |max| max.saturating_sub(sent))
    }
}
