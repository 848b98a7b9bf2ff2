//! The deployment's PKI: a CA made fresh per deployment, the central's
//! certificate signed by it (and, for the replicated mode, the NATS nodes'
//! certificate), and the files they are written to.
//!
//! The CA's private key lives only in memory while the server certificate is
//! signed and is then dropped: nothing can be issued under the CA afterwards, so
//! a copy of the deployment's files cannot mint a trusted central. A new
//! certificate (another name, a rotation) means a new deployment PKI.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Days a deployment's certificates are valid from the day they are made.
pub const DEFAULT_VALID_DAYS: i64 = 397;
/// File names inside the PKI directory, after the deployment's stem.
pub const CA_SUFFIX: &str = ".ca.pem";
pub const CERT_SUFFIX: &str = ".server.pem";
pub const KEY_SUFFIX: &str = ".server.key";
/// The NATS nodes' certificate and key, beside the central's.
pub const NATS_CERT_SUFFIX: &str = ".nats.pem";
pub const NATS_KEY_SUFFIX: &str = ".nats.key";

/// The deployment's PKI as PEM text. The CA's key is not part of it.
pub struct Pki {
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pki(<server key redacted>)")
    }
}

/// One more certificate signed by the deployment's CA, with its key, as PEM text.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leaf(<key redacted>)")
    }
}

/// When the certificates are valid, in whole days relative to today (UTC).
/// The start is a day back so a host whose clock lags a little still accepts them.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub from_day: i64,
    pub until_day: i64,
}

impl Default for Validity {
    fn default() -> Validity {
        Validity { from_day: -1, until_day: DEFAULT_VALID_DAYS }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot make the deployment's certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read random bytes for the CA's name: {0}")]
    Random(String),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// The names the central's certificate carries for `servers` replicas: `server`,
/// `server1`..`serverM` (compose), `localhost` and `127.0.0.1` (local runs).
pub fn server_names(servers: u32) -> Vec<String> {
    let mut names = vec!["server".to_string()];
    names.extend((1..=servers.max(1)).map(|k| format!("server{k}")));
    names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    names
}

/// The names the NATS nodes' one shared certificate carries for `nodes` nodes:
/// `nats1`..`natsN` (compose), `localhost` and `127.0.0.1` (local runs).
pub fn nats_names(nodes: u32) -> Vec<String> {
    let mut names: Vec<String> = (1..=nodes.max(1)).map(|k| format!("nats{k}")).collect();
    names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    names
}

/// A fresh CA and a server certificate for `names` signed by it (ECDSA P-256).
pub fn issue(names: &[String], validity: Validity) -> Result<Pki, PkiError> {
    issue_central(names, validity).map(|(pki, _issuer)| pki)
}

/// [`issue`] plus, from the same CA before its key is dropped, one certificate
/// for the NATS nodes named `nats`. It serves both ends of a TLS link (server and
/// client authentication): a cluster route is mutual TLS, each node dialing the
/// others with the same certificate it answers with.
pub fn issue_with_nats(names: &[String], nats: &[String], validity: Validity) -> Result<(Pki, Leaf), PkiError> {
    let (pki, issuer) = issue_central(names, validity)?;
    let key = KeyPair::generate()?;
    let mut node = CertificateParams::new(nats.to_vec())?;
    node.distinguished_name = name(nats.first().map(String::as_str).unwrap_or("nats"));
    node.is_ca = IsCa::ExplicitNoCa;
    node.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    node.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut node, validity);
    let cert = node.signed_by(&key, &issuer)?;
    Ok((pki, Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }))
}

