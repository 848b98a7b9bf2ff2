//! The draw's scan of the stored file.

use super::*;

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
