//! Log lines in the course's format, on stdout, one line per event.
//!
//! `YYYY-MM-DD HH:MM:SS LEVEL    action: x | result: success | key: value`
//!
//! slog-term's own formats put `", "` between pairs and use short level names, so
//! this drain renders the line itself and uses slog-term only for the synchronized,
//! flushed-per-record writer. A value can never add a field or a line: the course's
//! parser splits on every `|`, escaped or not, so `|` inside a value becomes `¦`
//! (U+00A6, broken bar), and line breaks become the two characters `\n` / `\r`.

use slog::{Drain, Level, LevelFilter, Logger, OwnedKVList, Record, KV};
use slog_term::{Decorator, PlainSyncDecorator};
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Renders records as course-style lines onto a synchronized writer.
pub struct PipeDrain<W: Write> {
    out: PlainSyncDecorator<W>,
}

impl<W: Write> PipeDrain<W> {
    pub fn new(out: W) -> Self {
        PipeDrain { out: PlainSyncDecorator::new(out) }
    }
}

/// The course's (Python `logging`) level names.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Critical => "CRITICAL",
        Level::Error => "ERROR",
        Level::Warning => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// Parses a configured level name, case-insensitively (`info`, `WARNING`, `warn`).
pub fn parse_level(name: &str) -> Option<Level> {
    match name.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" => Some(Level::Critical),
        "ERROR" => Some(Level::Error),
        "WARNING" | "WARN" => Some(Level::Warning),
        "INFO" => Some(Level::Info),
        "DEBUG" => Some(Level::Debug),
        "TRACE" => Some(Level::Trace),
        _ => None,
    }
}

struct Pairs(Vec<(slog::Key, String)>);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments) -> slog::Result {
        self.0.push((key, val.to_string()));
        Ok(())
    }
}

/// Writes `value` so that it cannot break the line into fields or lines.
pub fn escape_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push('¦'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Renders one line (without the newline): the pure part of the drain, for tests.
pub fn render_line(now: SystemTime, level: Level, msg: &str, pairs: &[(String, String)]) -> String {
    let mut line = String::with_capacity(96);
    line.push_str(&format_timestamp(now));
    let _ = write!(line, " {:<8} {}", level_name(level), msg);
    for (k, v) in pairs {
        let _ = write!(line, " | {k}: ");
        escape_value(v, &mut line);
    }
    line
}

impl<W: Write> Drain for PipeDrain<W> {
    type Ok = ();
    type Err = io::Error;

    fn log(&self, record: &Record, values: &OwnedKVList) -> io::Result<()> {
        let mut pairs = Pairs(Vec::new());
        record.kv().serialize(record, &mut pairs).map_err(io::Error::other)?;
        // slog hands the record's pairs over last-first.
        let pairs: Vec<(String, String)> = pairs.0.into_iter().rev().map(|(k, v)| (k.to_string(), v)).collect();
        let line = render_line(SystemTime::now(), record.level(), &record.msg().to_string(), &pairs);
        self.out.with_record(record, values, |w| {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
            w.flush()
        })
    }
}

/// The root logger: stdout, course format, records below `level` dropped.
pub fn root(level: Level) -> Logger {
    let drain = PipeDrain::new(io::stdout());
    let drain = LevelFilter::new(drain, level).ignore_res();
    Logger::root(drain, slog::o!())
}

/// A logger that discards everything (unit tests).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (containers run in UTC; no time-zone database needed).
pub fn format_timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_724_278_275); // 2024-08-21 22:11:15
        assert_eq!(format_timestamp(t), "2024-08-21 22:11:15");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&format_timestamp(leap)[..10], "2000-02-29");
    }

    #[test]
    fn lines_have_padded_levels_and_escaped_values() {
        let pairs = vec![("cantidad".to_string(), "3".to_string()), ("error".into(), "a | b\nc".into())];
        let line = render_line(UNIX_EPOCH, Level::Info, "action: x | result: fail", &pairs);
        assert_eq!(line, "1970-01-01 00:00:00 INFO     action: x | result: fail | cantidad: 3 | error: a ¦ b\\nc");
        let fields: Vec<&str> = line.split(" | ").collect();
        assert_eq!(fields.len(), 4);
        assert!(render_line(UNIX_EPOCH, Level::Warning, "m", &[]).contains(" WARNING  m"));
    }

    #[test]
    fn drain_keeps_pair_order() {
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let log = Logger::root(PipeDrain::new(sink.clone()).ignore_res(), slog::o!());
        slog::info!(log, "action: a | result: success"; "first" => 1, "second" => "two");
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with("INFO     action: a | result: success | first: 1 | second: two\n"), "{text}");
    }

    #[test]
    fn level_names_parse_case_insensitively() {
        assert_eq!(parse_level("info"), Some(Level::Info));
        assert_eq!(parse_level("WARNING"), Some(Level::Warning));
        assert_eq!(parse_level("verbose"), None);
    }
}
