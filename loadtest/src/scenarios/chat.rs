//! `chat`: rooms of `--room-size` members; every member subscribes to its
//! room and publishes over its WebSocket; latency of deliveries from others.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{mpsc, watch, Semaphore};

use super::{wait_go, Ctl, LatBatch, Pacer, ReadyInfo, RunCfg, RxStamp, Shared, WorkerResult};
use crate::adapter::{payload, Client, Event};
use crate::stats::now_micros;

struct MemberEnd {
    room: usize,
    published: u64,
    received: u64,
}

/// Per-member publish interval: `--rate` is the total msg/s over all
/// members (0 = one message per member per second).
fn member_interval(cfg: &RunCfg) -> Duration {
    if cfg.rate > 0.0 {
        Duration::from_secs_f64(cfg.conns.max(1) as f64 / cfg.rate)
    } else {
        Duration::from_secs(1)
    }
}

pub async fn worker(cfg: RunCfg, idx: usize, n: usize, ctl: Ctl) -> Result<WorkerResult> {
    let sh = Arc::new(Shared::new(cfg.duration.as_secs() as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(0u64);
    let k = cfg.room_size.max(2);
    let rooms = (cfg.conns / k).max(1);
    let sem = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let mut pacer = Pacer::new(cfg.connect_rate / n as f64);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let t0 = Instant::now();
    let iv = member_interval(&cfg);
    let mut tasks = Vec::new();
    for room in (idx..rooms).step_by(n) {
        for j in 0..k {
            let m = room * k + j;
            pacer.wait().await;
            let permit = sem.clone().acquire_owned().await.expect("semaphore");
            let (sh, done, stop, mut go) =
                (sh.clone(), done_tx.clone(), stop_rx.clone(), go_rx.clone());
            let (ep, src, dur, pad) = (cfg.ep.clone(), cfg.src_for(m), cfg.duration, cfg.pad());
            tasks.push(tokio::spawn(async move {
                let mut end = MemberEnd { room, published: 0, received: 0 };
                let topic = format!("room-{room}");
                let t = Instant::now();
                let r = async {
                    let mut c = Client::connect(&ep, src, Some(&format!("m{m}"))).await?;
                    c.subscribe(&topic).await?;
                    anyhow::Ok(c)
                }
                .await;
                drop(permit);
                let mut c = match r {
                    Ok(c) => {
                        sh.connected.fetch_add(1, Relaxed);
                        sh.connect_lat.lock().unwrap().record(t.elapsed().as_micros() as u64);
                        let _ = done.send(());
                        c
                    }
                    Err(e) => {
                        sh.connect_error(e);
                        let _ = done.send(());
                        return None;
                    }
                };
                drop(done);
                let _ = go.wait_for(|v| *v != 0).await;
                // Spread members' first publish over one interval.
                let offset = iv.mul_f64(((m * 7919) % 1000) as f64 / 1000.0);
                let start = Instant::now();
                let pub_end = start + dur;
                let mut next = start + offset;
                let mut seq = 0u64;
                let mut batch = LatBatch::default();
                let mut stamp = RxStamp::default();
                let mut stop_rx = stop.clone();
                let stopped = stop_rx.changed();
                tokio::pin!(stopped);
                loop {
                    let publishing = next < pub_end;
                    tokio::select! {
                        biased;
                        _ = &mut stopped => break,
                        _ = tokio::time::sleep_until(next.into()), if publishing => {
                            let data = payload(now_micros(), seq, Some(m as u64), &pad);
                            match c.publish(&topic, &data).await {
                                Ok(_) => { end.published += 1; seq += 1; }
                                Err(e) => { sh.publish_errors.fetch_add(1, Relaxed); sh.error(format!("publish: {e:#}")); break; }
                            }
                            next += iv;
                        }
                        ev = c.next_event() => match ev {
                            Ok(Event::Delivery { ts, from, .. }) => {
                                if from == Some(m as u64) {
                                    continue;
                                }
                                let now = now_micros();
                                if let Some(ts) = ts {
                                    batch.push(&sh, now.saturating_sub(ts));
                                }
                                end.received += 1;
                                sh.tick(now, 1);
                                stamp.note(&sh, now);
                            }
                            Ok(Event::Error(e)) => {
                                sh.publish_errors.fetch_add(1, Relaxed);
                                sh.error(e);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                if !*stop.borrow() {
                                    sh.disconnects.fetch_add(1, Relaxed);
                                    sh.error(format!("read: {e:#}"));
                                }
                                break;
                            }
                        }
                    }
                }
                batch.flush(&sh);
                stamp.flush(&sh);
                Some(end)
            }));
        }
    }
    drop(done_tx);
    for _ in 0..tasks.len() {
        if done_rx.recv().await.is_none() {
            break;
        }
    }
    let _ = ctl.ready.send(ReadyInfo {
        connected: sh.connected.load(Relaxed),
        connect_errors: sh.connect_errors.load(Relaxed),
        setup_secs: t0.elapsed().as_secs_f64(),
    });
    let start = wait_go(ctl.go).await;
    sh.start_us.store(start, Relaxed);
    let _ = go_tx.send(start);
    let _ = ctl.stop.await;
    sh.quiesce().await;
    let _ = stop_tx.send(true);
    // Expected deliveries per room: each message reaches the other
    // connected members.
    let mut per_room: std::collections::HashMap<usize, (u64, u64, u64)> = Default::default();
    for t in tasks {
        if let Ok(Some(e)) = t.await {
            let r = per_room.entry(e.room).or_default();
            r.0 += 1;
            r.1 += e.published;
            r.2 += e.received;
        }
    }
    let mut res = sh.snapshot();
    let (mut lost, mut published, mut received) = (0u64, 0u64, 0u64);
    for (members, publ, recv) in per_room.values() {
        let expected = publ * members.saturating_sub(1);
        lost += expected.saturating_sub(*recv);
        res.dups += recv.saturating_sub(expected);
        published += publ;
        received += recv;
    }
    res.lost = lost;
    res.published = published;
    res.received = received;
    res.measured_subs = res.connected;
    Ok(res)
}
