//! The reader against the csv crate it replaced: random agency files (plain,
//! quoted, accented, CRLF/LF/CR, empty lines, bad rows, a BOM, no final line
//! end) must give the same bets and the same bad rows with the same reasons.
//! The oracle is the csv-based reader the client used before, with one fix:
//! a row's line is counted from the file's bytes, so empty lines count (the old
//! reader counted records, so a row after an empty line got a line too small),
//! and one departure: a quote still open at the end of the file is an
//! unterminated quote, and reading goes on at the line after the one where it
//! opened (the csv crate swallows the rest of the file into one record).

use super::*;
use crate::bet::Bet;
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Bet(Bet),
    Bad(String),
}

/// Lines before `prefix`'s end: `\n`, `\r\n` and a lone `\r` each end one.
fn count_lines(prefix: &[u8]) -> u64 {
    let mut lines = 0;
    for (i, &b) in prefix.iter().enumerate() {
        if b == b'\r' || (b == b'\n' && (i == 0 || prefix[i - 1] != b'\r')) {
            lines += 1;
        }
    }
    lines
}

/// Where the quote opens that is still open at the end of `data`, when the
/// record starting at `data[0]` runs to the end inside quotes (csv rules: a
/// quote opens a quoted section only at the start of a field, `""` inside is data).
fn open_quote_at_eof(data: &[u8]) -> Option<usize> {
    let (mut field_start, mut quoted, mut opened, mut i) = (true, false, 0, 0);
    while let Some(&b) = data.get(i) {
        if quoted {
            if b == b'"' {
                if data.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    quoted = false;
                }
            }
        } else {
            match b {
                b',' => field_start = true,
                b'"' if field_start => (quoted, opened, field_start) = (true, i, false),
                b'\r' | b'\n' => return None,
                _ => field_start = false,
            }
        }
        i += 1;
    }
    quoted.then_some(opened)
}

/// The previous reader (csv crate), reading `data` as if from `path`, with the
/// unterminated quote's resynchronisation.
fn oracle(path: &Path, data: &[u8]) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut at = if data.starts_with(BOM) { BOM.len() } else { 0 };
    loop {
        let mut start = at;
        while start < data.len() && matches!(data[start], b'\r' | b'\n') {
            start += 1;
        }
        if start >= data.len() {
            return out;
        }
        let line = 1 + count_lines(&data[..start]);
        let bad = |reason: String| Outcome::Bad(format!("{}:{line}: {reason}", path.display()));
        if let Some(quote) = open_quote_at_eof(&data[start..]).map(|q| start + q) {
            let opened = 1 + count_lines(&data[..quote]);
            let lines = count_lines(&data[quote..]);
            let lines = if lines == 1 { "1 line".to_string() } else { format!("{lines} lines") };
            out.push(bad(format!(
                "unterminated quote: the quote opened on line {opened} runs over {lines} to the end of the file; \
                 reading goes on at line {}",
                opened + 1
            )));
            let Some(end) = data[quote..].iter().position(|&b| b == b'\r' || b == b'\n') else { return out };
            at = quote + end + 1;
            if data[at - 1] == b'\r' && data.get(at) == Some(&b'\n') {
                at += 1;
            }
            continue;
        }
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(&data[start..]);
        let mut record = csv::ByteRecord::new();
        assert!(reader.read_byte_record(&mut record).unwrap());
        at = start + reader.position().byte() as usize;
        out.push(oracle_row(&record, bad));
    }
}

/// One record as the previous reader judged it.
fn oracle_row(record: &csv::ByteRecord, bad: impl Fn(String) -> Outcome) -> Outcome {
    if record.len() != 5 {
        return bad(format!(
            "expected 5 fields (first_name,last_name,document,birthdate,number), found {}",
            record.len()
        ));
    }
    let mut fields = [""; 5];
    for (i, raw) in record.iter().enumerate() {
        match std::str::from_utf8(raw) {
            Ok(s) => fields[i] = s,
            Err(_) => {
                let name = ["first_name", "last_name", "document", "birthdate", "number"][i];
                return bad(format!("{name} is not valid UTF-8"));
            }
        }
    }
    match BetRef::parse(fields[0], fields[1], fields[2].trim(), fields[3].trim(), fields[4].trim()) {
        Ok(bet) => Outcome::Bet(bet.to_bet()),
        Err(e) => bad(e.to_string()),
    }
}

fn read_all(path: &Path, buffer: usize, max_row: usize) -> Vec<Outcome> {
    let mut reader = BetReader::with_limits(path, buffer, max_row).unwrap();
    let mut out = Vec::new();
    while let Some(row) = reader.next_bet().unwrap() {
        out.push(match row {
            Ok(bet) => Outcome::Bet(bet.to_bet()),
            Err(e) => Outcome::Bad(e.to_string()),
        });
    }
    out
}

