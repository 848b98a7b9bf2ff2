//! Unit tests of the bets file: the row format, repair, recount, scan and draw.

use super::*;
use crate::bet::{Bet, Date};

fn bet(first: &str, last: &str, doc: &str, number: u16) -> Bet {
    Bet {
        first_name: first.into(),
        last_name: last.into(),
        document: doc.into(),
        birthdate: Date::new(2000, 2, 29).unwrap(),
        number,
    }
}

#[test]
fn append_and_load_round_trip_awkward_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/bets.csv");
    let bets = [
        bet("O'Brien, Jr", "Núñez \"el Tano\"", "00000042", 7574),
        bet("Ana; María", "Pérez | Gómez", "1", 1),
        bet("Zoë", "Ñandú", "35635602", 7574),
    ];
    let (mut file, rec) = BetFile::open(&path).unwrap();
    assert!(rec.per_agency.is_empty());
    file.append(3, bets.iter().map(|b| RawBet::from(b.as_ref()))).unwrap();
    file.append(1, bets[1..2].iter().map(|b| RawBet::from(b.as_ref()))).unwrap();
    file.sync().unwrap();
    drop(file);

    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_path(&path).unwrap();
    let loaded: Vec<(AgencyId, Bet)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let bet = Bet {
                first_name: r[1].to_string(),
                last_name: r[2].to_string(),
                document: r[3].to_string(),
                birthdate: Date::parse(&r[4]).unwrap(),
                number: r[5].parse().unwrap(),
            };
            (r[0].parse().unwrap(), bet)
        })
        .collect();
    assert_eq!(loaded.len(), 4);
    assert_eq!(loaded[0], (3, bets[0].clone()));
    assert_eq!(loaded[3], (1, bets[1].clone()));

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("3,\"O'Brien, Jr\",\"Núñez \"\"el Tano\"\"\",00000042,2000-02-29,7574\n"), "{text}");
    assert!(text.contains("\n3,Zoë,Ñandú,35635602,2000-02-29,7574\n"), "only needed quoting: {text}");

    let (winners, rows) = draw(&path, 7574).unwrap();
    assert_eq!(rows, 4);
    assert_eq!(winners.get(&3).unwrap(), &vec!["00000042".to_string(), "35635602".to_string()]);
    assert!(!winners.contains_key(&1));

    let (_, rec) = BetFile::open(&path).unwrap();
    assert_eq!(rec.per_agency.get(&3), Some(&3));
    assert_eq!(rec.per_agency.get(&1), Some(&1));
}

fn csv_crate_row(agency: AgencyId, bet: &Bet) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(&mut out);
        let (date, number) = (bet.birthdate.to_string(), bet.number.to_string());
        w.write_record([&agency.to_string(), &bet.first_name, &bet.last_name, &bet.document, &date, &number]).unwrap();
    }
    out
}

proptest::proptest! {
    #[test]
    fn rows_match_the_csv_crate_byte_for_byte(
        agency in 1u32..100_000,
        first in "[^\\p{Cc}]{1,30}",
        last in "[a-zA-Z ,;|\"'áéíóúñÑ]{1,30}",
        doc in "[0-9]{1,16}",
        (y, m, d) in (1000u16..=9999, 1u8..=12, 1u8..=28),
        number in 0u16..=9999,
    ) {
        let bet = Bet { first_name: first, last_name: last, document: doc, birthdate: Date::new(y, m, d).unwrap(), number };
        let mut ours = Vec::new();
        render_row(&mut ours, agency, &bet.as_ref());
        proptest::prop_assert_eq!(String::from_utf8(ours.clone()).unwrap(), String::from_utf8(csv_crate_row(agency, &bet)).unwrap());
        let keys = parse_row_keys(&ours[..ours.len() - 1]).unwrap();
        proptest::prop_assert_eq!(keys.agency, agency);
        proptest::prop_assert_eq!(keys.document, bet.document.as_bytes());
        let number_text = bet.number.to_string();
        proptest::prop_assert_eq!(keys.number, number_text.as_bytes());
    }
}

