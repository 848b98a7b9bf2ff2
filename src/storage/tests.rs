//! Unit tests of the bets file: the row format, repair, recount, scan and draw.

use super::*;
use crate::bet::{Bet, Date};
use std::io;

mod draw;

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

/// A store of `groups` sync groups of agency 1..=3's rows, sealed with `key`.
fn sealed_store(path: &Path, spec: &StoreSpec, groups: usize, rows_per_group: u64) -> BetFile {
    let (mut file, _) = BetFile::open_with(path, &plain(), spec).unwrap();
    let mut n = 0u64;
    for _ in 0..groups {
        for _ in 0..rows_per_group {
            let b = bet(
                if n.is_multiple_of(5) { "Ana, \"la\" Jr" } else { "Ana" },
                "Pérez",
                &format!("{:08}", 30_000_000 + n),
                (n % 10_000) as u16,
            );
            file.append((n % 3 + 1) as u32, [RawBet::from(b.as_ref())]).unwrap();
            n += 1;
        }
        file.sync().unwrap();
    }
    file
}

fn keyed(agencies: u32) -> StoreSpec {
    StoreSpec { agencies, key: Some(std::sync::Arc::new(ChainKey::from_bytes([7; 32]))), sidecar: true }
}

/// Each group's byte range and first line, read back from the sidecar.
fn groups_of(path: &Path) -> Vec<(u64, u64, u64)> {
    let side = std::fs::read(integrity::sidecar_path(path)).unwrap();
    let (mut first, mut at, mut out) = (1, 0, Vec::new());
    while at < side.len() {
        let rec = integrity::Record::decode(side[at..at + integrity::RECORD_LEN].try_into().unwrap()).unwrap();
        out.push((rec.start, rec.end, first));
        first += rec.rows;
        at += rec.sidecar_len() as usize;
    }
    out
}

#[test]
fn a_torn_or_unsealed_tail_past_the_last_seal_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    drop(sealed_store(&path, &keyed(3), 2, 4));
    let sealed = std::fs::read(&path).unwrap();
    // A crash after a write and before its seal: whole rows and a torn one.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    io::Write::write_all(&mut f, b"1,A,B,1,2000-01-01,1\n2,Half,Ro").unwrap();
    let (file, rec) = BetFile::open_with(&path, &plain(), &keyed(3)).unwrap();
    assert_eq!(rec.repaired_bytes, 30);
    assert_eq!(rec.per_agency.values().sum::<u64>(), 8);
    assert_eq!((rec.groups, std::fs::read(&path).unwrap()), (2, sealed));
    // A torn sidecar record is cut the same way.
    let head = file.head();
    drop(file);
    let mut side = OpenOptions::new().append(true).open(integrity::sidecar_path(&path)).unwrap();
    io::Write::write_all(&mut side, &[1u8; 20]).unwrap();
    let (file, rec) = BetFile::open_with(&path, &plain(), &keyed(3)).unwrap();
    assert_eq!((rec.repaired_bytes, file.head()), (20, head));
}

/// Both files of a group are synced at once: a crash between the two syncs can
/// leave the last record on disk and its rows only in part. That group was never
/// acknowledged, so opening cuts it; a record past the end anywhere else is a cut file.
#[test]
fn a_last_record_whose_rows_did_not_reach_the_disk_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    drop(sealed_store(&path, &keyed(3), 2, 4));
    let (head, two_groups) = {
        let (file, _) = BetFile::open_with(&path, &plain(), &keyed(3)).unwrap();
        (file.head(), std::fs::read(&path).unwrap())
    };
    drop(sealed_store(&path, &keyed(3), 1, 4));
    let groups = groups_of(&path);
    assert_eq!(groups.len(), 3);
    let side_len = std::fs::metadata(integrity::sidecar_path(&path)).unwrap().len();
    // The third group's rows reached the disk only up to the middle of its second row.
    let torn_at = groups[2].0 + (groups[2].1 - groups[2].0) / 3;
    OpenOptions::new().write(true).open(&path).unwrap().set_len(torn_at).unwrap();
    let (file, rec) = BetFile::open_with(&path, &plain(), &keyed(3)).unwrap();
    assert_eq!((rec.groups, rec.per_agency.values().sum::<u64>()), (2, 8));
    // The third group's record: its fixed part and its 4 row CRCs.
    let third = (integrity::RECORD_LEN + 4 * integrity::ROW_CRC_LEN) as u64;
    assert_eq!(rec.repaired_bytes, torn_at - groups[2].0 + third);
    assert_eq!((file.head(), std::fs::read(&path).unwrap()), (head, two_groups));
    assert_eq!(std::fs::metadata(integrity::sidecar_path(&path)).unwrap().len(), side_len - third);
}

