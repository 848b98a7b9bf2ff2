//! Log lines in the course's format, on stdout, one line per event.
//!
//! `YYYY-MM-DD HH:MM:SS LEVEL    action: x | result: success | key: value`
//!
//! slog-term's own formats put `", "` between pairs and use short level names, so
//! the drains render the line themselves. A value can never add a field or a line:
//! the course's parser splits on every `|`, escaped or not, so `|` inside a value
//! becomes `¦` (U+00A6, broken bar), and line breaks become the two characters
//! `\n` / `\r`.
//!
//! The server logs one line per received batch, so a line costs one buffer and no
//! per-pair strings, and the processes hand lines to one writer thread
//! (`writer`) instead of paying a write(2) each.

mod writer;

#[cfg(test)]
mod drain_tests;

pub use writer::{LogWriter, CHUNK_BYTES, QUEUE_LINES};

use slog::{Drain, Level, LevelFilter, Logger, OwnedKVList, Record, KV};
use slog_term::{Decorator, PlainSyncDecorator};
use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};
use writer::LineSender;

/// Most lines fit without growing the buffer.
const LINE_CAPACITY: usize = 192;

/// Renders records as course-style lines onto a synchronized writer, one write and
/// flush per record (the fallback when no writer thread can be started).
pub struct PipeDrain<W: Write> {
    out: PlainSyncDecorator<W>,
    now: fn() -> SystemTime,
}

impl<W: Write> PipeDrain<W> {
    pub fn new(out: W) -> Self {
        PipeDrain { out: PlainSyncDecorator::new(out), now: SystemTime::now }
    }
}

impl<W: Write> Drain for PipeDrain<W> {
    type Ok = ();
    type Err = io::Error;

    fn log(&self, record: &Record, values: &OwnedKVList) -> io::Result<()> {
        let line = render_record((self.now)(), record)?;
        self.out.with_record(record, values, |w| {
            w.write_all(&line)?;
            w.flush()
        })
    }
}

/// Renders records on the logging thread and queues them for the writer thread.
pub struct QueuedDrain {
    lines: LineSender,
    now: fn() -> SystemTime,
}

impl QueuedDrain {
    /// Starts a writer thread on `out`; the [`LogWriter`] must outlive the logging
    /// (finish it before the process ends).
    pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(QueuedDrain, LogWriter)> {
        Self::spawn_with_clock(out, SystemTime::now)
    }

    fn spawn_with_clock<W: Write + Send + 'static>(
        out: W,
        now: fn() -> SystemTime,
    ) -> io::Result<(QueuedDrain, LogWriter)> {
        let (writer, lines) = LogWriter::spawn(out)?;
        Ok((QueuedDrain { lines, now }, writer))
    }
}

impl Drain for QueuedDrain {
    type Ok = ();
    type Err = io::Error;

    fn log(&self, record: &Record, _values: &OwnedKVList) -> io::Result<()> {
        let line = render_record((self.now)(), record)?;
        if let Err(line) = self.lines.send(line) {
            // The writer has finished (the process is ending): write it ourselves.
            let mut out = io::stdout().lock();
            out.write_all(&line)?;
            out.flush()?;
        }
        Ok(())
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

/// Writes `value` so that it cannot break the line into fields or lines.
pub fn escape_value(value: &str, out: &mut String) {
    let _ = escape_to(value, out);
}

/// [`escape_value`] onto any `fmt::Write`; a value without anything to escape is
/// copied in one piece.
fn escape_to<W: fmt::Write + ?Sized>(value: &str, out: &mut W) -> fmt::Result {
    // Bytes that may start something to escape: `\`, `|`, C0 controls, DEL, and
    // 0xC2, the lead byte of the C1 controls (U+0080..U+009F).
    let plain = !value.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\' || b == b'|' || b == 0xc2);
    if plain {
        return out.write_str(value);
    }
    for c in value.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '|' => out.write_char('¦')?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            c if c.is_control() => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// `fmt::Write` onto a byte buffer (the line is built as bytes so the pairs can be
/// put back in order in place).
struct Bytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `fmt::Write` that escapes everything written through it.
struct Escaped<'a>(Bytes<'a>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_to(s, &mut self.0)
    }
}

/// Lengths of the rendered pairs, in the order slog emitted them.
struct Segments {
    inline: [usize; 16],
    count: usize,
    spill: Vec<usize>,
}

impl Segments {
    fn push(&mut self, len: usize) {
        match self.inline.get_mut(self.count) {
            Some(slot) => *slot = len,
            None => self.spill.push(len),
        }
        self.count += 1;
    }

    fn lens(&self) -> impl DoubleEndedIterator<Item = &usize> {
        self.inline[..self.count.min(self.inline.len())].iter().chain(self.spill.iter())
    }
}

/// Renders each pair as ` | key: value` straight into the line.
struct PairWriter<'a> {
    line: &'a mut Vec<u8>,
    segments: Segments,
}

impl PairWriter<'_> {
    fn pair(&mut self, key: slog::Key, value: impl FnOnce(&mut Escaped) -> fmt::Result) -> slog::Result {
        let start = self.line.len();
        self.line.extend_from_slice(b" | ");
        self.line.extend_from_slice(key.as_bytes());
        self.line.extend_from_slice(b": ");
        value(&mut Escaped(Bytes(self.line)))?;
        self.segments.push(self.line.len() - start);
        Ok(())
    }
}

