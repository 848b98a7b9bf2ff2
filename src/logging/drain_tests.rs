//! The queued drain against the old synchronous one: same bytes, same order,
//! nothing lost at finish, no panic on a dead output.

use super::*;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A sink the test can read back: every write call is kept apart.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

impl Sink {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
    }
    fn writes(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }
}

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().push(b.to_vec());
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_724_278_275)
}

fn queued(sink: &Sink) -> (Logger, LogWriter) {
    let (drain, writer) = QueuedDrain::spawn_with_clock(sink.clone(), epoch).unwrap();
    (Logger::root(drain.ignore_res(), slog::o!()), writer)
}

/// `escape_value` as it was before the fast path: part of the oracle.
fn old_escape_value(value: &str, out: &mut String) {
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

/// The line renderer the writer thread replaced, frozen as the oracle.
fn old_render_line(now: SystemTime, level: Level, msg: &str, pairs: &[(String, String)]) -> String {
    let mut line = String::with_capacity(96);
    line.push_str(&format_timestamp(now));
    let _ = write!(line, " {:<8} {}", level_name(level), msg);
    for (k, v) in pairs {
        let _ = write!(line, " | {k}: ");
        old_escape_value(v, &mut line);
    }
    line
}

/// The drain as it was before the writer thread: the oracle for the bytes.
struct OldDrain(Arc<Mutex<Vec<u8>>>);

struct Pairs(Vec<(slog::Key, String)>);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments) -> slog::Result {
        self.0.push((key, val.to_string()));
        Ok(())
    }
}

impl Drain for OldDrain {
    type Ok = ();
    type Err = io::Error;

    fn log(&self, record: &Record, _values: &OwnedKVList) -> io::Result<()> {
        let mut pairs = Pairs(Vec::new());
        record.kv().serialize(record, &mut pairs).map_err(io::Error::other)?;
        let pairs: Vec<(String, String)> = pairs.0.into_iter().rev().map(|(k, v)| (k.to_string(), v)).collect();
        let line = old_render_line(epoch(), record.level(), &record.msg().to_string(), &pairs);
        let mut out = self.0.lock().unwrap();
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        Ok(())
    }
}

#[derive(Debug)]
struct Oops;

impl fmt::Display for Oops {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("disk | full\r\nagain")
    }
}

impl std::error::Error for Oops {}

/// Every kind of value the code logs, and the awkward ones.
fn log_samples(log: &Logger) {
    slog::info!(log, "action: apuesta_recibida | result: success"; "cantidad" => 100, "agencia" => 3u8);
    slog::info!(log, "action: sorteo | result: success");
    slog::warn!(log, "action: config | result: success"; "ignored_key" => "a|b", "reason" => "unknown key");
    slog::error!(log, "action: exit | result: fail"; "client_id" => 5, "error" => %Oops, "debug" => ?Oops);
    slog::debug!(log, "action: {} | result: {}", "formatted", "success"; "ok" => true, "ratio" => 0.25f64);
    slog::crit!(log, "m"; "ctl" => "\u{1}\u{7f}\u{85}x", "text" => "Ñandú ¦ \\ back", "c1" => "a\u{85}b", "empty" => "", "none" => None::<u8>);
    // Not trace!: release builds compile trace records out (release_max_level_debug).
    slog::debug!(log, "big"; "bytes" => u64::MAX, "neg" => -7i64);
    slog::info!(log, "many";
        "k01" => 1, "k02" => "2", "k03" => 3, "k04" => "4|", "k05" => 5, "k06" => 6, "k07" => 7, "k08" => 8,
        "k09" => 9, "k10" => 10, "k11" => "e\nleven", "k12" => 12, "k13" => 13, "k14" => 14, "k15" => 15,
        "k16" => 16, "k17" => 17, "k18" => "eighteen", "k19" => 19, "k20" => 20);
    let child = log.new(slog::o!("ignored" => "owned values are not printed"));
    slog::info!(child, "child"; "own" => 1);
}

#[test]
fn queued_lines_are_byte_identical_to_the_old_drain() {
    let old = Arc::new(Mutex::new(Vec::new()));
    log_samples(&Logger::root(OldDrain(old.clone()).ignore_res(), slog::o!()));
    let sink = Sink::default();
    let (log, writer) = queued(&sink);
    log_samples(&log);
    writer.finish();
    let old = String::from_utf8(old.lock().unwrap().clone()).unwrap();
    assert_eq!(old.lines().count(), 9);
    assert!(old.contains("c1: a\\u{85}b"), "{old}");
    assert_eq!(sink.text(), old, "{old}");
    // The synchronous drain renders the same bytes too.
    let pipe = Sink::default();
    let drain = PipeDrain { out: PlainSyncDecorator::new(pipe.clone()), now: epoch };
    log_samples(&Logger::root(drain.ignore_res(), slog::o!()));
    assert_eq!(pipe.text(), old);
}

#[test]
fn escape_value_matches_the_old_one() {
    let samples =
        ["", "plain", "a|b", "back\\slash", "x\ny\r", "\u{1}", "\u{7f}", "a\u{85}b", "\u{9f}", "\u{a0}¦Ñ", "日本|"];
    for v in samples {
        let (mut new, mut old) = (String::from("p"), String::from("p"));
        escape_value(v, &mut new);
        old_escape_value(v, &mut old);
        assert_eq!(new, old, "{v:?}");
    }
}