/// The CA and the central's certificate; the CA's key leaves only inside the
/// issuer, which the callers drop once they have signed.
fn issue_central(names: &[String], validity: Validity) -> Result<(Pki, Issuer<'static, KeyPair>), PkiError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // A name of its own: another deployment's CA is then an unknown issuer, not a
    // same-named one whose signature fails.
    let tag: [u8; 8] = crate::auth::random_bytes().map_err(|e| PkiError::Random(e.to_string()))?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    ca.distinguished_name = name(&format!("Loteria deployment CA {tag}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca, validity);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names.to_vec())?;
    server.distinguished_name = name(names.first().map(String::as_str).unwrap_or("server"));
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut server, validity);
    let server_cert = server.signed_by(&server_key, &issuer)?;
    let pki = Pki {
        ca_cert_pem: ca_cert.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    };
    Ok((pki, issuer))
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Loteria Nacional");
    dn.push(DnType::CommonName, common);
    dn
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let today = days_since_epoch();
    let (y, m, d) = civil_from_days(today + validity.from_day);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + validity.until_day);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

fn days_since_epoch() -> i64 {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    secs.div_euclid(86_400)
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

/// Where a deployment's PKI files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl PkiFiles {
    /// `dir/<stem>.ca.pem`, `dir/<stem>.server.pem`, `dir/<stem>.server.key`.
    pub fn in_dir(dir: &Path, stem: &str) -> PkiFiles {
        PkiFiles {
            ca_cert: dir.join(format!("{stem}{CA_SUFFIX}")),
            server_cert: dir.join(format!("{stem}{CERT_SUFFIX}")),
            server_key: dir.join(format!("{stem}{KEY_SUFFIX}")),
        }
    }
}

/// Writes the PKI into `dir` (created 0700): the key 0600, the certificates 0644
/// (they are public; the directory still keeps other users out). Each file is
/// replaced atomically.
pub fn write(pki: &Pki, dir: &Path, stem: &str) -> Result<PkiFiles, PkiError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Write { path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err(dir))?;
    let files = PkiFiles::in_dir(dir, stem);
    write_file(&files.server_key, &pki.server_key_pem, 0o600).map_err(err(&files.server_key))?;
    write_file(&files.server_cert, &pki.server_cert_pem, 0o644).map_err(err(&files.server_cert))?;
    write_file(&files.ca_cert, &pki.ca_cert_pem, 0o644).map_err(err(&files.ca_cert))?;
    Ok(files)
}

/// Where the NATS nodes' certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NatsFiles {
    /// `dir/<stem>.nats.pem`, `dir/<stem>.nats.key`.
    pub fn in_dir(dir: &Path, stem: &str) -> NatsFiles {
        NatsFiles {
            cert: dir.join(format!("{stem}{NATS_CERT_SUFFIX}")),
            key: dir.join(format!("{stem}{NATS_KEY_SUFFIX}")),
        }
    }
}

/// Writes the NATS nodes' certificate (0644) and key (0600) into `dir`, created
/// 0700 like [`fn@write`]'s.
pub fn write_nats(leaf: &Leaf, dir: &Path, stem: &str) -> Result<NatsFiles, PkiError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Write { path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err(dir))?;
    let files = NatsFiles::in_dir(dir, stem);
    write_file(&files.key, &leaf.key_pem, 0o600).map_err(err(&files.key))?;
    write_file(&files.cert, &leaf.cert_pem, 0o644).map_err(err(&files.cert))?;
    Ok(files)
}

fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn names_cover_every_replica_and_local_runs() {
        assert_eq!(server_names(1), ["server", "server1", "localhost", "127.0.0.1"]);
        assert_eq!(server_names(3)[..4], ["server", "server1", "server2", "server3"]);
    }

    #[test]
    fn files_are_written_owner_only_where_secret() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = issue(&server_names(2), Validity::default()).unwrap();
        let files = write(&pki, &dir.path().join("keys"), "dc").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        assert_eq!((mode(&files.server_key), mode(&files.server_cert), mode(&files.ca_cert)), (0o600, 0o644, 0o644));
        assert_eq!(std::fs::read_to_string(&files.server_key).unwrap(), pki.server_key_pem);
        assert!(pki.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{pki:?}").contains("PRIVATE"));
        let again = issue(&server_names(2), Validity::default()).unwrap();
        assert_ne!(again.ca_cert_pem, pki.ca_cert_pem, "every deployment has its own CA");
    }

    #[test]
    fn the_nats_certificate_serves_both_ends_of_a_route_under_the_same_ca() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (pki, leaf) = issue_with_nats(&server_names(3), &nats_names(3), Validity::default()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&pki.ca_cert_pem)).unwrap();
        let roots = std::sync::Arc::new(roots);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
        let client = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider).build().unwrap();
        let node = der(&leaf.cert_pem);
        for name in ["nats1", "nats3", "localhost", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            server.verify_server_cert(&node, &[], &name, &[], UnixTime::now()).unwrap();
        }
        let wrong = ServerName::try_from("server").unwrap();
        assert!(server.verify_server_cert(&node, &[], &wrong, &[], UnixTime::now()).is_err());
        // As the dialing end of a route it is a client certificate too.
        client.verify_client_cert(&node, &[], UnixTime::now()).unwrap();
        assert!(client.verify_client_cert(&der(&pki.server_cert_pem), &[], UnixTime::now()).is_err());
        assert!(!format!("{leaf:?}").contains("PRIVATE"));
        let dir = tempfile::tempdir().unwrap();
        let files = write_nats(&leaf, &dir.path().join("k"), "dc").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&files.key), mode(&files.cert), mode(&dir.path().join("k"))), (0o600, 0o644, 0o700));
    }
}
