//! Output: human-readable tables, JSON summaries and SVG charts.

use anyhow::Result;
use serde::Serialize;

use crate::scenarios::{Outcome, Scenario};
use crate::stats::LatSummary;

/// Headline figures of one run (what `--json` and `compare` show).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub target: String,
    pub conns: usize,
    pub connected: u64,
    pub connect_errors: u64,
    pub disconnects: u64,
    pub connects_per_s: f64,
    pub connect_latency: LatSummary,
    pub published: u64,
    pub publish_errors: u64,
    pub publish_per_s: f64,
    pub received: u64,
    pub deliveries_per_s: f64,
    pub lost: u64,
    pub dups: u64,
    pub late: u64,
    pub slow_subs: u64,
    pub slow_closed_by_server: u64,
    pub latency: LatSummary,
    pub server_rss_before_kb: Option<u64>,
    pub server_rss_after_kb: Option<u64>,
    pub server_rss_per_conn_kb: Option<f64>,
    pub server_cpu_secs: Option<f64>,
    pub client_cpu_secs: f64,
    /// CPU of other processes on the machine during the measured phase
    /// (busy time minus server and client; needs the server's PID).
    pub other_cpu_secs: Option<f64>,
    pub errors: Vec<String>,
    pub deliveries_per_sec_timeline: Vec<u64>,
}

pub fn summarize(o: &Outcome) -> Summary {
    let w = &o.workers;
    let d = o.duration_secs.max(1e-9);
    let published = if o.scenario == Scenario::Chat {
        w.published
    } else {
        o.driver.acked
    };
    let connects_per_s = match o.scenario {
        Scenario::Storm => w.connected as f64 / w.setup_secs.max(1e-9),
        _ => o.connect_rate,
    };
    let mut errors = w.error_samples.clone();
    errors.extend(o.driver.error_samples.iter().cloned());
    let rss_per_conn = o.server.as_ref().and_then(|s| {
        (w.connected > 0 && o.scenario != Scenario::Storm)
            .then(|| (s.rss_ready_kb as f64 - s.rss_before_kb as f64) / w.connected as f64)
    });
    Summary {
        scenario: o.scenario.name().into(),
        target: o.target.clone(),
        conns: o.conns,
        connected: w.connected,
        connect_errors: w.connect_errors,
        disconnects: w.disconnects,
        connects_per_s,
        connect_latency: w.connect_lat.summary(),
        published,
        publish_errors: o.driver.errors + w.publish_errors,
        publish_per_s: published as f64 / d,
        received: w.received,
        // Over the time deliveries actually took when the server fell behind.
        deliveries_per_s: w.received as f64 / d.max(w.rx_span_secs),
        lost: w.lost,
        dups: w.dups,
        late: w.late,
        slow_subs: w.slow_subs,
        slow_closed_by_server: w.slow_closed,
        latency: w.lat.summary(),
        server_rss_before_kb: o.server.as_ref().map(|s| s.rss_before_kb),
        server_rss_after_kb: o.server.as_ref().map(|s| s.rss_after_kb),
        server_rss_per_conn_kb: rss_per_conn,
        server_cpu_secs: o.server.as_ref().map(|s| s.cpu_secs),
        client_cpu_secs: o.client_cpu_secs,
        other_cpu_secs: o.server.as_ref().and_then(|sv| {
            (o.machine_cpu_secs > 0.0)
                .then(|| (o.machine_cpu_secs - sv.cpu_secs - o.client_cpu_secs).max(0.0))
        }),
        errors,
        deliveries_per_sec_timeline: w.timeline.per_sec.clone(),
    }
}

