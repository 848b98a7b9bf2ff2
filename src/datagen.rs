//! Deterministic synthetic agency files in the course's format (CRLF, no header,
//! accented names, documents with their leading zeros, real birthdates, numbers
//! 0..=9999), written as a stream so any size needs constant memory.
//!
//! Two mixes: [`Mix::Plain`] (the tests' data: one name in 500 needs care) and
//! [`Mix::Real`] (what real agency files look like, the benchmark's default: most
//! names non-ASCII, about 4 % of rows with a name needing CSV quotes, 2 % of
//! documents with leading zeros), so the CSV paths are measured on what they
//! will meet, not on the easy case.

use crate::bet::{AgencyId, Date};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

const FIRST_NAMES: &[&str] = &[
    "Santiago",
    "Mateo",
    "Valentina",
    "Sofía",
    "Martín",
    "Lucía",
    "Joaquín",
    "Camila",
    "Tomás",
    "Micaela",
    "Agustín",
    "María José",
    "Benjamín",
    "Julieta",
    "Nicolás",
    "Florencia",
    "Ramón",
    "Inés",
    "Facundo",
    "Ángela",
    "Iñaki",
    "Zoë",
    "Lautaro",
    "Milagros",
    "Ezequiel",
    "Rocío",
    "Gonzalo",
    "Belén",
    "Emiliano",
    "Ximena",
];
const LAST_NAMES: &[&str] = &[
    "González",
    "Rodríguez",
    "Gómez",
    "Fernández",
    "López",
    "Díaz",
    "Martínez",
    "Pérez",
    "García",
    "Sánchez",
    "Romero",
    "Sosa",
    "Álvarez",
    "Torres",
    "Ruiz",
    "Ramírez",
    "Flores",
    "Benítez",
    "Acosta",
    "Medina",
    "Herrera",
    "Suárez",
    "Aguirre",
    "Giménez",
    "Gutiérrez",
    "Pereyra",
    "Rojas",
    "Molina",
    "Castro",
    "Ortiz",
    "Núñez",
    "Peña",
    "Muñoz",
    "Ibáñez",
    "Quiroga",
];
/// Rare names that need quoting or look like separators.
const AWKWARD_NAMES: &[&str] =
    &["O'Connor", "Pérez, hijo", "\"Tito\" Gómez", "Ruiz|Díaz", "Luis; Alberto", "D'Alessandro"];

/// Names as real agencies send them: accented, with a space, and the names that
/// need CSV quoting (comma, double quote) or look like quoting (apostrophe).
const REAL_FIRST_NAMES: &[&str] = &[
    "Sofía",
    "Martín",
    "Lucía",
    "Joaquín",
    "Tomás",
    "Agustín",
    "María José",
    "Benjamín",
    "Nicolás",
    "Ramón",
    "Inés",
    "Ángela",
    "Iñaki",
    "Zoë",
    "Rocío",
    "Belén",
    "José Luis",
    "Ma. Ángeles",
    "Germán",
    "Matías",
    "Santiago",
    "Valentina",
];
const REAL_LAST_NAMES: &[&str] = &[
    "González",
    "Rodríguez",
    "Gómez",
    "Fernández",
    "López",
    "Díaz",
    "Martínez",
    "Pérez",
    "García",
    "Sánchez",
    "Álvarez",
    "Ramírez",
    "Benítez",
    "Suárez",
    "Giménez",
    "Gutiérrez",
    "Núñez",
    "Peña",
    "Muñoz",
    "Ibáñez",
    "Domínguez",
    "Vázquez",
    "Sosa",
    "Romero",
];
const REAL_QUOTED_NAMES: &[&str] = &[
    "O'Connor",
    "Pérez, hijo",
    "\"Tito\" Gómez",
    "D'Alessandro",
    "Núñez, Ma. Inés",
    "Iñíguez \"el Ruso\"",
    "D'Ángelo",
    "Güemes, J.",
];

/// Which names and documents the generated files hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Names like real files: most non-ASCII, about 4 % needing CSV quotes
    /// (commas, double quotes) or holding apostrophes, 2 % of documents with
    /// leading zeros.
    Real,
    /// The tests' data: half the first names ASCII, one name in 500 awkward,
    /// one document in 1000 with leading zeros.
    Plain,
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mix::Real => "real",
            Mix::Plain => "plain",
        })
    }
}

/// SplitMix64: tiny, fast, and identical on every platform (the tests use it too).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// Uniform in `0..len` (`len > 0`): an index into a slice.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

/// What one generated file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencySummary {
    pub agency: AgencyId,
    pub path: PathBuf,
    pub bets: u64,
    pub winners: u64,
}

/// Writes `dir/agency-{1..=agencies}.csv` with `bets` rows each of the plain mix,
/// and `dir/expected-winners.csv` (`agency,document`, in file order).
pub fn generate(
    dir: &Path,
    agencies: u32,
    bets: u64,
    seed: u64,
    winning_number: u16,
) -> io::Result<Vec<AgencySummary>> {
    generate_mix(dir, agencies, bets, seed, winning_number, Mix::Plain)
}

