//! The reader against the csv crate it replaced: random agency files (plain,
//! quoted, accented, CRLF/LF/CR, empty lines, bad rows, a BOM, no final line
//! end) must give the same bets and the same bad rows with the same reasons.
//! The oracle is the csv-based reader the client used before, with one fix:
//! a row's line is counted from the file's bytes, so empty lines count (the old
//! reader counted records, so a row after an empty line got a line too small).

use super::*;
use crate::bet::Bet;
use proptest::prelude::*;

#[derive(Debug, PartialEq)]
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

/// The previous reader (csv crate), reading `data` as if from `path`.
fn oracle(path: &Path, data: &[u8]) -> Vec<Outcome> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data);
    let mut record = csv::ByteRecord::new();
    let mut out = Vec::new();
    let mut prev_end = if data.starts_with(BOM) { BOM.len() } else { 0 };
    while reader.read_byte_record(&mut record).unwrap() {
        let mut start = prev_end;
        while start < data.len() && matches!(data[start], b'\r' | b'\n') {
            start += 1;
        }
        let line = 1 + count_lines(&data[..start]);
        prev_end = reader.position().byte() as usize;
        let bad = |reason: String| Outcome::Bad(format!("{}:{line}: {reason}", path.display()));
        if record.len() != 5 {
            out.push(bad(format!(
                "expected 5 fields (first_name,last_name,document,birthdate,number), found {}",
                record.len()
            )));
            continue;
        }
        let mut fields = [""; 5];
        let mut utf8_error = None;
        for (i, raw) in record.iter().enumerate() {
            match std::str::from_utf8(raw) {
                Ok(s) => fields[i] = s,
                Err(_) => {
                    let name = ["first_name", "last_name", "document", "birthdate", "number"][i];
                    utf8_error = Some(format!("{name} is not valid UTF-8"));
                    break;
                }
            }
        }
        if let Some(reason) = utf8_error {
            out.push(bad(reason));
            continue;
        }
        out.push(match BetRef::parse(fields[0], fields[1], fields[2].trim(), fields[3].trim(), fields[4].trim()) {
            Ok(bet) => Outcome::Bet(bet.to_bet()),
            Err(e) => bad(e.to_string()),
        });
    }
    out
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
                Outcome::Bad(format!("{name}:2: the row is longer than {MAX_ROW_BYTES} bytes")),
                Outcome::Bet(Bet::from_fields("A", "B", "3", "1990-01-01", "3").unwrap()),
                Outcome::Bet(Bet::from_fields("A", "B", "4", "1990-01-01", "4").unwrap()),
            ]
        );
    }
}