pub fn fmt_us(us: u64) -> String {
    if us >= 10_000_000 {
        format!("{:.1}s", us as f64 / 1e6)
    } else if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn lat_line(name: &str, l: &LatSummary) -> String {
    if l.count == 0 {
        return format!("  {name:<22} (no samples)\n");
    }
    format!(
        "  {name:<22} p50 {:>8}  p90 {:>8}  p99 {:>8}  p99.9 {:>8}  max {:>8}  (n={})\n",
        fmt_us(l.p50_us),
        fmt_us(l.p90_us),
        fmt_us(l.p99_us),
        fmt_us(l.p999_us),
        fmt_us(l.max_us),
        l.count
    )
}

/// Human-readable report of one run.
pub fn human(o: &Outcome) -> String {
    let s = summarize(o);
    let mut t = String::new();
    t.push_str(&format!(
        "== {} against {} — {} conns, {:.0}s{}\n",
        s.scenario,
        s.target,
        s.conns,
        o.duration_secs,
        if s.slow_subs > 0 {
            format!(
                ", {} slow subscribers ({:.0}%), {} of them closed by the server",
                s.slow_subs,
                o.slow_share * 100.0,
                s.slow_closed_by_server
            )
        } else {
            String::new()
        }
    ));
    t.push_str(&format!(
        "  connections            {} ok, {} errors, {} dropped; {} conn/s\n",
        s.connected,
        s.connect_errors,
        s.disconnects,
        fmt_num(s.connects_per_s)
    ));
    t.push_str(&lat_line("connect+auth+subscribe", &s.connect_latency));
    if s.scenario != "storm" && s.scenario != "capacity" {
        t.push_str(&format!(
            "  published              {} ({} msg/s), {} errors\n",
            s.published,
            fmt_num(s.publish_per_s),
            s.publish_errors
        ));
        if !o.driver.ack_lat.is_empty() {
            t.push_str(&lat_line("publish ack", &o.driver.ack_lat.summary()));
        }
        let expected = s.received + s.lost;
        t.push_str(&format!(
            "  deliveries             {} ({} /s); lost {} ({:.4}%), dup {}, late {}\n",
            s.received,
            fmt_num(s.deliveries_per_s),
            s.lost,
            if expected > 0 {
                s.lost as f64 * 100.0 / expected as f64
            } else {
                0.0
            },
            s.dups,
            s.late
        ));
        if o.workers.rx_span_secs > o.duration_secs * 1.2 {
            t.push_str(&format!(
                "  (server fell behind: deliveries went on until {:.1}s after the start of a {:.0}s run)\n",
                o.workers.rx_span_secs, o.duration_secs
            ));
        }
        t.push_str(&lat_line("publish→receive", &s.latency));
    }
    if let Some(sv) = &o.server {
        t.push_str(&format!(
            "  server                 RSS {} → {} → {} MiB (before/ready/after), cpu {:.2}s{}\n",
            sv.rss_before_kb / 1024,
            sv.rss_ready_kb / 1024,
            sv.rss_after_kb / 1024,
            sv.cpu_secs,
            s.server_rss_per_conn_kb
                .map(|k| format!(", {k:.1} KiB/conn"))
                .unwrap_or_default()
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let wall = o.duration_secs.max(o.workers.rx_span_secs) + 1.0;
    t.push_str(&format!(
        "  load client            cpu {:.2}s ({:.0}% of {} cores){}\n",
        s.client_cpu_secs,
        s.client_cpu_secs * 100.0 / (wall * cores),
        cores,
        if s.client_cpu_secs > 0.8 * wall * cores {
            " — client-bound: latency figures include client queuing"
        } else {
            ""
        }
    ));
    if let Some(other) = s.other_cpu_secs {
        t.push_str(&format!(
            "  other processes        cpu {other:.2}s (machine busy time minus server and client: noise)\n"
        ));
    }
    for e in s.errors.iter().take(5) {
        t.push_str(&format!("  error sample: {e}\n"));
    }
    t
}

/// Problems that make a run unclean (for `--check`).
pub fn check(o: &Outcome) -> Vec<String> {
    let s = summarize(o);
    let mut p = Vec::new();
    if s.connect_errors > 0 {
        p.push(format!("{} connect errors", s.connect_errors));
    }
    if s.disconnects > 0 {
        p.push(format!("{} connections dropped", s.disconnects));
    }
    match o.scenario {
        Scenario::Storm | Scenario::Capacity => {
            if s.connected == 0 {
                p.push("no connection completed".into());
            }
        }
        _ => {
            if s.received == 0 {
                p.push("no message delivered".into());
            }
            if s.lost > 0 {
                p.push(format!("{} messages lost", s.lost));
            }
            if s.dups > 0 {
                p.push(format!("{} duplicate deliveries", s.dups));
            }
            if s.publish_errors > 0 {
                p.push(format!("{} publish errors", s.publish_errors));
            }
        }
    }
    p
}

/// A metric shown in comparison tables.
pub struct Metric {
    pub name: &'static str,
    pub higher_better: bool,
    pub get: fn(&Summary) -> Option<f64>,
    pub fmt: fn(f64) -> String,
}

fn us(v: f64) -> String {
    fmt_us(v as u64)
}

fn kib(v: f64) -> String {
    if v.abs() >= 102_400.0 {
        format!("{:.0}MiB", v / 1024.0)
    } else if v.abs() >= 1024.0 {
        format!("{:.1}MiB", v / 1024.0)
    } else {
        format!("{v:.1}KiB")
    }
}

fn secs(v: f64) -> String {
    format!("{v:.2}s")
}

pub fn metrics(scenario: Scenario) -> Vec<Metric> {
    let mut m = vec![Metric {
        name: "conn err",
        higher_better: false,
        get: |s| Some(s.connect_errors as f64),
        fmt: fmt_num,
    }];
    match scenario {
        Scenario::Storm => {
            m.push(Metric {
                name: "conn/s",
                higher_better: true,
                get: |s| Some(s.connects_per_s),
                fmt: fmt_num,
            });
            m.push(Metric {
                name: "conn p50",
                higher_better: false,
                get: |s| Some(s.connect_latency.p50_us as f64),
                fmt: us,
            });
            m.push(Metric {
                name: "conn p99",
                higher_better: false,
                get: |s| Some(s.connect_latency.p99_us as f64),
                fmt: us,
            });
        }
        Scenario::Capacity => {
            m.push(Metric {
                name: "conn/s",
                higher_better: true,
                get: |s| Some(s.connects_per_s),
                fmt: fmt_num,
            });
            m.push(Metric {
                name: "dropped",
                higher_better: false,
                get: |s| Some(s.disconnects as f64),
                fmt: fmt_num,
            });
            m.push(Metric {
                name: "KiB/conn",
                higher_better: false,
                get: |s| s.server_rss_per_conn_kb,
                fmt: kib,
            });
        }
        _ => {
            m.push(Metric {
                name: "pub/s",
                higher_better: true,
                get: |s| Some(s.publish_per_s),
                fmt: fmt_num,
            });
            m.push(Metric {
                name: "deliv/s",
                higher_better: true,
                get: |s| Some(s.deliveries_per_s),
                fmt: fmt_num,
            });
            m.push(Metric {
                name: "p50",
                higher_better: false,
                get: |s| Some(s.latency.p50_us as f64),
                fmt: us,
            });
            m.push(Metric {
                name: "p99",
                higher_better: false,
                get: |s| Some(s.latency.p99_us as f64),
                fmt: us,
            });
            m.push(Metric {
                name: "p99.9",
                higher_better: false,
                get: |s| Some(s.latency.p999_us as f64),
                fmt: us,
            });
            m.push(Metric {
                name: "max",
                higher_better: false,
                get: |s| Some(s.latency.max_us as f64),
                fmt: us,
            });
            m.push(Metric {
                name: "lost",
                higher_better: false,
                get: |s| Some(s.lost as f64),
                fmt: fmt_num,
            });
            m.push(Metric {
                name: "dup",
                higher_better: false,
                get: |s| Some(s.dups as f64),
                fmt: fmt_num,
            });
        }
    }
    if scenario == Scenario::Slow {
        m.push(Metric {
            name: "slow closed",
            higher_better: true,
            get: |s| (s.slow_subs > 0).then_some(s.slow_closed_by_server as f64),
            fmt: fmt_num,
        });
    }
    m.push(Metric {
        name: "srv cpu",
        higher_better: false,
        get: |s| s.server_cpu_secs,
        fmt: secs,
    });
    m.push(Metric {
        name: "client cpu",
        higher_better: false,
        get: |s| Some(s.client_cpu_secs),
        fmt: secs,
    });
    m.push(Metric {
        name: "srv RSS",
        higher_better: false,
        get: |s| s.server_rss_after_kb.map(|v| v as f64),
        fmt: kib,
    });
    m
}

/// Table with one row per peer; each figure also as a ratio to the best.
pub fn compare_table(
    scenario: Scenario,
    rows: &[(String, Option<Summary>, Option<String>)],
) -> String {
    let ms = metrics(scenario);
    let mut cells: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["peer".to_string()];
    header.extend(ms.iter().map(|m| m.name.to_string()));
    cells.push(header);
    for (name, s, err) in rows {
        let mut row = vec![name.clone()];
        match s {
            None => {
                row.push(format!("FAILED: {}", err.clone().unwrap_or_default()));
            }
            Some(s) => {
                for m in &ms {
                    let Some(v) = (m.get)(s) else {
                        row.push("-".into());
                        continue;
                    };
                    let vals: Vec<f64> = rows
                        .iter()
                        .filter_map(|(_, s, _)| s.as_ref().and_then(|s| (m.get)(s)))
                        .collect();
                    let best = if m.higher_better {
                        vals.iter().cloned().fold(f64::MIN, f64::max)
                    } else {
                        vals.iter().cloned().fold(f64::MAX, f64::min)
                    };
                    let ratio = if m.name == "slow closed" {
                        // A policy, not a score: no ratio.
                        "-".to_string()
                    } else if m.higher_better {
                        if best > 0.0 {
                            format!("{:.2}x", v / best)
                        } else {
                            "-".into()
                        }
                    } else if best > 0.0 {
                        format!("{:.2}x", v / best)
                    } else if v == 0.0 {
                        "1.00x".into()
                    } else {
                        "inf".into()
                    };
                    row.push(format!("{} ({})", (m.fmt)(v), ratio));
                }
            }
        }
        cells.push(row);
    }
    let mut out = String::new();
    render_rows(&mut out, &cells, |_| true);
    out.push_str("(ratio: to the best peer for that column; 1.00x = best)\n");
    out
}

/// Append `cells` as aligned columns, the first row a header underlined with dashes.
/// Column widths come from the rows `sizes` accepts (others may overflow them).
pub fn render_rows(out: &mut String, cells: &[Vec<String>], sizes: impl Fn(&[String]) -> bool) {
    let ncol = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncol)
        .map(|c| {
            cells
                .iter()
                .filter(|r| sizes(r))
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, r) in cells.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * ncol.saturating_sub(1)));
            out.push('\n');
        }
    }
}

