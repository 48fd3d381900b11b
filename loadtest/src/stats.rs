//! Measurement primitives: latency histograms (serializable across worker
//! processes), per-subscriber sequence tracking and time lines.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Current unix time in microseconds.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Latency histogram in microseconds (1 µs .. 1 h, 3 significant digits).
#[derive(Clone)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"))
    }
}

impl Hist {
    pub fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros.max(1));
    }
    pub fn add(&mut self, other: &Hist) {
        let _ = self.0.add(&other.0);
    }
    pub fn len(&self) -> u64 {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn summary(&self) -> LatSummary {
        let h = &self.0;
        if h.is_empty() {
            return LatSummary::default();
        }
        LatSummary {
            count: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
    /// (percentile, latency µs) points for a percentile-distribution curve.
    pub fn curve(&self) -> Vec<(f64, u64)> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut pts = Vec::new();
        // 0, 50, 75, 87.5, ... up to 99.999 (log-spaced "nines").
        let mut q = 0.0f64;
        for _ in 0..60 {
            pts.push((q * 100.0, self.0.value_at_quantile(q)));
            if q >= 0.99999 {
                break;
            }
            q += (1.0 - q) * 0.25;
        }
        pts.push((100.0, self.0.max()));
        pts
    }
    pub fn to_b64(&self) -> String {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut buf)
            .expect("serialize histogram");
        base64::engine::general_purpose::STANDARD.encode(buf)
    }
    pub fn from_b64(s: &str) -> Result<Hist> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .context("histogram base64")?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| anyhow::anyhow!("histogram decode: {e:?}"))?;
        let mut out = Hist::default();
        let _ = out.0.add(&h);
        Ok(out)
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_b64())
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hist::from_b64(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatSummary {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// Tracks which sequence numbers one subscriber has seen, in a sliding
/// window (so memory stays bounded with many subscribers and long runs).
/// Reordering deeper than the window counts as `late` (not lost, not dup).
pub struct SeqTracker {
    base: u64,
    bits: Box<[u64]>,
    pub distinct: u64,
    pub dups: u64,
    pub late: u64,
}

const WINDOW_WORDS: usize = 256; // 16384 seqs

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            base: 0,
            bits: vec![0u64; WINDOW_WORDS].into_boxed_slice(),
            distinct: 0,
            dups: 0,
            late: 0,
        }
    }
}

impl SeqTracker {
    const W: u64 = (WINDOW_WORDS * 64) as u64;

    pub fn see(&mut self, seq: u64) {
        if seq < self.base {
            self.late += 1;
            self.distinct += 1;
            return;
        }
        if seq >= self.base + Self::W {
            // Slide so that seq is the last slot of the window.
            let new_base = seq + 1 - Self::W;
            let shift = new_base - self.base;
            if shift >= Self::W {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in self.base..new_base {
                    let i = (s % Self::W) as usize;
                    self.bits[i / 64] &= !(1u64 << (i % 64));
                }
            }
            self.base = new_base;
        }
        let i = (seq % Self::W) as usize;
        let m = 1u64 << (i % 64);
        if self.bits[i / 64] & m != 0 {
            self.dups += 1;
        } else {
            self.bits[i / 64] |= m;
            self.distinct += 1;
        }
    }
}

/// Per-second counters relative to the run's start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timeline {
    pub per_sec: Vec<u64>,
}

impl Timeline {
    pub fn bump(&mut self, start_us: u64, now_us: u64) {
        let sec = (now_us.saturating_sub(start_us) / 1_000_000) as usize;
        if sec > 3600 {
            return;
        }
        if self.per_sec.len() <= sec {
            self.per_sec.resize(sec + 1, 0);
        }
        self.per_sec[sec] += 1;
    }
    pub fn add(&mut self, o: &Timeline) {
        if self.per_sec.len() < o.per_sec.len() {
            self.per_sec.resize(o.per_sec.len(), 0);
        }
        for (a, b) in self.per_sec.iter_mut().zip(&o.per_sec) {
            *a += b;
        }
    }
}

/// Reads VmRSS (kB) of a process.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Children of a process (from /proc/PID/task/*/children).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// A process and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let c = children(all[i]);
        all.extend(c);
        i += 1;
    }
    all
}

/// utime+stime of one process in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields after ')' start at index 3 (state); utime=14, stime=15 (1-based).
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf is always safe to call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((ut + st) / hz.max(1.0))
}

/// CPU seconds of a process tree, leaving out the subtrees of `exclude`
/// (the load client's own usage when it started the servers itself).
pub fn tree_cpu_excluding(pid: u32, exclude: &[u32]) -> f64 {
    let skip: Vec<u32> = exclude.iter().flat_map(|&p| tree(p)).collect();
    tree(pid)
        .into_iter()
        .filter(|p| !skip.contains(p))
        .map(|p| cpu_secs(p).unwrap_or(0.0))
        .sum()
}

/// CPU seconds the whole machine spent busy (all cores: /proc/stat `cpu`
/// line, everything but idle and iowait) since boot.
pub fn machine_busy_secs() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user)
    let busy: f64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf is always safe to call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    busy / hz.max(1.0)
}

/// Sum of RSS (kB) and CPU seconds over a process tree.
pub fn tree_usage(pid: u32) -> (u64, f64) {
    let mut rss = 0;
    let mut cpu = 0.0;
    for p in tree(pid) {
        rss += rss_kb(p).unwrap_or(0);
        cpu += cpu_secs(p).unwrap_or(0.0);
    }
    (rss, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_roundtrip() {
        let mut h = Hist::default();
        for i in 1..1000 {
            h.record(i);
        }
        let s = h.to_b64();
        let g = Hist::from_b64(&s).unwrap();
        assert_eq!(g.summary(), h.summary());
    }

    #[test]
    fn seq_tracker() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 2, 5, 4] {
            t.see(s);
        }
        assert_eq!((t.distinct, t.dups), (5, 1));
        t.see(100_000);
        t.see(3);
        assert_eq!((t.distinct, t.late), (7, 1));
    }

    #[test]
    fn own_cpu() {
        assert!(cpu_secs(std::process::id()).is_some());
        assert!(rss_kb(std::process::id()).unwrap() > 0);
    }
}