#[test]
fn a_cut_store_a_missing_sidecar_and_a_wrong_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    drop(sealed_store(&path, &keyed(3), 3, 5));
    let groups = groups_of(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    let other_key = StoreSpec { key: Some(std::sync::Arc::new(ChainKey::from_bytes([8; 32]))), ..keyed(3) };
    let err = BetFile::open_with(&path, &plain(), &other_key).err().unwrap().to_string();
    assert!(err.contains("group 1 (bytes 0..") && err.contains("chain head"), "{err}");
    let err = BetFile::open_with(&path, &plain(), &keyed(2)).err().unwrap().to_string();
    assert!(err.contains("agency \"3\" is not in 1..=2"), "{err}");

    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    let err = BetFile::open_with(&path, &plain(), &keyed(3)).err().unwrap().to_string();
    let cut_group = groups.iter().position(|g| g.1 > len / 2).unwrap();
    let (start, end, first) = groups[cut_group];
    let name = format!("group {} (bytes {start}..{end}, first row line {first})", cut_group + 1);
    assert!(err.contains(&name) && err.contains("the file was cut"), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len / 2, "a refused store is left as it is");

    std::fs::remove_file(integrity::sidecar_path(&path)).unwrap();
    let err = BetFile::open_with(&path, &plain(), &keyed(3)).err().unwrap().to_string();
    assert!(err.contains("bets.csv.sum") && err.contains("missing"), "{err}");
}

#[test]
fn relaxed_appends_seal_each_batch_and_the_audit_reproduces_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let (mut file, _) = BetFile::open_with(&path, &plain(), &keyed(2)).unwrap();
    file.set_write_through(true);
    for n in 0..3u16 {
        let b = bet("Ana", "Pérez", &format!("{n}"), 7574 * (n % 2));
        file.append(u32::from(n % 2) + 1, [RawBet::from(b.as_ref())]).unwrap();
    }
    assert_eq!(groups_of(&path).len(), 3);
    let head = file.head().unwrap();
    let audit = audit::audit(&path, &keyed(2), 7574).unwrap();
    assert_eq!((audit.head, audit.rows, audit.groups), (Some(head), 3, 3));
    assert_eq!(audit.agencies.get(&1), Some(&(2, 0)));
    assert_eq!(audit.agencies.get(&2), Some(&(1, 1)));
}

#[test]
fn journal_lines_are_parsed_whole_and_totals_match_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    for (text, why) in
        [("1,abc\n", "1,abc"), ("1\n", "agency,total"), ("1,2,3\n", "agency,total"), ("9,1\n", "not in 1..=3")]
    {
        std::fs::write(DoneJournal::path_for(&path), text).unwrap();
        let err = DoneJournal::open_with(&path, &plain(), 3).err().unwrap().to_string();
        assert!(err.contains(".done:1:") && err.contains(why), "{text:?}: {err}");
    }
    std::fs::write(DoneJournal::path_for(&path), "2,5\n1,4\n").unwrap();
    let (_, done) = DoneJournal::open_with(&path, &plain(), 3).unwrap();
    let journal = DoneJournal::path_for(&path);
    let per_agency = HashMap::from([(1, 4), (2, 5)]);
    check_done_totals(&journal, &done, &per_agency).unwrap();
    let err = check_done_totals(&journal, &done, &HashMap::from([(1, 2), (2, 5)])).unwrap_err().to_string();
    assert!(err.contains(".done:2:") && err.contains("agency 1 is recorded done with 4 bets, but 2"), "{err}");
}