fn pick(options: &[&str]) -> impl Strategy<Value = Vec<u8>> {
    let options: Vec<Vec<u8>> = options.iter().map(|s| s.as_bytes().to_vec()).collect();
    prop::sample::select(options)
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    let long = "a".repeat(256);
    let options: Vec<Vec<u8>> = [
        "Ana",
        "José Luis",
        "Núñez",
        "",
        "  ",
        "O'Brien",
        "\"Comma, Inc\"",
        "\"Say \"\"hi\"\"\"",
        "\"Two\nlines\"",
        "\"Two\r\nlines\"",
        "\"Lone\rcr\"",
        "Tab\tX",
        "\u{85}x",
        "\u{a0}",
        "x\"y",
        "\"ab\"cd",
        "\"\"",
        "\"a\"\"",
        &long,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([b"\xff".to_vec(), b"\"P\xc3rez\"".to_vec()])
    .collect();
    prop::sample::select(options)
}

fn row() -> impl Strategy<Value = Vec<u8>> {
    let document = pick(&["00000042", " 42 ", "12a", "", "12345678901234567", "\u{a0}7\u{a0}", "\"7\"", "7\u{3000}"]);
    let date = pick(&["1990-01-31", "2000-02-29", "1990-02-30", " 1990-01-01 ", "1990-1-01", "\"1990-01-01\"", "x"]);
    let number = pick(&["0", "9999", "10000", " 7 ", "-1", "", "07", "\"12\"", "1.5", "\u{a0}3"]);
    let fields = (name(), name(), document, date, number, 0..8usize);
    let valid = fields.prop_map(|(first, last, document, date, number, shape)| {
        let mut fields = vec![first, last, document, date, number];
        match shape {
            0 => drop(fields.pop()),
            1 => fields.push(b"extra".to_vec()),
            _ => {}
        }
        fields.join(&b","[..])
    });
    let garbage = prop::collection::vec(
        prop::sample::select(vec![b'a', b',', b'"', b'\r', b'\n', b' ', b'1', b'-', 0xff, 0xc3, 0xa9, b'9']),
        0..40,
    );
    let body = prop_oneof![6 => valid, 1 => garbage];
    let end = pick(&["\n", "\r\n", "\r", "", "\n\n", "\r\n\r\n", "\n\r"]);
    (body, end).prop_map(|(mut body, end)| {
        body.extend_from_slice(&end);
        body
    })
}

fn file() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), prop::collection::vec(row(), 0..30)).prop_map(|(bom, rows)| {
        let mut data = if bom { BOM.to_vec() } else { Vec::new() };
        for r in rows {
            data.extend_from_slice(&r);
        }
        data
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn same_rows_as_the_csv_crate(data in file(), buffer in prop::sample::select(vec![4usize, 7, 16, 100, 65536])) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency-1.csv");
        std::fs::write(&path, &data).unwrap();
        // Rows here are far below the limit (an unclosed quote may take the rest of the file).
        let got = read_all(&path, buffer, 1 << 20);
        prop_assert_eq!(got, oracle(&path, &data));
    }
}

#[test]
fn empty_lines_lone_cr_bom_and_no_final_line_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-2.csv");
    let data = b"\xef\xbb\xbfA,B,1,1990-01-01,1\r\n\r\nBad\rA,\"B\nC\",2,1990-01-01,2\n\nX,Y\r\n\nA,B,3,1990-01-01,3";
    std::fs::write(&path, data).unwrap();
    let got = read_all(&path, 8, MAX_ROW_BYTES);
    assert_eq!(got, oracle(&path, data));
    let lines: Vec<String> = got
        .iter()
        .map(|o| match o {
            Outcome::Bet(b) => format!("bet {}", b.number),
            Outcome::Bad(e) => e.split(": ").next().unwrap_or_default().to_string(),
        })
        .collect();
    let name = path.display().to_string();
    // Line 4's row spans lines 4 and 5 (its last name holds a line break, a control character).
    let expected = ["bet 1".into(), format!("{name}:3"), format!("{name}:4"), format!("{name}:7"), "bet 3".into()];
    assert_eq!(lines, expected);
}

