//! Markdown tables of a suite run (the format of `docs/benchmarks.md`, "Signaling").

use crate::fanout::{SeriesResult, StepResult};
use crate::servers::Target;
use crate::suite::{Entry, SuiteResult};
use std::fmt::Write;

fn f0(x: f64) -> String {
    format!("{x:.0}")
}

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// "inner 95 + proxy 3" for Homeroom (data-path processes only), "98" for Node.
fn cpu_cell(step: &StepResult) -> String {
    step.server
        .iter()
        .filter(|s| !s.usage.label.starts_with("wrangler"))
        .map(|s| {
            let short = s.usage.label.split_whitespace().next().unwrap_or_default();
            if step.server.len() > 1 {
                format!("{short} {}", f0(s.usage.cpu_pct))
            } else {
                f0(s.usage.cpu_pct)
            }
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn us_cell(step: &StepResult) -> String {
    let parts: Vec<&crate::fanout::ServerUsage> =
        step.server.iter().filter(|s| !s.usage.label.starts_with("wrangler")).collect();
    let total: f64 = parts.iter().map(|s| s.cpu_us_per_delivery).sum();
    if parts.len() > 1 {
        format!(
            "{:.1} ({})",
            total,
            parts.iter().map(|s| format!("{:.1}", s.cpu_us_per_delivery)).collect::<Vec<_>>().join(" + ")
        )
    } else {
        format!("{total:.1}")
    }
}

fn rss_cell(step: &StepResult) -> String {
    step.server
        .iter()
        .filter(|s| !s.usage.label.starts_with("wrangler"))
        .map(|s| f0(s.peak_rss_mib))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The busiest server thread: its CPU share and how long it waited for a CPU while runnable, % of the step.
fn thread_cell(step: &StepResult) -> String {
    step.server
        .iter()
        .filter(|s| !s.usage.label.starts_with("wrangler"))
        .max_by(|a, b| a.usage.top_thread_pct.total_cmp(&b.usage.top_thread_pct))
        .map(|s| format!("{} / {}", f0(s.usage.top_thread_pct), f0(s.usage.top_thread_wait_pct)))
        .unwrap_or_default()
}

fn cores_cell(step: &StepResult) -> String {
    step.core_busy_pct.iter().map(|c| f0(*c)).collect::<Vec<_>>().join(" / ")
}

/// The best passing step of a series.
fn best(series: &SeriesResult) -> Option<&StepResult> {
    series.steps.iter().filter(|s| s.ok).max_by(|a, b| a.rate.cmp(&b.rate))
}

fn series_for(result: &SuiteResult, target: Target, members: usize) -> Option<&Entry<SeriesResult>> {
    result.series.iter().find(|e| e.target == target && e.size == members)
}

/// Renders every table.
pub fn markdown(r: &SuiteResult) -> String {
    let mut out = String::new();
    let e = &r.env;
    let _ = writeln!(
        out,
        "Run: {} mode, {:.0} s, git {} ({} changed files under edge/ and shared/).",
        if r.config.smoke { "smoke" } else { "full" },
        r.secs,
        e.git_head,
        e.edge_changes.len()
    );
    let _ = writeln!(
        out,
        "Machine: {} × {}, {:.1} GiB, {}, Linux {}. Node {}, wrangler {}, workerd {}, socket.io {}, ws {}.",
        e.cores, e.cpu_model, e.mem_gib, e.os, e.kernel, e.node, e.wrangler, e.workerd, e.socketio, e.ws
    );
    let _ = writeln!(
        out,
        "Servers on CPU {}, load tool on CPU {} (fd limit {}). Load average at start: {}; at end: {}.\n",
        r.config.server_cpus, e.load_tool_cpus, e.fd_limit, e.loadavg_start, e.loadavg_end
    );

    // Summary.
    let _ = writeln!(
        out,
        "#### Highest rate that passed (p99 ≤ {} ms, loss ≤ {} %)\n",
        r.config.stop_p99_ms, r.config.stop_loss_pct
    );
    let members = &r.config.members;
    let _ = write!(out, "| server |");
    for m in members {
        let _ = write!(out, " {m} members |");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---|".repeat(members.len()));
    for t in &r.config.targets {
        let _ = write!(out, "| {} |", t.name());
        for m in members {
            let cell = match series_for(r, *t, *m) {
                None => "—".to_owned(),
                Some(Entry { result: None, note, .. }) => note.clone().unwrap_or_default().chars().take(60).collect(),
                Some(Entry { result: Some(s), .. }) => match best(s) {
                    Some(b) => format!(
                        "{} msg/s → {} deliveries/s, p99 {} ms{}",
                        b.rate,
                        thousands(b.delivered_per_sec),
                        ms(b.p99_ms),
                        if s.stopped.is_none() { " (top of the range)" } else { "" }
                    ),
                    None => format!("none ({})", s.stopped.clone().unwrap_or_default()),
                },
            };
            let _ = write!(out, " {cell} |");
        }
        let _ = writeln!(out);
    }

    // Fan-out details.
    for m in members {
        let _ = writeln!(out, "\n#### Fan-out, {m} members in one room, one sender\n");
        let _ = writeln!(
            out,
            "| server | msg/s | offered/s | delivered/s | p50 ms | p99 ms | max ms | loss % | server CPU % | server CPU µs/delivery | busiest server thread: run / wait for CPU % | server RSS MiB | client CPU % | core 0 / 1 busy % |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for t in &r.config.targets {
            let Some(entry) = series_for(r, *t, *m) else { continue };
            match &entry.result {
                None => {
                    let _ = writeln!(out, "| {} | {} ||||||||||||| ", t.name(), entry.note.clone().unwrap_or_default());
                }
                Some(s) => {
                    if s.steps.is_empty() {
                        let _ =
                            writeln!(out, "| {} | {} ||||||||||||| ", t.name(), s.stopped.clone().unwrap_or_default());
                    }
                    for step in &s.steps {
                        let _ = writeln!(
                            out,
                            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
                            t.name(),
                            step.rate,
                            thousands(step.offered_per_sec),
                            thousands(step.delivered_per_sec),
                            ms(step.p50_ms),
                            ms(step.p99_ms),
                            ms(step.max_ms),
                            step.loss_pct,
                            cpu_cell(step),
                            us_cell(step),
                            thread_cell(step),
                            rss_cell(step),
                            f0(step.client_cpu_pct),
                            cores_cell(step),
                        );
                    }
                }
            }
        }
        let _ = writeln!(out, "\nJoin phase (connect all members, then a barrier message reaches everyone):\n");
        let _ = writeln!(out, "| server | joined | join time s | non-benchmark frames received | stopped because |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for t in &r.config.targets {
            let Some(Entry { result: Some(s), .. }) = series_for(r, *t, *m) else { continue };
            let _ = writeln!(
                out,
                "| {} | {} / {}{} | {:.1} | {} | {} |",
                t.name(),
                s.joined,
                s.members * s.rooms,
                if s.join_failed > 0 {
                    format!(" ({} failed: {})", s.join_failed, s.join_error.clone().unwrap_or_default())
                } else {
                    String::new()
                },
                s.join_secs,
                thousands(s.join_frames as f64),
                s.stopped.clone().unwrap_or_else(|| "— (every rate passed)".into())
            );
        }
    }

    // Homeroom CPU split.
    let _ = writeln!(out, "\n#### Homeroom: where the CPU goes (µs of CPU per delivered message, per process; with batches a frame carries several)\n");
    let _ = writeln!(out, "| path | members | msg/s | delivered/s | inner workerd µs | proxy workerd µs | wrangler node µs | inner workerd CPU % | proxy workerd CPU % | inner busiest thread: run / wait % | proxy busiest thread: run / wait % |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for e in r.series.iter().filter(|e| e.target.is_homeroom()) {
        let Some(s) = &e.result else { continue };
        for step in &s.steps {
            let get = |label: &str| step.server.iter().find(|u| u.usage.label.starts_with(label));
            let us = |label: &str| get(label).map(|u| format!("{:.1}", u.cpu_us_per_delivery)).unwrap_or_default();
            let top = |label: &str| {
                get(label)
                    .map(|u| {
                        format!(
                            "{:.0} / {:.0} ({})",
                            u.usage.top_thread_pct, u.usage.top_thread_wait_pct, u.usage.top_thread
                        )
                    })
                    .unwrap_or_default()
            };
            let cpu = |label: &str| get(label).map(|u| f0(u.usage.cpu_pct)).unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if e.target == Target::HomeroomProxy { "proxy" } else { "direct" },
                e.size,
                step.rate,
                thousands(step.delivered_per_sec),
                us("inner"),
                us("proxy"),
                us("wrangler"),
                cpu("inner"),
                cpu("proxy"),
                top("inner"),
                top("proxy"),
            );
        }
    }

    // Join storm.
    let _ = writeln!(
        out,
        "\n#### Join storm ({} joins in {:.0} s into one fresh room; connect → welcome/ack)\n",
        r.config.storm_joins,
        r.config.storm_over.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| server | joined | failed | p50 ms | p99 ms | max ms | load tool's worst start lag ms | last join done after s | server CPU % |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for e in &r.storms {
        match &e.result {
            Some(s) => {
                let cpu = s
                    .server
                    .iter()
                    .filter(|u| !u.label.starts_with("wrangler"))
                    .map(|u| format!("{} {}", u.label.split_whitespace().next().unwrap_or_default(), f0(u.cpu_pct)))
                    .collect::<Vec<_>>()
                    .join(" + ");
                let _ = writeln!(
                    out,
                    "| {} | {} | {}{} | {} | {} | {} | {} | {:.1} | {} |",
                    e.target.name(),
                    s.ok,
                    s.failed,
                    s.first_error.as_ref().map(|x| format!(" ({x})")).unwrap_or_default(),
                    ms(s.p50_ms),
                    ms(s.p99_ms),
                    ms(s.max_ms),
                    ms(s.max_start_lag_ms),
                    s.total_secs,
                    cpu
                );
            }
            None => {
                let _ = writeln!(out, "| {} | {} ||||||||", e.target.name(), e.note.clone().unwrap_or_default());
            }
        }
    }

    // Idle memory.
    let _ = writeln!(out, "\n#### Idle memory ({} idle members in one room, fresh server)\n", r.config.idle_conns);
    let _ = writeln!(
        out,
        "| server | process | RSS before MiB | RSS after MiB | KiB per connection | 20 s later: RSS MiB / KiB per connection | fds per connection | fd limit |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for e in &r.idle {
        match &e.result {
            Some(s) => {
                for p in &s.procs {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {:.0} | {:.0} | {:.1} | {:.0} / {:.1} | {:.2} | {} |",
                        e.target.name(),
                        p.label,
                        p.rss_before_mib,
                        p.rss_after_mib,
                        p.kib_per_conn,
                        p.rss_later_mib,
                        p.kib_per_conn_later,
                        p.fds_per_conn,
                        p.fd_limit
                    );
                }
                if s.failed > 0 {
                    let _ = writeln!(
                        out,
                        "| {} | ({} joins failed: {}) ||||||",
                        e.target.name(),
                        s.failed,
                        s.first_error.clone().unwrap_or_default()
                    );
                }
            }
            None => {
                let _ = writeln!(out, "| {} | {} ||||||", e.target.name(), e.note.clone().unwrap_or_default());
            }
        }
    }
    if let Some(rs) = &r.room_state {
        let _ = writeln!(
            out,
            "\nHomeroom room state per connection (room core, {} connections): attachment (`ConnRecord` JSON) {:.0} B, \
             participant row (`ParticipantRecord` JSON) {:.0} B, in-memory structures ≈ {:.0} B.",
            rs.connections, rs.attachment_bytes, rs.participant_row_bytes, rs.in_memory_bytes
        );
    }

    // Multi-room.
    let _ = writeln!(
        out,
        "\n#### Several busy rooms at once (Homeroom's workerds allowed on CPUs {}; load tool on CPU {})\n",
        r.config.multi_cpus, e.load_tool_cpus
    );
    let _ = writeln!(out, "| path | rooms × members | msg/s per room | offered/s | delivered/s | p50 ms | p99 ms | loss % | inner CPU % | inner busiest thread: run / wait % | inner threads > 10 % | proxy CPU % | proxy threads > 10 % | client CPU % | core 0 / 1 busy % |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for m in &r.multi {
        let path = if m.target == Target::HomeroomProxy { "proxy" } else { "direct" };
        let Some(s) = &m.result else {
            let _ = writeln!(out, "| {path} | {} rooms: {} ||||||||||||||", m.size, m.note.clone().unwrap_or_default());
            continue;
        };
        if s.steps.is_empty() {
            let _ =
                writeln!(out, "| {path} | {} rooms: {} ||||||||||||||", m.size, s.stopped.clone().unwrap_or_default());
        }
        for step in &s.steps {
            let get = |label: &str| step.server.iter().find(|u| u.usage.label.starts_with(label));
            let inner = get("inner");
            let proxy = get("proxy");
            let _ = writeln!(
                out,
                "| {path} | {} × {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
                step.rooms,
                step.members,
                step.rate,
                thousands(step.offered_per_sec),
                thousands(step.delivered_per_sec),
                ms(step.p50_ms),
                ms(step.p99_ms),
                step.loss_pct,
                inner.map(|u| f0(u.usage.cpu_pct)).unwrap_or_default(),
                inner
                    .map(|u| {
                        format!(
                            "{:.0} / {:.0} ({})",
                            u.usage.top_thread_pct, u.usage.top_thread_wait_pct, u.usage.top_thread
                        )
                    })
                    .unwrap_or_default(),
                inner.map(|u| u.usage.busy_threads.to_string()).unwrap_or_default(),
                proxy.map(|u| f0(u.usage.cpu_pct)).unwrap_or_default(),
                proxy.map(|u| u.usage.busy_threads.to_string()).unwrap_or_default(),
                f0(step.client_cpu_pct),
                cores_cell(step),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(ms(0.456), "0.46");
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(1234.4), "1234");
    }
}
