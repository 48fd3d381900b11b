//! Per-shard counters. Each shard writes only its own [`ShardCounters`] (relaxed atomics,
//! one cache line apart so shards never share a line); readers (stats API, `/metrics`)
//! sum them. Nothing on the message path takes a lock or contends.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters owned by one shard.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct ShardCounters {
    /// WebSocket connections currently open (protocol and echo endpoints).
    pub connections: AtomicU64,
    /// Topic memberships currently held by this shard's connections.
    pub subscriptions: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Client messages received (data frames after reassembly).
    pub messages_in: AtomicU64,
    /// Frames queued to clients.
    pub messages_out: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_out: AtomicU64,
    /// Connections closed because their outbound queue exceeded its bound.
    pub slow_consumer_disconnects: AtomicU64,
    /// Frames dropped because their connection was closing.
    pub queue_drops: AtomicU64,
    /// Accept errors (EMFILE and others) that were backed off.
    pub accept_errors: AtomicU64,
    /// Batches received from other shards.
    pub mesh_batches_in: AtomicU64,
    /// Messages inside those batches.
    pub mesh_messages_in: AtomicU64,
    /// Commands from the Redis command channel that failed (bad JSON, invalid command).
    pub api_channel_errors: AtomicU64,
}

impl ShardCounters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    #[inline]
    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Relaxed);
    }
    #[inline]
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// `GET /metrics`: Prometheus text exposition of every shard's counters, the presence
/// counts and, in a fleet, the Redis link (pipeline sizes and round trips as
/// histograms). Built per scrape by a `prometheus-client` collector that reads the
/// atomics; nothing is registered or updated on the message path.
pub fn prometheus(global: &std::sync::Arc<crate::runtime::Global>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Scrape(global.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

struct Scrape(std::sync::Arc<crate::runtime::Global>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

/// What a per-shard family reads from a shard's counters.
type Field = fn(&ShardCounters) -> &AtomicU64;

impl prometheus_client::collector::Collector for Scrape {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::{EncodeMetric, NoLabelSet};
        use prometheus_client::metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType};
        let g = &self.0;
        let per_shard: [(&str, &str, bool, Field); 12] = [
            ("connections", "Open WebSocket connections", false, |c| {
                &c.connections
            }),
            ("subscriptions", "Topic memberships held", false, |c| {
                &c.subscriptions
            }),
            ("accepted", "Connections accepted", true, |c| &c.accepted),
            ("messages_in", "Client messages received", true, |c| {
                &c.messages_in
            }),
            ("messages_out", "Frames queued to clients", true, |c| {
                &c.messages_out
            }),
            ("bytes_out", "Bytes written to client sockets", true, |c| {
                &c.bytes_out
            }),
            (
                "slow_consumer_disconnects",
                "Connections closed as slow consumers (4009)",
                true,
                |c| &c.slow_consumer_disconnects,
            ),
            (
                "queue_drops",
                "Frames dropped for closing connections",
                true,
                |c| &c.queue_drops,
            ),
            (
                "accept_errors",
                "Accept errors backed off (EMFILE...)",
                true,
                |c| &c.accept_errors,
            ),
            (
                "mesh_batches_in",
                "Batches received from other shards",
                true,
                |c| &c.mesh_batches_in,
            ),
            ("mesh_messages_in", "Messages in those batches", true, |c| {
                &c.mesh_messages_in
            }),
            (
                "api_channel_errors",
                "Failed commands from ringcast:api:{app}",
                true,
                |c| &c.api_channel_errors,
            ),
        ];
        for (name, help, counter, field) in per_shard.iter() {
            let name = format!("ringcast_{name}");
            let ty = if *counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut m = enc.encode_descriptor(&name, help, None, ty)?;
            for (i, c) in g.counters.iter().enumerate() {
                let shard = i.to_string();
                let labels = [("shard", shard.as_str())];
                let fm = m.encode_family(&labels)?;
                let v = field(c).load(Relaxed);
                if *counter {
                    ConstCounter::new(v).encode(fm)?;
                } else {
                    ConstGauge::new(v as i64).encode(fm)?;
                }
            }
        }
        let (_, authed) = g.presence.counts(None);
        ConstGauge::new(authed as i64).encode(enc.encode_descriptor(
            "ringcast_authenticated_connections",
            "Connections that are a user, on this node",
            None,
            MetricType::Gauge,
        )?)?;
        let Some(f) = g.broker.fleet() else {
            return Ok(());
        };
        let m = f.link_metrics();
        let up = g.broker.health() == crate::broker::Health::Ok;
        ConstGauge::new(up as i64).encode(enc.encode_descriptor(
            "ringcast_redis_up",
            "1 when both Redis connections are up",
            None,
            MetricType::Gauge,
        )?)?;
        let counters: [(&str, &str, u64); 9] = [
            ("pipelines", "Pipelines written to Redis", m.pipelines),
            (
                "commands_sent",
                "Commands sent to Redis (publishes included)",
                m.commands_sent,
            ),
            ("publishes_sent", "PUBLISH commands sent", m.publishes_sent),
            (
                "publish_drops",
                "Publishes that never reached Redis",
                m.publish_drops,
            ),
            (
                "command_failures",
                "Redis commands that failed",
                m.command_failures,
            ),
            ("reconnects", "Redis reconnections", m.reconnects),
            (
                "connect_failures",
                "Failed Redis connection attempts",
                m.connect_failures,
            ),
            (
                "messages_received",
                "Pub/sub messages received from Redis",
                m.messages_received,
            ),
            (
                "subscription_commands",
                "SUBSCRIBE-family commands sent",
                m.subscription_commands,
            ),
        ];
        for (name, help, v) in counters {
            let name = format!("ringcast_redis_{name}");
            ConstCounter::new(v).encode(enc.encode_descriptor(
                &name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        ConstGauge::new(m.queued as i64).encode(enc.encode_descriptor(
            "ringcast_redis_queued",
            "Submissions waiting for the next pipeline",
            None,
            MetricType::Gauge,
        )?)?;
        // Log2 buckets: bucket i holds [2^i, 2^(i+1)); the last holds everything above.
        let buckets = |hist: &[u64], scale: f64| -> Vec<(f64, u64)> {
            let n = hist.len();
            hist.iter()
                .enumerate()
                .map(|(i, &c)| {
                    let le = if i + 1 == n {
                        f64::INFINITY
                    } else {
                        ((1u64 << (i + 1)) - 1) as f64 * scale
                    };
                    (le, c)
                })
                .collect()
        };
        let sizes = buckets(&m.pipeline_hist, 1.0);
        enc.encode_descriptor(
            "ringcast_redis_pipeline_size",
            "Commands per pipeline",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            m.commands_sent as f64,
            m.pipelines,
            &sizes,
            None,
        )?;
        let rtts = buckets(&m.rtt_hist_us, 1e-6);
        let count: u64 = m.rtt_hist_us.iter().sum();
        enc.encode_descriptor(
            "ringcast_redis_round_trip_seconds",
            "Round trip of a pipeline: write until its last reply",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(m.rtt_sum_us as f64 * 1e-6, count, &rtts, None)?;
        Ok(())
    }
}
