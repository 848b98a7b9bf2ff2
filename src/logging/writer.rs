//! One thread owns the log's output: loggers hand it finished lines through a
//! bounded queue, and it writes whatever is queued with one `write_all` per wake-up.
//!
//! When idle the thread is parked in `recv`. The first line wakes it; it then waits
//! [`GATHER`] before taking what is queued, so under load (one `apuesta_recibida`
//! line per batch, thousands a second) it wakes about once per `GATHER`, not once
//! per line or two: each wake-up had cost the logging thread a futex call and,
//! more often than not, its CPU (the writer preempted it, and the logging thread
//! then waited in the run queue behind the agencies). A lone line (the `sorteo`
//! line scripts wait for on `docker logs -f`) goes out `GATHER` after it is logged.
//! A full queue blocks the logging thread: backpressure, never unbounded memory.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SendError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Lines that may wait for the writer before loggers block.
pub const QUEUE_LINES: usize = 1024;
/// The writer stops gathering once a chunk holds this much (plus at most one line).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// How long the writer lets lines gather after the first one wakes it. At the
/// highest line rate measured (about 25,000 lines a second) this is some 25 lines,
/// far below [`QUEUE_LINES`], so the wait never makes a logger block.
pub const GATHER: Duration = Duration::from_millis(1);

enum Msg {
    Line(Vec<u8>),
    /// Answered once every line queued before it has been written.
    Flush(SyncSender<()>),
    /// Write what is queued, then end the thread.
    Stop,
}

/// The loggers' end of the queue.
#[derive(Clone)]
pub(super) struct LineSender {
    tx: SyncSender<Msg>,
}

impl LineSender {
    /// Queues one finished line (newline included), blocking while the queue is full;
    /// gives the line back when the writer has already stopped.
    pub(super) fn send(&self, line: Vec<u8>) -> Result<(), Vec<u8>> {
        self.tx.send(Msg::Line(line)).map_err(|SendError(msg)| match msg {
            Msg::Line(line) => line,
            Msg::Flush(_) | Msg::Stop => Vec::new(),
        })
    }
}

/// Owns the writer thread: [`LogWriter::finish`] (or dropping it) writes every
/// line queued so far and joins the thread, so a process that ends after it loses
/// nothing that was logged before.
pub struct LogWriter {
    running: Option<(SyncSender<Msg>, JoinHandle<()>)>,
}

impl LogWriter {
    /// Starts the writer thread on `out`.
    pub(super) fn spawn<W: Write + Send + 'static>(out: W) -> std::io::Result<(LogWriter, LineSender)> {
        LogWriter::spawn_gathering(out, GATHER)
    }

    /// [`spawn`](Self::spawn) with another gathering wait (tests).
    pub(super) fn spawn_gathering<W: Write + Send + 'static>(
        out: W,
        gather: Duration,
    ) -> std::io::Result<(LogWriter, LineSender)> {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let thread = thread::Builder::new().name("log-writer".into()).spawn(move || run(out, rx, gather))?;
        let sender = LineSender { tx: tx.clone() };
        Ok((LogWriter { running: Some((tx, thread)) }, sender))
    }

    /// A writer that owns no thread (the loggers write synchronously).
    pub fn none() -> LogWriter {
        LogWriter { running: None }
    }

    /// Returns once every line logged before the call has been handed to the output.
    pub fn flush(&self) {
        if let Some((tx, _)) = &self.running {
            let (ack_tx, ack_rx) = sync_channel(1);
            if tx.send(Msg::Flush(ack_tx)).is_ok() {
                // Err: the thread ended without answering; nothing is left to wait for.
                let _ = ack_rx.recv();
            }
        }
    }

    /// Writes everything queued and joins the thread. Lines logged afterwards are
    /// written synchronously by the logging thread itself.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some((tx, thread)) = self.running.take() {
            let _ = tx.send(Msg::Stop);
            drop(tx);
            // Err: the thread panicked; there is nothing more to write from here.
            let _ = thread.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: wait for a line, let more gather for `gather`, take what is
/// queued (up to [`CHUNK_BYTES`]) and write it at once. A flush or a stop that
/// wakes the writer is answered without the wait. After the first write error (a closed pipe) lines
/// are dropped, not retried, so loggers never block on a dead output.
fn run<W: Write>(mut out: W, rx: Receiver<Msg>, gather: Duration) {
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let mut acks: Vec<SyncSender<()>> = Vec::new();
    let mut broken = false;
    let mut stopping = false;
    loop {
        let first = if stopping { rx.try_recv().ok() } else { rx.recv().ok() };
        let Some(mut msg) = first else {
            // Stopped and drained, or every sender is gone.
            return;
        };
        if matches!(msg, Msg::Line(_)) && !stopping && !gather.is_zero() {
            thread::sleep(gather);
        }
        loop {
            match msg {
                Msg::Line(line) => chunk.extend_from_slice(&line),
                Msg::Flush(ack) => acks.push(ack),
                Msg::Stop => stopping = true,
            }
            if chunk.len() >= CHUNK_BYTES {
                break;
            }
            match rx.try_recv() {
                Ok(next) => msg = next,
                Err(_) => break,
            }
        }
        if !chunk.is_empty() && !broken {
            broken = out.write_all(&chunk).and_then(|()| out.flush()).is_err();
        }
        chunk.clear();
        if chunk.capacity() > 2 * CHUNK_BYTES {
            chunk.shrink_to(CHUNK_BYTES);
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// Keeps every write call apart.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_logged_while_the_writer_gathers_share_one_write() {
        let writes = Writes::default();
        // Lines a few milliseconds apart (a writer without the wait takes each
        // alone), within a gathering wait far longer than the 20 of them take.
        let (writer, lines) = LogWriter::spawn_gathering(writes.clone(), Duration::from_secs(1)).unwrap();
        for i in 0..20 {
            lines.send(format!("line {i}\n").into_bytes()).unwrap();
            thread::sleep(Duration::from_millis(3));
        }
        writer.flush();
        let got = writes.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "one write for the burst, not {}", got.len());
        let want: String = (0..20).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(got.concat()).unwrap(), want);
    }

    #[test]
    fn a_lone_line_goes_out_without_a_flush() {
        let writes = Writes::default();
        let (writer, lines) = LogWriter::spawn(writes.clone()).unwrap();
        lines.send(b"action: sorteo | result: success\n".to_vec()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while writes.0.lock().unwrap().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(writes.0.lock().unwrap().concat(), b"action: sorteo | result: success\n");
        writer.finish();
    }
}