#[test]
fn cached_timestamps_match_format_timestamp() {
    let mut secs: Vec<u64> = vec![0, 59, 60, 86_399, 86_400, 951_782_399, 951_782_400, 1_724_278_275];
    secs.extend((0..2000u64).map(|i| i * 7_919_993)); // spread over ~500 years
    secs.extend([253_402_300_799, 253_402_300_800, u64::MAX / 4]); // 9999-12-31 23:59:59, year 10000, far out
    for s in secs {
        for t in [s, s, s.saturating_add(1)] {
            let now = UNIX_EPOCH + Duration::from_secs(t);
            let mut out = Vec::new();
            push_timestamp(&mut out, now);
            assert_eq!(String::from_utf8(out).unwrap(), format_timestamp(now), "at {t}");
        }
    }
    let before = UNIX_EPOCH - Duration::from_secs(10);
    let mut out = Vec::new();
    push_timestamp(&mut out, before);
    assert_eq!(out, b"1970-01-01 00:00:00");
}

#[test]
fn lines_from_many_threads_stay_whole_and_in_order() {
    const THREADS: usize = 4;
    // More lines than the queue holds: the loggers also block and resume.
    const PER_THREAD: usize = 3 * QUEUE_LINES;
    let sink = Sink::default();
    let (log, writer) = queued(&sink);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    slog::info!(log, "action: apuesta_recibida | result: success"; "thread" => t, "seq" => seq, "pad" => "x|y");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    writer.finish();
    let text = sink.text();
    assert!(text.ends_with('\n'));
    let mut next = [0usize; THREADS];
    for line in text.lines() {
        let rest = line
            .strip_prefix("2024-08-21 22:11:15 INFO     action: apuesta_recibida | result: success | thread: ")
            .unwrap_or_else(|| panic!("broken line: {line:?}"));
        let (t, rest) = rest.split_once(" | seq: ").unwrap();
        let (seq, pad) = rest.split_once(" | pad: ").unwrap();
        assert_eq!(pad, "x¦y");
        let t: usize = t.parse().unwrap();
        assert_eq!(seq.parse::<usize>().unwrap(), next[t], "thread {t} out of order");
        next[t] += 1;
    }
    assert_eq!(next, [PER_THREAD; THREADS]);
}

#[test]
fn flush_and_finish_leave_every_line_in_the_sink() {
    let sink = Sink::default();
    let (log, writer) = queued(&sink);
    for i in 0..500 {
        slog::info!(log, "action: a | result: success"; "i" => i);
    }
    writer.flush();
    assert_eq!(sink.text().lines().count(), 500);
    for i in 500..1000 {
        slog::info!(log, "action: a | result: success"; "i" => i);
    }
    writer.finish();
    let text = sink.text();
    assert_eq!(text.lines().count(), 1000);
    assert!(text.ends_with("action: a | result: success | i: 999\n"));
}

/// A sink whose first write waits for the test: meanwhile the lines pile up.
struct Gate {
    sink: Sink,
    entered: Sender<()>,
    open: Option<Receiver<()>>,
}

impl Write for Gate {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if let Some(open) = self.open.take() {
            self.entered.send(()).unwrap();
            open.recv().unwrap();
        }
        self.sink.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn queued_lines_share_writes_of_bounded_size() {
    let sink = Sink::default();
    let (entered_tx, entered) = channel();
    let (open, open_rx) = channel();
    let gate = Gate { sink: sink.clone(), entered: entered_tx, open: Some(open_rx) };
    let (drain, writer) = QueuedDrain::spawn_with_clock(gate, epoch).unwrap();
    let log = Logger::root(drain.ignore_res(), slog::o!());
    // A lone line goes out without any flush: the writer is inside write #1.
    slog::info!(log, "first");
    entered.recv().unwrap();
    let long = "v".repeat(150);
    let queued = QUEUE_LINES - 1;
    for i in 0..queued {
        // Same width for every i: every line has the same length.
        slog::info!(log, "action: a | result: success"; "i" => format!("{i:04}"), "long" => long.as_str());
    }
    open.send(()).unwrap();
    writer.finish();
    let writes = sink.writes();
    assert!(String::from_utf8(writes[0].clone()).unwrap().ends_with(" INFO     first\n"));
    let line_len = writes[1].iter().position(|b| *b == b'\n').unwrap() + 1;
    let total: usize = writes[1..].iter().map(Vec::len).sum();
    assert_eq!(total, queued * line_len);
    // All queued at once: full chunks, each whole lines, none above the bound.
    let expected = total.div_ceil((CHUNK_BYTES).div_ceil(line_len) * line_len);
    assert_eq!(writes.len() - 1, expected, "{:?}", writes.iter().map(Vec::len).collect::<Vec<_>>());
    for w in &writes[1..] {
        assert!(w.len() < CHUNK_BYTES + line_len && w.len() % line_len == 0);
    }
}

/// stdout on a closed pipe.
struct Closed(Arc<Mutex<usize>>);

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        *self.0.lock().unwrap() += 1;
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_closed_output_neither_panics_nor_blocks_the_loggers() {
    let attempts = Arc::new(Mutex::new(0));
    let (drain, writer) = QueuedDrain::spawn_with_clock(Closed(attempts.clone()), epoch).unwrap();
    let log = Logger::root(drain.ignore_res(), slog::o!());
    // Far more than the queue holds: the writer keeps draining after the error.
    for i in 0..4 * QUEUE_LINES {
        slog::info!(log, "action: a | result: success"; "i" => i);
    }
    writer.flush();
    writer.finish();
    assert_eq!(*attempts.lock().unwrap(), 1, "no retries on a dead output");
}