impl slog::Serializer for PairWriter<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments) -> slog::Result {
        self.pair(key, |out| out.write_fmt(*val))
    }

    fn emit_str(&mut self, key: slog::Key, val: &str) -> slog::Result {
        self.pair(key, |out| out.write_str(val))
    }
}

/// Renders `record` as one line with its newline (the tests compare it byte for
/// byte with the renderer it replaced).
fn render_record(now: SystemTime, record: &Record) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(LINE_CAPACITY);
    push_timestamp(&mut line, now);
    line.push(b' ');
    let level = level_name(record.level());
    line.extend_from_slice(level.as_bytes());
    line.resize(line.len() + 8usize.saturating_sub(level.len()), b' ');
    line.push(b' ');
    Bytes(&mut line).write_fmt(*record.msg()).map_err(io::Error::other)?;
    let start = line.len();
    let mut pairs = PairWriter { line: &mut line, segments: Segments { inline: [0; 16], count: 0, spill: Vec::new() } };
    record.kv().serialize(record, &mut pairs).map_err(io::Error::other)?;
    let segments = pairs.segments;
    if segments.count > 1 {
        // slog hands the record's pairs over last-first: reversing the whole run
        // and then each pair puts them back in the order they were written.
        let region = &mut line[start..];
        region.reverse();
        let mut at = 0;
        for &len in segments.lens().rev() {
            region[at..at + len].reverse();
            at += len;
        }
    }
    line.push(b'\n');
    Ok(line)
}

/// The root logger: stdout, course format, records below `level` dropped; each
/// record written synchronously (one write per line).
pub fn root(level: Level) -> Logger {
    let drain = PipeDrain::new(io::stdout());
    let drain = LevelFilter::new(drain, level).ignore_res();
    Logger::root(drain, slog::o!())
}

/// The processes' root logger: like [`root`], but lines go through one writer
/// thread. Finish the [`LogWriter`] on every way out of the process; if the thread
/// cannot be started, the logger writes synchronously and the writer is a no-op.
pub fn root_with_writer(level: Level) -> (Logger, LogWriter) {
    match QueuedDrain::spawn(io::stdout()) {
        Ok((drain, writer)) => {
            let drain = LevelFilter::new(drain, level).ignore_res();
            (Logger::root(drain, slog::o!()), writer)
        }
        Err(_) => (root(level), LogWriter::none()),
    }
}

/// A logger that discards everything (unit tests).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

thread_local! {
    /// The last second rendered on this thread and its text.
    static STAMP: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// Appends [`format_timestamp`]'s text, computed once per second per thread.
fn push_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let cached = STAMP
        .try_with(|cell| {
            let (at, text) = cell.get();
            if at == secs {
                return Some(text);
            }
            let text = stamp_digits(secs)?;
            cell.set((secs, text));
            Some(text)
        })
        .ok()
        .flatten();
    match cached {
        Some(text) => out.extend_from_slice(&text),
        None => out.extend_from_slice(format_timestamp(now).as_bytes()),
    }
}

/// `YYYY-MM-DD HH:MM:SS` as bytes; `None` past year 9999 (more than four digits).
fn stamp_digits(secs: u64) -> Option<[u8; 19]> {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let y = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
    let mut text = *b"0000-00-00 00:00:00";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, (rem / 3600) as u32);
    put(14, 2, ((rem % 3600) / 60) as u32);
    put(17, 2, (rem % 60) as u32);
    Some(text)
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

    /// Keeps every write, for reading the lines back.
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

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A synchronous logger onto `sink` whose clock stands at the epoch.
    fn at_epoch(sink: &Sink) -> Logger {
        let drain = PipeDrain { out: PlainSyncDecorator::new(sink.clone()), now: || UNIX_EPOCH };
        Logger::root(drain.ignore_res(), slog::o!())
    }

    #[test]
    fn lines_have_padded_levels_and_escaped_values() {
        let sink = Sink::default();
        let log = at_epoch(&sink);
        slog::info!(log, "action: x | result: fail"; "cantidad" => 3, "error" => "a | b\nc");
        slog::warn!(log, "m");
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "1970-01-01 00:00:00 INFO     action: x | result: fail | cantidad: 3 | error: a ¦ b\\nc");
        assert_eq!(lines[0].split(" | ").count(), 4);
        assert_eq!(lines[1], "1970-01-01 00:00:00 WARNING  m");
    }

    #[test]
    fn drain_keeps_pair_order() {
        let sink = Sink::default();
        let log = Logger::root(PipeDrain::new(sink.clone()).ignore_res(), slog::o!());
        slog::info!(log, "action: a | result: success"; "first" => 1, "second" => "two");
        let text = sink.text();
        assert!(text.ends_with("INFO     action: a | result: success | first: 1 | second: two\n"), "{text}");
    }

    #[test]
    fn level_names_parse_case_insensitively() {
        assert_eq!(parse_level("info"), Some(Level::Info));
        assert_eq!(parse_level("WARNING"), Some(Level::Warning));
        assert_eq!(parse_level("verbose"), None);
    }
}
