//! What the CLI prints for people: the instance table, log lines with their `app[instance]`
//! prefix, durations and sizes. Colours only on a terminal, and never with `NO_COLOR` set
//! (<https://no-color.org>); `--json` output never goes through here.

use std::fmt::Write as _;
use std::io::IsTerminal;

use crate::proto::{Instance, Line};

/// Whether standard output takes colours.
pub(crate) fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in the ANSI colour `code` when `on`.
fn paint(text: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// The instance table, one row per instance, columns aligned.
pub(crate) fn table(rows: &[Instance], colour: bool) -> String {
    let header = [
        "APP", "INST", "PID", "STATE", "RESTARTS", "UPTIME", "CPU", "MEM", "GEN",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.app.clone(),
                r.instance.to_string(),
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.state.clone(),
                r.restarts.to_string(),
                if r.pid.is_some() {
                    duration(r.uptime_s)
                } else {
                    "-".into()
                },
                r.cpu_pct.map_or("-".into(), |c| format!("{c:.1}%")),
                r.memory_bytes.map_or("-".into(), bytes),
                r.generation.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String], state_colour: Option<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let padded = format!("{cell:<w$}");
            match (i, state_colour) {
                (3, Some(code)) => text.push_str(&paint(&padded, code, colour)),
                _ => text.push_str(&padded),
            }
            text.push_str("  ");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    let head: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    line(&mut out, &head, None);
    for (row, r) in cells.iter().zip(rows) {
        line(&mut out, row, Some(state_colour(&r.state)));
    }
    out
}

fn state_colour(state: &str) -> &'static str {
    match state {
        "ready" => "32",
        "failed" | "exited" => "31",
        _ => "33",
    }
}

/// A log line as `logs` prints it: `app[instance] text`.
pub(crate) fn log_line(line: &Line, colour: bool) -> String {
    let prefix = match line.instance {
        Some(i) => format!("{}[{i}]", line.app),
        None => line.app.clone(),
    };
    let code = if line.stream == "stderr" { "31" } else { "36" };
    format!("{} {}", paint(&prefix, code, colour), line.line)
}

/// `seconds` as `45s`, `12m`, `3h`, `2d`.
pub(crate) fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `n` bytes as `512 B`, `12.3 MB`, `1.2 GB` (powers of 1024).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(app: &str, instance: usize, pid: Option<u32>, state: &str) -> Instance {
        Instance {
            app: app.into(),
            instance,
            pid,
            state: state.into(),
            restarts: 1,
            uptime_s: 125.0,
            cpu_pct: Some(1.25),
            memory_bytes: Some(12 * 1024 * 1024),
            generation: 2,
        }
    }

    #[test]
    fn the_table_aligns_and_shows_every_column() {
        let text = table(
            &[
                row("web", 0, Some(4242), "ready"),
                row("api", 10, None, "backoff"),
            ],
            false,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("APP  INST  PID   STATE"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("4242") && lines[1].contains("2m") && lines[1].contains("12.0 MB")
        );
        assert!(
            lines[2].contains("backoff") && lines[2].contains(" - "),
            "{}",
            lines[2]
        );
        assert!(!text.contains('\x1b'), "no colour off a terminal");
        assert!(table(&[row("web", 0, Some(1), "ready")], true).contains("\x1b[32m"));
    }

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(duration(59.9), "59s");
        assert_eq!(duration(3600.0), "1h");
        assert_eq!(duration(200_000.0), "2d");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KB");
        let line = Line {
            app: "web".into(),
            instance: Some(2),
            pid: 7,
            stream: "stdout".into(),
            line: "hello".into(),
            time_s: 0.0,
        };
        assert_eq!(log_line(&line, false), "web[2] hello");
    }
}
