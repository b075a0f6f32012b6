//! Certificates for TLS servers, made at test time: a test CA, a server certificate
//! it signs (for `localhost` and `127.0.0.1`), a client certificate it signs, and an
//! unrelated CA that signs nothing a server presents.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::process::{TempDir, write_private};

/// The PEM files a client needs to talk to a TLS server of the kit
/// ([`RedisOptions::tls`](crate::RedisOptions::tls)).
///
/// Made at test time for each [`RedisProcess`](crate::RedisProcess), or once for all
/// the servers of a [`RedisServers`](crate::RedisServers), in a private temporary
/// directory that is removed with the last process that uses it. The keys are ECDSA
/// P-256; the certificates have no meaningful expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The test CA's certificate: the root a client trusts. It signed the server's
    /// certificate, which is valid for `localhost` and `127.0.0.1`, and the client
    /// certificate.
    pub ca_cert: PathBuf,
    /// A client certificate signed by the test CA (extended key usage: client
    /// authentication), for servers started with
    /// [`RedisOptions::tls_client_auth`](crate::RedisOptions::tls_client_auth); other
    /// TLS servers accept it too, without asking for it.
    pub client_cert: PathBuf,
    /// The private key of [`client_cert`](Self::client_cert), PKCS#8 PEM, readable by
    /// its owner only.
    pub client_key: PathBuf,
}

/// Everything a TLS server and its clients need, in a directory of its own.
#[derive(Debug)]
pub(crate) struct TlsMaterial {
    files: TlsFiles,
    server_cert: PathBuf,
    server_key: PathBuf,
    /// Kept for its drop, which removes the files.
    _dir: TempDir,
}

impl TlsMaterial {
    /// Makes a fresh CA, a server certificate and a client certificate.
    ///
    /// # Panics
    ///
    /// If a key cannot be generated or a file cannot be written.
    pub(crate) fn generate() -> Arc<TlsMaterial> {
        let dir = TempDir::new("tls");
        let ca = certificate_authority("Tandem test CA");

        let server_key = new_key();
        let mut server = CertificateParams::new(["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap_or_else(|error| panic!("cannot describe the server certificate: {error}"));
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.use_authority_key_identifier_extension = true;
        let server_cert = server
            .signed_by(&server_key, &ca)
            .unwrap_or_else(|error| panic!("cannot sign the server certificate: {error}"));

        let client_key = new_key();
        let mut client = CertificateParams::default();
        client.distinguished_name = rcgen::DistinguishedName::new();
        client
            .distinguished_name
            .push(DnType::CommonName, "tandem test client");
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client.use_authority_key_identifier_extension = true;
        let client_cert = client
            .signed_by(&client_key, &ca)
            .unwrap_or_else(|error| panic!("cannot sign the client certificate: {error}"));

        let write = |name: &str, contents: String| {
            let path = dir.path().join(name);
            write_private(&path, contents.as_bytes())
                .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
            path
        };
        let files = TlsFiles {
            ca_cert: write("ca.crt", ca.pem()),
            client_cert: write("client.crt", client_cert.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
        };
        Arc::new(TlsMaterial {
            files,
            server_cert: write("server.crt", server_cert.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            _dir: dir,
        })
    }

    pub(crate) fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn server_cert(&self) -> &Path {
        &self.server_cert
    }

    pub(crate) fn server_key(&self) -> &Path {
        &self.server_key
    }
}

fn new_key() -> KeyPair {
    KeyPair::generate().unwrap_or_else(|error| panic!("cannot generate a key pair: {error}"))
}

/// A fresh self-signed CA named `name`, ready to sign.
fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, new_key())
        .unwrap_or_else(|error| panic!("cannot make the CA {name:?}: {error}"))
}

/// The certificate of a CA that signed nothing the kit's servers present (PEM): a
/// client that trusts only this CA must refuse every TLS server of the kit.
///
/// The CA is made once per test binary and written to
/// `<temp dir>/tandem-testkit-<uid>/untrusted-ca.crt`, which stays there after the
/// tests (one small file, replaced by the next test binary that asks for it; its key
/// is never written anywhere).
///
/// ```no_run
/// let untrusted = tandem_testkit::untrusted_ca();
/// assert!(std::fs::read_to_string(untrusted).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
/// ```
///
/// # Panics
///
/// If the file cannot be written.
pub fn untrusted_ca() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "tandem-testkit-{}",
            nix::unistd::geteuid().as_raw()
        ));
        create_owned_dir(&dir);
        let path = dir.join("untrusted-ca.crt");
        // Written under a name of this binary's own and renamed: another test binary
        // may be reading or replacing the file at the same moment, and must see a
        // whole certificate either way.
        let partial = dir.join(format!("untrusted-ca.crt.{}", std::process::id()));
        let pem = certificate_authority("Tandem untrusted test CA").pem();
        write_private(&partial, pem.as_bytes())
            .and_then(|()| std::fs::rename(&partial, &path))
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        path
    })
    .clone()
}

/// Creates `dir` (mode 0700) unless it exists, and checks that it belongs to the
/// current user: it lives in a directory that every user can write to.
fn create_owned_dir(dir: &Path) {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => panic!("cannot create {}: {error}", dir.display()),
    }
    let metadata = std::fs::symlink_metadata(dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
    assert!(
        metadata.is_dir() && metadata.uid() == nix::unistd::geteuid().as_raw(),
        "{} is not a directory of the current user; remove it",
        dir.display()
    );
}
