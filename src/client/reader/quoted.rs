//! The general CSV record parser, for rows the fast path cannot split on commas
//! alone: quoted fields (RFC 4180, `""` for a quote, separators and line breaks
//! inside quotes) and rows longer than what is buffered. It follows the csv
//! crate's rules byte for byte (a quote opens a quoted section only at the start
//! of a field; text after a closing quote is kept; a `\r`, `\n` or `\r\n` outside
//! quotes ends the record; the end of the file ends an open quote), and it is fed
//! chunk by chunk so a record may span buffer refills while memory stays bounded.
//!
//! One departure: a quote still open at the end of the file, or when its record
//! passes the row limit, is an [`Unterminated`] quote. The record ends at the first
//! line end after that quote opened, and the bytes after it are handed back
//! ([`QuotedRecord::replay`]) to be read again as rows.

/// Where the parser is inside a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    StartField,
    InField,
    InQuotes,
    /// A quote inside quotes: a second quote makes it data, anything else closes the quotes.
    QuoteInQuotes,
}

/// Why and where a quote was found unterminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unterminated {
    /// Lines between the record's first line and the one where the quote opened.
    pub(super) opened_after: u64,
    /// Line ends the open quote ran over before it was given up.
    pub(super) lines: u64,
    /// `true`: the file ended; `false`: the record passed the row limit.
    pub(super) at_eof: bool,
}

/// The quote currently open in a record, while it may yet turn out unterminated.
#[derive(Debug, Default)]
struct OpenQuote {
    /// `inner_lines` when it opened.
    opened_after: u64,
    lines: u64,
    /// A line end was seen inside it: the bytes after that line end are kept.
    capturing: bool,
    /// The first line end inside it was a `\r` and the next byte is not seen
    /// yet: a `\n` there belongs to that line end, not to the replay.
    awaiting_lf: bool,
}

/// One record being parsed: its unquoted field bytes, kept while the record is
/// at most `max_bytes` long (longer records are consumed but not kept).
pub(super) struct QuotedRecord {
    state: State,
    /// The fields' bytes, one after another.
    data: Vec<u8>,
    /// End of each of the first five fields in `data`.
    ends: [usize; 5],
    fields: usize,
    /// Raw bytes of the record consumed so far (quotes and quoted line breaks included).
    raw_len: usize,
    max_bytes: usize,
    /// Line breaks inside quotes (`\r\n` counts once), for the next record's line number.
    pub(super) inner_lines: u64,
    last_was_cr: bool,
    /// The record ended on a `\r` (a `\n` right after it belongs to the same line end).
    pub(super) ended_on_cr: bool,
    open: OpenQuote,
    /// Raw bytes after the first line end inside the open quote (at most `max_bytes`).
    replay: Vec<u8>,
    /// The open quote was given up with no line end inside it: the record ends
    /// at the next line end, quotes or not.
    skip_to_line_end: bool,
    pub(super) unterminated: Option<Unterminated>,
}

impl QuotedRecord {
    pub(super) fn new(max_bytes: usize) -> Self {
        QuotedRecord {
            state: State::StartField,
            data: Vec::with_capacity(max_bytes),
            ends: [0; 5],
            fields: 0,
            raw_len: 0,
            max_bytes,
            inner_lines: 0,
            last_was_cr: false,
            ended_on_cr: false,
            open: OpenQuote::default(),
            replay: Vec::with_capacity(max_bytes),
            skip_to_line_end: false,
            unterminated: None,
        }
    }

    /// Starts a record (its first byte is not a line end).
    pub(super) fn reset(&mut self) {
        self.state = State::StartField;
        self.data.clear();
        self.fields = 0;
        self.raw_len = 0;
        self.inner_lines = 0;
        self.last_was_cr = false;
        self.ended_on_cr = false;
        self.open = OpenQuote::default();
        self.replay.clear();
        self.skip_to_line_end = false;
        self.unterminated = None;
    }

