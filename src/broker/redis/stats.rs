//! Link counters, shared between the I/O thread (the only writer of most of them) and
//! any number of readers on the shards or the metrics endpoint.
//!
//! Plain relaxed atomics rather than a lock: the I/O thread updates them once per
//! pipeline (not once per command), and readers only ever want an approximate,
//! monotonic snapshot, so no ordering between counters is promised.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Number of log2 buckets in [`LinkMetrics::pipeline_hist`] and [`LinkMetrics::rtt_hist_us`].
pub const HIST_BUCKETS: usize = 20;

/// A snapshot of the link's counters (see [`super::RedisLink::metrics`]).
///
/// Histograms are log2 buckets: bucket `i` counts values in `[2^i, 2^(i+1))`
/// (bucket 0 also holds 0); the last bucket holds everything larger.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkMetrics {
    /// Pipelines written to the command connection (one write each).
    pub pipelines: u64,
    /// Commands sent in those pipelines (publishes included).
    pub commands_sent: u64,
    /// PUBLISH commands sent.
    pub publishes_sent: u64,
    /// Publishes that never reached Redis: refused while Down or Overloaded, or lost
    /// in flight when the connection broke.
    pub publish_drops: u64,
    /// Error replies to PUBLISH (rare: wrong type, ACL...).
    pub publish_errors: u64,
    /// Command submissions (`command`/`commands`) that failed: refused, lost in
    /// flight, or answered with a Redis error.
    pub command_failures: u64,
    /// Largest pipeline so far, in commands.
    pub max_pipeline: u64,
    /// Mean pipeline size (`commands_sent / pipelines`).
    pub avg_pipeline: f64,
    /// Pipeline sizes (commands per pipeline), log2 buckets.
    pub pipeline_hist: [u64; HIST_BUCKETS],
    /// Round trip of the last pipeline (write until its last reply), microseconds.
    pub rtt_last_us: u64,
    /// Exponentially weighted mean round trip (alpha 1/8), microseconds.
    pub rtt_avg_us: u64,
    /// Largest round trip so far, microseconds.
    pub rtt_max_us: u64,
    /// Sum of all round trips, microseconds (with `pipelines`, the exact mean).
    pub rtt_sum_us: u64,
    /// Round trips, log2 buckets of microseconds.
    pub rtt_hist_us: [u64; HIST_BUCKETS],
    /// Successful connections after a loss (command + pub/sub connections; the first
    /// connection of each is not counted).
    pub reconnects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// SUBSCRIBE/PSUBSCRIBE/UNSUBSCRIBE/PUNSUBSCRIBE commands sent (each may carry
    /// many channels).
    pub subscription_commands: u64,
    /// Pub/sub messages handed to `on_message`.
    pub messages_received: u64,
    /// Submissions currently waiting in the queue (never above `max_queued`).
    pub queued: u64,
}

#[derive(Default)]
pub(super) struct Stats {
    pub pipelines: AtomicU64,
    pub commands_sent: AtomicU64,
    pub publishes_sent: AtomicU64,
    pub publish_drops: AtomicU64,
    pub publish_errors: AtomicU64,
    pub command_failures: AtomicU64,
    pub max_pipeline: AtomicU64,
    pub pipeline_hist: [AtomicU64; HIST_BUCKETS],
    pub rtt_last_us: AtomicU64,
    pub rtt_avg_us: AtomicU64,
    pub rtt_max_us: AtomicU64,
    pub rtt_sum_us: AtomicU64,
    pub rtt_hist_us: [AtomicU64; HIST_BUCKETS],
    pub reconnects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub subscription_commands: AtomicU64,
    pub messages_received: AtomicU64,
}

fn bucket(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        (63 - v.leading_zeros() as usize).min(HIST_BUCKETS - 1)
    }
}

impl Stats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// Records one flushed pipeline of `size` commands, `publishes` of them PUBLISH.
    pub fn pipeline(&self, size: usize, publishes: usize) {
        let size = size as u64;
        self.pipelines.fetch_add(1, Relaxed);
        self.commands_sent.fetch_add(size, Relaxed);
        self.publishes_sent.fetch_add(publishes as u64, Relaxed);
        self.max_pipeline.fetch_max(size, Relaxed);
        self.pipeline_hist[bucket(size)].fetch_add(1, Relaxed);
    }

    /// Records the round trip of one pipeline. Only the I/O thread calls this, so the
    /// load/store EWMA update does not race.
    pub fn rtt(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.rtt_last_us.store(us, Relaxed);
        self.rtt_max_us.fetch_max(us, Relaxed);
        self.rtt_sum_us.fetch_add(us, Relaxed);
        self.rtt_hist_us[bucket(us)].fetch_add(1, Relaxed);
        let avg = self.rtt_avg_us.load(Relaxed);
        let next = if avg == 0 {
            us
        } else {
            // avg + (us - avg) / 8, in i128 to stay exact and overflow-free.
            (avg as i128 + (us as i128 - avg as i128) / 8).max(0) as u64
        };
        self.rtt_avg_us.store(next, Relaxed);
    }

    pub fn snapshot(&self, queued: usize) -> LinkMetrics {
        let pipelines = self.pipelines.load(Relaxed);
        let commands_sent = self.commands_sent.load(Relaxed);
        LinkMetrics {
            pipelines,
            commands_sent,
            publishes_sent: self.publishes_sent.load(Relaxed),
            publish_drops: self.publish_drops.load(Relaxed),
            publish_errors: self.publish_errors.load(Relaxed),
            command_failures: self.command_failures.load(Relaxed),
            max_pipeline: self.max_pipeline.load(Relaxed),
            avg_pipeline: if pipelines == 0 {
                0.0
            } else {
                commands_sent as f64 / pipelines as f64
            },
            pipeline_hist: std::array::from_fn(|i| self.pipeline_hist[i].load(Relaxed)),
            rtt_last_us: self.rtt_last_us.load(Relaxed),
            rtt_avg_us: self.rtt_avg_us.load(Relaxed),
            rtt_max_us: self.rtt_max_us.load(Relaxed),
            rtt_sum_us: self.rtt_sum_us.load(Relaxed),
            rtt_hist_us: std::array::from_fn(|i| self.rtt_hist_us[i].load(Relaxed)),
            reconnects: self.reconnects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            subscription_commands: self.subscription_commands.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            queued: queued as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(3), 1);
        assert_eq!(bucket(1024), 10);
        assert_eq!(bucket(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn ewma_and_sizes() {
        let s = Stats::default();
        s.rtt(Duration::from_micros(800));
        s.rtt(Duration::from_micros(0));
        assert_eq!(s.rtt_avg_us.load(Relaxed), 700);
        s.pipeline(10, 4);
        s.pipeline(30, 0);
        let m = s.snapshot(3);
        assert_eq!(m.pipelines, 2);
        assert_eq!(m.commands_sent, 40);
        assert_eq!(m.publishes_sent, 4);
        assert_eq!(m.max_pipeline, 30);
        assert!((m.avg_pipeline - 20.0).abs() < f64::EPSILON);
        assert_eq!(m.rtt_max_us, 800);
        assert_eq!(m.rtt_sum_us, 800);
        assert_eq!(m.queued, 3);
    }
}