/// [`generate`] with the names and documents of `mix`.
pub fn generate_mix(
    dir: &Path,
    agencies: u32,
    bets: u64,
    seed: u64,
    winning_number: u16,
    mix: Mix,
) -> io::Result<Vec<AgencySummary>> {
    std::fs::create_dir_all(dir)?;
    let mut expected = BufWriter::new(File::create(dir.join("expected-winners.csv"))?);
    let mut summaries = Vec::with_capacity(agencies as usize);
    for agency in 1..=agencies {
        let path = dir.join(format!("agency-{agency}.csv"));
        let mut rng = Rng::new(seed ^ u64::from(agency).wrapping_mul(0xA24B_AED4_963E_E407));
        let mut out = csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(csv::Terminator::CRLF)
            .from_writer(BufWriter::with_capacity(256 * 1024, File::create(&path)?));
        let mut winners = 0;
        for _ in 0..bets {
            let (first, last, zeros) = match mix {
                Mix::Plain => (pick_name(&mut rng, FIRST_NAMES), pick_name(&mut rng, LAST_NAMES), 1000),
                Mix::Real => (pick_real(&mut rng, REAL_FIRST_NAMES), pick_real(&mut rng, REAL_LAST_NAMES), 50),
            };
            let document = if rng.below(zeros) == 0 {
                format!("{:08}", rng.below(1_000_000)) // leading zeros
            } else {
                (10_000_000 + rng.below(35_000_000)).to_string()
            };
            let year = 1940 + rng.below(67) as u16;
            let month = 1 + rng.below(12) as u8;
            let day = 1 + rng.below(28) as u8 + if rng.below(4) == 0 { 2 } else { 0 };
            let birthdate =
                Date::new(year, month, day).or_else(|_| Date::new(year, month, 28)).map_err(io::Error::other)?;
            let number = rng.below(10_000) as u16;
            if number == winning_number {
                winners += 1;
                writeln!(expected, "{agency},{document}")?;
            }
            out.write_record([first, last, &document, &birthdate.to_string(), &number.to_string()])
                .map_err(io::Error::other)?;
        }
        out.flush()?;
        summaries.push(AgencySummary { agency, path, bets, winners });
    }
    expected.flush()?;
    Ok(summaries)
}

fn pick_name(rng: &mut Rng, names: &[&'static str]) -> &'static str {
    if rng.below(500) == 0 {
        AWKWARD_NAMES[rng.below(AWKWARD_NAMES.len() as u64) as usize]
    } else {
        names[rng.below(names.len() as u64) as usize]
    }
}

/// One name in 50 of each column needs care: about 4 % of rows.
fn pick_real(rng: &mut Rng, names: &[&'static str]) -> &'static str {
    if rng.below(50) == 0 {
        REAL_QUOTED_NAMES[rng.index(REAL_QUOTED_NAMES.len())]
    } else {
        names[rng.index(names.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::BetReader;

    #[test]
    fn generation_is_deterministic_and_readable() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = generate(a.path(), 2, 3000, 42, 7574).unwrap();
        let sb = generate(b.path(), 2, 3000, 42, 7574).unwrap();
        assert_eq!(std::fs::read(&sa[0].path).unwrap(), std::fs::read(&sb[0].path).unwrap());
        assert_ne!(std::fs::read(&sa[0].path).unwrap(), std::fs::read(&sa[1].path).unwrap());
        let text = std::fs::read_to_string(&sa[0].path).unwrap();
        assert_eq!(text.matches("\r\n").count(), 3000);

        let mut reader = BetReader::open(&sa[0].path).unwrap();
        let (mut rows, mut winners) = (0, 0);
        while let Some(bet) = reader.next_bet().unwrap() {
            let bet = bet.unwrap();
            rows += 1;
            winners += u64::from(bet.wins(7574));
        }
        assert_eq!((rows, winners), (3000, sa[0].winners));
        let expected = std::fs::read_to_string(a.path().join("expected-winners.csv")).unwrap();
        assert_eq!(expected.lines().count() as u64, sa[0].winners + sa[1].winners);
    }

    #[test]
    fn the_real_mix_is_mostly_non_ascii_with_some_quoting() {
        let dir = tempfile::tempdir().unwrap();
        let s = generate_mix(dir.path(), 1, 20_000, 5, 7574, Mix::Real).unwrap();
        let text = std::fs::read_to_string(&s[0].path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let non_ascii = lines.iter().filter(|l| !l.is_ascii()).count();
        let quoted = lines.iter().filter(|l| l.contains('"')).count();
        let zeros = lines.iter().filter(|l| l.split(',').rev().nth(2).is_some_and(|d| d.starts_with('0'))).count();
        assert!(non_ascii * 10 > lines.len() * 8, "{non_ascii} of {} non-ASCII", lines.len());
        assert!(quoted * 100 > lines.len() * 2 && quoted * 100 < lines.len() * 8, "{quoted} quoted");
        assert!(zeros * 100 > lines.len(), "{zeros} leading zeros");
        let mut reader = BetReader::open(&s[0].path).unwrap();
        let mut rows = 0;
        while let Some(bet) = reader.next_bet().unwrap() {
            bet.unwrap();
            rows += 1;
        }
        assert_eq!(rows, 20_000);
    }
}