    /// Consumes bytes of the record; returns how many were consumed and whether
    /// the record ended (its line end consumed too).
    pub(super) fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        for (i, &b) in input.iter().enumerate() {
            if self.skip_to_line_end {
                if b == b'\r' || b == b'\n' {
                    self.ended_on_cr = b == b'\r';
                    return (i + 1, true);
                }
                continue;
            }
            self.raw_len = self.raw_len.saturating_add(1);
            let keep = self.raw_len <= self.max_bytes;
            let after_cr = std::mem::replace(&mut self.last_was_cr, false);
            if self.open.capturing {
                let lf_of_first_end = std::mem::take(&mut self.open.awaiting_lf) && b == b'\n';
                if !lf_of_first_end && self.replay.len() < self.max_bytes {
                    self.replay.push(b);
                }
            }
            if self.state == State::QuoteInQuotes && b != b'"' && self.open.capturing {
                // The quote closed: it was not unterminated after all.
                self.open.capturing = false;
                self.replay.clear();
            }
            match (self.state, b) {
                (State::InQuotes, b'"') => self.state = State::QuoteInQuotes,
                (State::InQuotes, _) => {
                    if b == b'\r' || (b == b'\n' && !after_cr) {
                        self.inner_lines += 1;
                        self.open.lines += 1;
                        if !self.open.capturing {
                            self.open.capturing = true;
                            self.open.awaiting_lf = b == b'\r';
                        }
                    }
                    self.last_was_cr = b == b'\r';
                    self.push(keep, b);
                    if !keep {
                        return (i + 1, self.give_up(false));
                    }
                }
                (State::StartField, b'"') => {
                    self.state = State::InQuotes;
                    self.open = OpenQuote { opened_after: self.inner_lines, ..OpenQuote::default() };
                    self.replay.clear();
                    if !keep {
                        return (i + 1, self.give_up(false));
                    }
                }
                (State::QuoteInQuotes, b'"') => {
                    self.state = State::InQuotes;
                    self.push(keep, b);
                }
                (_, b',') => {
                    self.end_field();
                    self.state = State::StartField;
                }
                (_, b'\r' | b'\n') => {
                    // The line end is not part of the record's length.
                    self.raw_len -= 1;
                    self.end_field();
                    self.ended_on_cr = b == b'\r';
                    return (i + 1, true);
                }
                (_, _) => {
                    self.state = State::InField;
                    self.push(keep, b);
                }
            }
        }
        (input.len(), false)
    }

    /// The open quote is given up (the row limit, or `at_eof`): the record ends
    /// at the first line end inside the quote, or else at the next line end.
    /// Returns whether the record has ended.
    fn give_up(&mut self, at_eof: bool) -> bool {
        let (opened_after, lines, capturing) = (self.open.opened_after, self.open.lines, self.open.capturing);
        self.unterminated = Some(Unterminated { opened_after, lines, at_eof });
        self.end_field();
        if capturing || at_eof {
            // Replay starts after the quote's first line end (a `\n` not seen
            // yet after its `\r` still belongs to it).
            self.ended_on_cr = self.open.awaiting_lf;
            return true;
        }
        self.skip_to_line_end = true;
        false
    }

    /// The file ended inside the record: it ends here, as its last field does.
    pub(super) fn finish(&mut self) {
        if self.state == State::InQuotes && !self.skip_to_line_end {
            self.give_up(true);
        } else if !self.skip_to_line_end {
            self.end_field();
        }
    }

    /// The bytes to read again after an unterminated quote (empty otherwise).
    pub(super) fn replay(&self) -> &[u8] {
        match self.unterminated {
            Some(_) => &self.replay,
            None => &[],
        }
    }

    fn push(&mut self, keep: bool, b: u8) {
        if keep {
            self.data.push(b);
        }
    }

    fn end_field(&mut self) {
        if self.fields < self.ends.len() {
            self.ends[self.fields] = self.data.len();
        }
        self.fields += 1;
    }

    /// Whether the record was longer than `max_bytes` (its fields were not kept).
    pub(super) fn too_long(&self) -> bool {
        self.raw_len > self.max_bytes
    }

    pub(super) fn field_count(&self) -> usize {
        self.fields
    }

    /// The five fields, when the record has exactly five and was kept.
    pub(super) fn fields(&self) -> Option<[&[u8]; 5]> {
        if self.fields != 5 || self.too_long() {
            return None;
        }
        let e = self.ends;
        let d = &self.data[..];
        Some([&d[..e[0]], &d[e[0]..e[1]], &d[e[1]..e[2]], &d[e[2]..e[3]], &d[e[3]..e[4]]])
    }
}
