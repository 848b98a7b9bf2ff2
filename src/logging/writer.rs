//! One thread owns the log's output: loggers hand it finished lines through a
//! bounded queue, and it writes whatever is queued with one `write_all` per wake-up.
//!
//! Under load (one `apuesta_recibida` line per batch) many lines share one write(2);
//! when idle the thread is parked in `recv`, so a lone line goes out as soon as it is
//! queued (scripts wait on `docker logs -f` for the `sorteo` line; there is no timer).
//! A full queue blocks the logging thread: backpressure, never unbounded memory.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SendError, SyncSender};
use std::thread::{self, JoinHandle};

/// Lines that may wait for the writer before loggers block.
pub const QUEUE_LINES: usize = 1024;
/// The writer stops gathering once a chunk holds this much (plus at most one line).
pub const CHUNK_BYTES: usize = 64 * 1024;

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
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let thread = thread::Builder::new().name("log-writer".into()).spawn(move || run(out, rx))?;
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

/// The thread: gather what is queued (up to [`CHUNK_BYTES`]), write it at once.
/// After the first write error (a closed pipe) lines are dropped, not retried, so
/// loggers never block on a dead output.
fn run<W: Write>(mut out: W, rx: Receiver<Msg>) {
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
