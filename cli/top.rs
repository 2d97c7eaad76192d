//! `procactor top`: a live view of every instance — state, CPU, memory, restarts, uptime — and
//! of what just happened (a reload's progress, exits), redrawn at each snapshot the daemon
//! sends (once a second) and at each event; `q` (or Esc, or Ctrl-C) quits.
//!
//! Why ratatui: a table that fits the terminal, redrawn without flicker, and the terminal
//! restored on every way out, from a well-kept crate; and [`draw`] is a pure function of a
//! [`Snapshot`], so a test renders it into ratatui's `TestBackend` and reads the screen.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event as Key, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line as Text;
use ratatui::widgets::{Block, List, ListItem, Row, Table};
use ratatui::Frame;
use tokio::sync::mpsc;

use crate::client;
use crate::exit::{Exit, Failure};
use crate::proto::{Event, Instance, Request};
use crate::render;

/// Lines of recent events kept for the lower pane.
const EVENTS_SHOWN: usize = 200;

/// What the view shows.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Every instance, as of the last snapshot.
    pub(crate) instances: Vec<Instance>,
    /// Recent events, newest last.
    pub(crate) events: VecDeque<String>,
}

impl Snapshot {
    /// Takes in one event from the daemon.
    pub(crate) fn take(&mut self, event: Event) {
        match event {
            Event::Snapshot { instances } => self.instances = instances,
            Event::Line(_) => {}
            other => {
                if self.events.len() == EVENTS_SHOWN {
                    self.events.pop_front();
                }
                self.events.push_back(other.to_string());
            }
        }
    }
}

/// Draws `snapshot` into `frame`: the instance table above, recent events below.
pub(crate) fn draw(frame: &mut Frame<'_>, snapshot: &Snapshot) {
    let [table_area, events_area] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(8)]).areas(frame.area());
    let header = Row::new([
        "APP", "INST", "PID", "STATE", "CPU", "MEM", "RESTARTS", "UPTIME", "GEN",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = snapshot.instances.iter().map(|r| {
        let colour = match r.state.as_str() {
            "ready" => Color::Green,
            "failed" | "exited" => Color::Red,
            _ => Color::Yellow,
        };
        Row::new([
            Text::from(r.app.clone()),
            Text::from(r.instance.to_string()),
            Text::from(r.pid.map_or("-".into(), |p| p.to_string())),
            Text::from(r.state.clone()).style(Style::default().fg(colour)),
            Text::from(r.cpu_pct.map_or("-".into(), |c| format!("{c:.1}%"))),
            Text::from(r.memory_bytes.map_or("-".into(), render::bytes)),
            Text::from(r.restarts.to_string()),
            Text::from(if r.pid.is_some() {
                render::duration(r.uptime_s)
            } else {
                "-".into()
            }),
            Text::from(r.generation.to_string()),
        ])
    });
    let widths = [
        Constraint::Min(8),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(4),
    ];
    let title = format!(
        " procactor top — {} instances — q quits ",
        snapshot.instances.len()
    );
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(title)),
        table_area,
    );
    let shown = usize::from(events_area.height.saturating_sub(2));
    let items: Vec<ListItem<'_>> = snapshot
        .events
        .iter()
        .skip(snapshot.events.len().saturating_sub(shown))
        .map(|e| ListItem::new(e.as_str()))
        .collect();
    frame.render_widget(
        List::new(items).block(Block::bordered().title(" events ")),
        events_area,
    );
}

/// Runs the view against the daemon at `socket` until `q`.
///
/// # Errors
/// When the daemon cannot be reached, or the terminal cannot be used.
pub(crate) fn run(socket: &Path) -> Result<(), Failure> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return Err(Failure::new(
            Exit::Usage,
            "`top` draws on a terminal, and standard output is not one; `procactor list` \
             (or `list --json`) prints the same figures once",
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot start a runtime: {e}")))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let socket = socket.to_path_buf();
    // The watch runs until the daemon closes or this process exits.
    let watch = std::thread::spawn(move || {
        runtime.block_on(client::request(&socket, Request::Watch, move |event| {
            let _ = tx.send(event);
        }))
    });
    let mut terminal = ratatui::try_init().map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!("the terminal cannot be drawn on: {e}"),
        )
    })?;
    let mut snapshot = Snapshot::default();
    let result = loop {
        while let Ok(event) = rx.try_recv() {
            snapshot.take(event);
        }
        if watch.is_finished() {
            break Ok(());
        }
        if let Err(e) = terminal.draw(|frame| draw(frame, &snapshot)) {
            break Err(Failure::new(
                Exit::Failed,
                format!("the terminal failed: {e}"),
            ));
        }
        if event::poll(Duration::from_millis(200)).unwrap_or(false) {
            if let Ok(Key::Key(key)) = event::read() {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if key.kind == KeyEventKind::Press
                    && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                {
                    break Ok(());
                }
            }
        }
    };
    ratatui::restore();
    if watch.is_finished() {
        if let Ok(Err(e)) = watch.join() {
            return Err(Failure::from(e));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;

    #[test]
    fn every_instance_is_on_the_screen() {
        let mut snapshot = Snapshot::default();
        let instances: Vec<Instance> = (0..6)
            .map(|i| Instance {
                app: if i < 3 { "web" } else { "api" }.into(),
                instance: i % 3,
                pid: Some(41_000 + i as u32),
                state: "ready".into(),
                restarts: i as u64,
                uptime_s: 90.0,
                cpu_pct: Some(2.5),
                memory_bytes: Some(20 << 20),
                generation: 1,
            })
            .collect();
        snapshot.take(Event::Snapshot { instances });
        snapshot.take(Event::Note {
            message: "web: reload-started: 3 instances".into(),
        });
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        terminal.draw(|frame| draw(frame, &snapshot)).unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|cell| cell.symbol())
            .collect();
        for i in 0..6 {
            assert!(screen.contains(&(41_000 + i).to_string()), "pid {i} shown");
        }
        assert!(screen.contains("web") && screen.contains("api"));
        assert!(screen.contains("20.0 MB") && screen.contains("2.5%"));
        assert!(screen.contains("reload-started"));
        assert!(screen.contains("6 instances"));
    }
}