#[test]
fn a_long_burst_is_sealed_every_few_mib_and_more_unsealed_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let (mut file, _) = BetFile::open_with(&path, &plain(), &keyed(1)).unwrap();
    let b = bet("Ana", "Pérez", "12345678", 1);
    let row_len = {
        let mut one = Vec::new();
        render_row(&mut one, 1, &b.as_ref());
        one.len() as u64
    };
    // One burst (no sync) of two groups and a half: two are sealed inside it.
    let rows = integrity::MAX_GROUP * 5 / 2 / row_len;
    for _ in 0..rows / 100 {
        file.append(1, std::iter::repeat_n(RawBet::from(b.as_ref()), 100)).unwrap();
    }
    let groups = groups_of(&path);
    assert_eq!(groups.len(), 2, "{groups:?}");
    for (start, end, _) in &groups {
        assert!(end - start >= integrity::MAX_GROUP && end - start < integrity::MAX_GROUP + 2 * WRITE_CHUNK as u64);
    }
    drop(file);
    // What was written after that seal is within what a crash leaves: cut.
    let (_, rec) = BetFile::open_with(&path, &plain(), &keyed(1)).unwrap();
    assert!(rec.repaired_bytes > 0 && rec.repaired_bytes < integrity::MAX_UNSEALED);
    // More than that past the last seal is a cut or removed sidecar: refused, nothing cut.
    std::fs::write(integrity::sidecar_path(&path), b"").unwrap();
    let err = BetFile::open_with(&path, &plain(), &keyed(1)).err().unwrap().to_string();
    assert!(err.contains("more than a crash leaves"), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), groups[1].1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Any byte of a sealed store changed to any other value (a digit for a
    /// digit included, which keeps the CSV valid) is found at open: the error
    /// names the group that holds the byte and the row, with its first byte.
    #[test]
    fn a_changed_byte_is_found_with_its_group_and_row(at in 0.0f64..1.0, value in 0u8..=255, digit in proptest::bool::ANY) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        drop(sealed_store(&path, &keyed(3), 4, 6));
        let mut bytes = std::fs::read(&path).unwrap();
        let offset = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
        let old = bytes[offset];
        let new = if digit && old.is_ascii_digit() { b'0' + (old - b'0' + 1) % 10 } else if value == old { old ^ 1 } else { value };
        bytes[offset] = new;
        std::fs::write(&path, &bytes).unwrap();
        let err = BetFile::open_with(&path, &plain(), &keyed(3)).err().expect("a changed byte was opened").to_string();
        let groups = groups_of(&path);
        let (index, (start, end, first)) = groups.iter().copied().enumerate().find(|(_, g)| (g.0..g.1).contains(&(offset as u64))).unwrap();
        let name = format!("group {} (bytes {start}..{end}, first row line {first})", index + 1);
        proptest::prop_assert!(err.contains(&name), "offset {}: {}", offset, err);
        // The row holding the byte (a changed `\n` belongs to the row it ended).
        let line = 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
        let row_start = bytes[..offset].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let named = format!("bets.csv:{line}: {name}: CRC32C");
        proptest::prop_assert!(err.contains(&named), "offset {}: wanted {}: {}", offset, named, err);
        let row = format!("row line {line} (byte {row_start}) is not the row sealed");
        proptest::prop_assert!(err.contains(&row), "offset {}: wanted {}: {}", offset, row, err);
    }
}