#[test]
fn rows_over_the_limit_are_refused_and_the_next_line_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-3.csv");
    let pad = " ".repeat(MAX_ROW_BYTES);
    let mut data = format!("A,B,1,1990-01-01,{pad}1\r\n").into_bytes();
    data.extend_from_slice(format!("A,\"B\n{pad}\nC\",2,1990-01-01,2\nA,B,3,1990-01-01,3\n").as_bytes());
    data.extend_from_slice(format!("A,B,4,1990-01-01,{}4\n", " ".repeat(MAX_ROW_BYTES - 19)).as_bytes());
    std::fs::write(&path, &data).unwrap();
    for buffer in [64, BUFFER_BYTES] {
        let got = read_all(&path, buffer, MAX_ROW_BYTES);
        let name = path.display();
        assert_eq!(
            got,
            [
                Outcome::Bad(format!("{name}:1: the row is longer than {MAX_ROW_BYTES} bytes")),
                // A quote may not stay open past the row limit: it is given up,
                // and its other lines are read as rows.
                Outcome::Bad(format!(
                    "{name}:2: unterminated quote: the quote opened on line 2 runs over 1 line and is still open \
                     at the row limit of {MAX_ROW_BYTES} bytes; reading goes on at line 3"
                )),
                Outcome::Bad(format!("{name}:3: {}", row::field_count_reason(1))),
                Outcome::Bad(format!("{name}:4: {}", row::field_count_reason(4))),
                Outcome::Bet(Bet::from_fields("A", "B", "3", "1990-01-01", "3").unwrap()),
                Outcome::Bet(Bet::from_fields("A", "B", "4", "1990-01-01", "4").unwrap()),
            ]
        );
    }
}

/// A stray quote in a file of plain rows, far more than the row limit of them
/// after it: one bad row, and every other row read, whatever the buffer size
/// and line ends.
#[test]
fn a_stray_quote_costs_its_row_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-4.csv");
    let name = path.display();
    for end in ["\n", "\r\n", "\r"] {
        let rows: Vec<String> = (0..400).map(|i| format!("A,B,{i},1990-01-01,{}", i % 10_000)).collect();
        let mut lines = rows.clone();
        lines[10] = "Ana,\"Stray,11,1990-01-01,11".to_string();
        let data = lines.join(end) + end;
        std::fs::write(&path, &data).unwrap();
        for buffer in [4, 64, 5000, BUFFER_BYTES] {
            let got = read_all(&path, buffer, MAX_ROW_BYTES);
            assert_eq!(got.len(), 400, "{end:?} {buffer}");
            let Outcome::Bad(reason) = &got[10] else { panic!("line 11 read as a bet") };
            let start = lines[..10].iter().map(|l| l.len() + end.len()).sum::<usize>();
            let over = count_lines(&data.as_bytes()[start..=start + MAX_ROW_BYTES]);
            let want = format!(
                "{name}:11: unterminated quote: the quote opened on line 11 runs over {over} lines and is still \
                 open at the row limit of {MAX_ROW_BYTES} bytes; reading goes on at line 12"
            );
            assert_eq!(reason, &want);
            for (i, row) in got.iter().enumerate().filter(|(i, _)| *i != 10) {
                let f: Vec<&str> = rows[i].split(',').collect();
                assert_eq!(row, &Outcome::Bet(Bet::from_fields(f[0], f[1], f[2], f[3], f[4]).unwrap()), "{i}");
            }
        }
        // Near the end of the file, the quote runs to the end of the file.
        lines[10] = rows[10].clone();
        lines[397] = "Ana,\"Stray,397,1990-01-01,397".to_string();
        std::fs::write(&path, lines.join(end) + end).unwrap();
        let got = read_all(&path, 64, MAX_ROW_BYTES);
        assert_eq!(got.len(), 400);
        assert_eq!(got, oracle(&path, (lines.join(end) + end).as_bytes()));
        assert_eq!(
            got[397],
            Outcome::Bad(format!(
                "{name}:398: unterminated quote: the quote opened on line 398 runs over 3 lines to the end of the \
                 file; reading goes on at line 399"
            ))
        );
    }
}

/// A quote that opens past the row limit, on a line with no line end inside
/// it, ends its row at the next line end; and one on a later line of a row is
/// reported at the row's first line, naming the line where it opened.
#[test]
fn a_quote_past_the_limit_and_a_quote_on_a_later_line_of_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-5.csv");
    let name = path.display();
    let pad = " ".repeat(MAX_ROW_BYTES);
    let data = format!("A,B,1,1990-01-01,1{pad},\"x\nA,B,2,1990-01-01,2\nA,\"B\nC\",\"D\nA,B,3,1990-01-01,3\n");
    std::fs::write(&path, &data).unwrap();
    for buffer in [16, BUFFER_BYTES] {
        let got = read_all(&path, buffer, MAX_ROW_BYTES);
        let bet = |n: &str| Outcome::Bet(Bet::from_fields("A", "B", n, "1990-01-01", n).unwrap());
        assert_eq!(
            got,
            [
                Outcome::Bad(format!(
                    "{name}:1: unterminated quote: the quote opened on line 1 runs over 0 lines and is still open at \
                     the row limit of {MAX_ROW_BYTES} bytes; reading goes on at line 2"
                )),
                bet("2"),
                Outcome::Bad(format!(
                    "{name}:3: unterminated quote: the quote opened on line 4 runs over 2 lines to the end of the \
                     file; reading goes on at line 5"
                )),
                bet("3"),
            ]
        );
    }
}
