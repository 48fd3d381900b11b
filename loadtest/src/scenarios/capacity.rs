//! `capacity`: open N connections, each subscribed to a topic, hold them for
//! `--hold` seconds; connect rate, errors, drops and server memory.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tokio::sync::watch;

use super::fanout::{connect_all, finish};
use super::{wait_go, Ctl, ReadyInfo, RunCfg, WorkerResult};

pub async fn worker(cfg: RunCfg, idx: usize, n: usize, ctl: Ctl) -> Result<WorkerResult> {
    let sh = Arc::new(super::Shared::new(cfg.hold.as_secs() as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let topics = cfg.topics.max(1);
    let tasks = connect_all(
        &cfg,
        idx,
        n,
        &sh,
        &stop_rx,
        |i| Some(format!("cap-{}", i % topics)),
        |i| Some(format!("c{i}")),
        0.0,
    )
    .await;
    let _ = ctl.ready.send(ReadyInfo {
        connected: sh.connected.load(Relaxed),
        connect_errors: sh.connect_errors.load(Relaxed),
        setup_secs: t0.elapsed().as_secs_f64(),
    });
    let start = wait_go(ctl.go).await;
    sh.start_us.store(start, Relaxed);
    let _ = ctl.stop.await;
    let _ = stop_tx.send(true);
    let mut r = finish(&sh, tasks, 0, 0.0, false).await;
    r.setup_secs = t0.elapsed().as_secs_f64();
    Ok(r)
}
