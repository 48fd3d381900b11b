//! `storm`: new connections per second, each counted once it completed TCP
//! connect, WebSocket handshake, auth and its first subscribe; then closed.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tokio::sync::Semaphore;

use super::{wait_go, Ctl, Pacer, ReadyInfo, RunCfg, Shared, WorkerResult};
use crate::adapter::Client;
use crate::stats::now_micros;

pub async fn worker(cfg: RunCfg, idx: usize, n: usize, ctl: Ctl) -> Result<WorkerResult> {
    let sh = Arc::new(Shared::new(cfg.duration.as_secs() as usize));
    let _ = ctl.ready.send(ReadyInfo::default());
    let start = wait_go(ctl.go).await;
    sh.start_us.store(start, Relaxed);
    let t0 = Instant::now();
    let end = t0 + cfg.duration;
    // --conns bounds the attempts in flight (concurrency) for this scenario.
    let sem = Arc::new(Semaphore::new((cfg.conns / n).max(1)));
    let mut pacer = Pacer::new(cfg.rate / n as f64);
    let mut tasks = Vec::new();
    let mut i = idx;
    loop {
        pacer.wait().await;
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p.expect("semaphore"),
            _ = tokio::time::sleep_until(end.into()) => break,
        };
        if Instant::now() >= end {
            break;
        }
        let (sh, ep, src) = (sh.clone(), cfg.ep.clone(), cfg.src_for(i));
        i += n;
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = async {
                let mut c = Client::connect(&ep, src, None).await?;
                c.subscribe("storm").await?;
                anyhow::Ok(c)
            }
            .await;
            match r {
                Ok(c) => {
                    sh.connect_lat
                        .lock()
                        .unwrap()
                        .record(t.elapsed().as_micros() as u64);
                    sh.connected.fetch_add(1, Relaxed);
                    sh.tick(now_micros(), 1);
                    drop(permit);
                    c.close().await;
                }
                Err(e) => {
                    drop(permit);
                    sh.connect_error(e);
                }
            }
        }));
        if tasks.len() >= 4096 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    // Attempts started within the duration; those in flight at its end
    // finish after it, so the rate is over the time until the last one.
    let elapsed = t0.elapsed().as_secs_f64();
    let _ = ctl.stop.await;
    let mut r = sh.snapshot();
    r.setup_secs = elapsed;
    Ok(r)
}