/// Print `--check` problems; the process exit code (2 when any, else 0).
pub fn report_check(problems: &[String]) -> i32 {
    if problems.is_empty() {
        eprintln!("check passed");
        return 0;
    }
    for p in problems {
        eprintln!("CHECK FAILED: {p}");
    }
    2
}

/// SVG chart: latency percentile curve (left) and deliveries/s over time
/// (right), one series per run.
pub fn chart(path: &str, runs: &[(String, &Outcome)]) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];

    // Latency: x = "nines" (-log10(1-q)), y = ms.
    let curves: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(n, o)| {
            let h = if o.workers.lat.is_empty() {
                &o.workers.connect_lat
            } else {
                &o.workers.lat
            };
            let pts = h
                .curve()
                .into_iter()
                .filter(|(p, _)| *p < 100.0)
                .map(|(p, v)| (-(1.0 - p / 100.0).max(1e-6).log10(), v as f64 / 1000.0))
                .collect();
            (n.clone(), pts)
        })
        .collect();
    let ymax = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.001f64, f64::max)
        * 1.1;
    let xmax = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(1.0f64, f64::max);
    let mut c = ChartBuilder::on(&left)
        .caption("latency by percentile (ms)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    c.configure_mesh()
        .x_desc("percentile")
        .x_label_formatter(&|x| format!("{:.3}", 100.0 - 100.0 * 10f64.powf(-*x)))
        .draw()?;
    for (i, (n, pts)) in curves.iter().enumerate() {
        let col = colors[i % colors.len()];
        c.draw_series(LineSeries::new(pts.clone(), col))?
            .label(n.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;

    // Throughput per second.
    let tls: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(n, o)| {
            (
                n.clone(),
                o.workers
                    .timeline
                    .per_sec
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, *v as f64))
                    .collect(),
            )
        })
        .collect();
    let tmax = tls.iter().map(|(_, p)| p.len()).max().unwrap_or(1).max(2) as f64;
    let vmax = tls
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&right)
        .caption(
            "events per second (deliveries / connects)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..tmax, 0f64..vmax)?;
    c.configure_mesh().x_desc("second").draw()?;
    for (i, (n, pts)) in tls.iter().enumerate() {
        let col = colors[i % colors.len()];
        c.draw_series(LineSeries::new(pts.clone(), col))?
            .label(n.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
