//! The general CSV record parser, for rows the fast path cannot split on commas
//! alone: quoted fields (RFC 4180, `""` for a quote, separators and line breaks
//! inside quotes) and rows longer than what is buffered. It follows the csv
//! crate's rules byte for byte (a quote opens a quoted section only at the start
//! of a field; text after a closing quote is kept; a `\r`, `\n` or `\r\n` outside
//! quotes ends the record; the end of the file ends an open quote), and it is fed
//! chunk by chunk so a record may span buffer refills while memory stays bounded.

/// Where the parser is inside a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    StartField,
    InField,
    InQuotes,
    /// A quote inside quotes: a second quote makes it data, anything else closes the quotes.
    QuoteInQuotes,
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
    }

    /// Consumes bytes of the record; returns how many were consumed and whether
    /// the record ended (its line end consumed too).
    pub(super) fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        for (i, &b) in input.iter().enumerate() {
            self.raw_len = self.raw_len.saturating_add(1);
            let keep = self.raw_len <= self.max_bytes;
            let after_cr = std::mem::replace(&mut self.last_was_cr, false);
            match (self.state, b) {
                (State::InQuotes, b'"') => self.state = State::QuoteInQuotes,
                (State::InQuotes, _) => {
                    if b == b'\r' || (b == b'\n' && !after_cr) {
                        self.inner_lines += 1;
                    }
                    self.last_was_cr = b == b'\r';
                    self.push(keep, b);
                }
                (State::StartField, b'"') => self.state = State::InQuotes,
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

    /// The file ended inside the record: it ends here, as its last field does.
    pub(super) fn finish(&mut self) {
        self.end_field();
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