#[test]
fn malformed_rows_are_named() {
    assert!(parse_row_keys(b"1,A,B,12,2000-01-01,7574").is_ok());
    assert!(parse_row_keys(b"1,\"A, x\",B,12,2000-01-01,7574").is_ok());
    for bad in [
        &b"x,A,B,12,2000-01-01,1"[..],
        b"1,A,B,1a,2000-01-01,1",
        b"1,A,B,12,2000-1-01,1",
        b"1,A,B,12,2000-01-01,12345",
        b"1,12,2000-01-01,1",
        b"",
    ] {
        assert!(parse_row_keys(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn torn_last_row_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    std::fs::write(&path, "1,A,B,1,2000-01-01,1\n1,A,B,2,2000-01-01,2\n2,Half,Ro").unwrap();
    let (_, rec) = BetFile::open(&path).unwrap();
    assert_eq!(rec.repaired_bytes, 9);
    assert_eq!(rec.per_agency.get(&1), Some(&2));
    assert!(!rec.per_agency.contains_key(&2));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "1,A,B,1,2000-01-01,1\n1,A,B,2,2000-01-01,2\n");
}

#[test]
fn a_corrupt_row_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    std::fs::write(&path, "1,A,B,1,2000-01-01,1\nx,A,B,1,2000-01-01,1\n").unwrap();
    let err = BetFile::open(&path).err().unwrap().to_string();
    assert!(err.contains(":2:") && err.contains("agency"), "{err}");
}

/// The draw's scan against a line-by-line reference: rows across 1 MiB reads,
/// CRLF rows, numbers that only end in the winning one, a last row with no
/// newline, and a bad winning row named by its line.
#[test]
fn draw_scan_matches_a_line_by_line_reference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let mut rng = crate::datagen::Rng::new(9);
    let mut text = String::new();
    let mut expected: HashMap<AgencyId, Vec<String>> = HashMap::new();
    let mut rows = 0u64;
    while text.len() < 3 << 20 {
        let agency = 1 + rng.below(7) as AgencyId;
        let number = [7574, 17574, 757, 574, 7575, rng.below(10_000)][rng.index(6)];
        let document = format!("{:08}", rng.below(100_000_000));
        let end = if rng.below(3) == 0 { "\r\n" } else { "\n" };
        text.push_str(&format!("{agency},\"Pé, \"\"x\"\"\",Ñu,{document},2000-02-29,{number}{end}"));
        rows += 1;
        if number == 7574 {
            expected.entry(agency).or_default().push(document);
        }
    }
    text.push_str("2,A,B,7574,2000-01-01,7574");
    expected.entry(2).or_default().push("7574".into());
    std::fs::write(&path, &text).unwrap();
    let (winners, counted) = draw(&path, 7574).unwrap();
    assert_eq!(counted, rows + 1);
    assert_eq!(winners, expected);
    // The same in two halves, and in two halves read 4 KiB at a time.
    for chunk in [DRAW_CHUNK, 4096] {
        assert_eq!(draw_split(&path, 7574, 1, chunk).unwrap(), (expected.clone(), rows + 1));
    }

    std::fs::write(&path, format!("{text}\n1,A,B,12x,2000-01-01,7574\n")).unwrap();
    match draw(&path, 7574) {
        Err(StorageError::Corrupt { line, .. }) => assert_eq!(line, rows + 2),
        other => panic!("expected a corrupt row, got {other:?}"),
    }
}

/// The draw in two halves (forced on small files here) finds the same winners
/// in the same order, counts the same rows and names the same line of a bad
/// row as the draw in one pass, wherever the cut falls: files of random rows
/// (quoted names, CRLF and LF, winners and near misses), with or without a
/// last line end, with a bad winning row in the first or the second half.
#[test]
fn the_draw_in_two_halves_is_the_draw_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    for seed in 0..40u64 {
        let mut rng = crate::datagen::Rng::new(seed);
        let mut lines: Vec<String> = Vec::new();
        for _ in 0..(1 + rng.below(400)) {
            let agency = 1 + rng.below(5) as AgencyId;
            let number = [7574, 17574, 757, 574, rng.below(10_000)][rng.index(5)];
            let document = format!("{:08}", rng.below(100_000_000));
            let name = ["Ana", "\"Pé, \"\"x\"\"\"", "Ñu"][rng.index(3)];
            let end = if rng.below(3) == 0 { "\r\n" } else { "\n" };
            lines.push(format!("{agency},{name},B,{document},2000-02-29,{number}{end}"));
        }
        let bad = rng.index(3); // 0: none, 1: in the first half, 2: in the second half
        if bad > 0 {
            let at = if bad == 1 {
                rng.index(lines.len() / 2 + 1)
            } else {
                lines.len() / 2 + rng.index(lines.len() / 2 + 1)
            };
            lines.insert(at.min(lines.len()), "3,A,B,12x,2000-01-01,7574\n".into());
        }
        let mut text: String = lines.concat();
        if rng.below(2) == 0 {
            text.push_str("2,A,B,7574,2000-01-01,7574");
        }
        std::fs::write(&path, &text).unwrap();
        // Chunks smaller than the file (rows cut between reads in both halves),
        // and smaller than some rows (each half says so at the same line).
        for chunk in [DRAW_CHUNK, 256, 48] {
            let whole = draw_split(&path, 7574, u64::MAX, chunk);
            let halves = draw_split(&path, 7574, 1, chunk);
            match (whole, halves) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "seed {seed}, chunk {chunk}"),
                (
                    Err(StorageError::Corrupt { line: a, reason: ra, .. }),
                    Err(StorageError::Corrupt { line: b, reason: rb, .. }),
                ) => assert_eq!((a, ra), (b, rb), "seed {seed}, chunk {chunk}"),
                (a, b) => panic!("seed {seed}, chunk {chunk}: {a:?} vs {b:?}"),
            }
        }
    }
}
