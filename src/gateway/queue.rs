//! The identify queue: Discord allows `max_concurrency` identifies per 5 seconds per bot, and
//! Twilight's default queue enforces one per 5 seconds. A fake server does not rate-limit, so
//! waiting there only slows a test; [`IdentifyQueue::Unlimited`] lets every shard go at once.

use std::time::Duration;

use tokio::sync::oneshot;
use twilight_gateway::queue::{InMemoryQueue, Queue};

use super::config::IdentifyConcurrency;

/// One queue shared by every shard of the process (sharing it is what makes the limit hold).
#[derive(Debug, Clone)]
pub enum IdentifyQueue {
    /// Twilight's in-memory queue, limited to the configured identifies per 5 seconds.
    Limited(InMemoryQueue),
    /// No waiting: every shard identifies at once.
    Unlimited,
}

impl IdentifyQueue {
    /// The queue for `concurrency`, sized for `total_shards`.
    pub fn new(concurrency: IdentifyConcurrency, total_shards: u32) -> Self {
        match concurrency {
            IdentifyConcurrency::Unlimited => IdentifyQueue::Unlimited,
            IdentifyConcurrency::PerFiveSeconds(n) => IdentifyQueue::Limited(InMemoryQueue::new(
                n,
                // Discord's daily session budget; the fresh-bot default.
                1000,
                Duration::ZERO,
                1000.max(total_shards),
            )),
        }
    }
}

impl Queue for IdentifyQueue {
    fn enqueue(&self, shard: u32) -> oneshot::Receiver<()> {
        match self {
            IdentifyQueue::Limited(queue) => queue.enqueue(shard),
            IdentifyQueue::Unlimited => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(());
                rx
            }
        }
    }
}
