//! A throwaway certificate authority and server certificates for HTTPS tests, issued with
//! `openssl` (Debian's): what an operator's PKI would hand the sidecars, made in a directory
//! the caller owns and removes.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};

use crate::process;

/// Days the certificates are valid.
const DAYS: &str = "30";

/// The key types a server certificate can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256.
    EcdsaP256,
    /// RSA, 2048 bits.
    Rsa2048,
}

impl KeyType {
    fn genpkey_args(self) -> &'static [&'static str] {
        match self {
            KeyType::EcdsaP256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::Rsa2048 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        }
    }

    /// A short name for file names and tables.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa",
            KeyType::Rsa2048 => "rsa",
        }
    }
}

/// A certificate authority in a directory.
#[derive(Clone, Debug)]
pub struct Ca {
    pub dir: PathBuf,
    /// The CA certificate, what clients trust (`curl --cacert`).
    pub cert: PathBuf,
    key: PathBuf,
}

/// A server certificate (its chain: the certificate itself, the CA being the root) and key.
#[derive(Clone, Debug)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str]) -> Result<String> {
    process::output(Command::new("openssl").args(args))
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

impl Ca {
    /// A new CA (ECDSA P-256) in `dir`, created if needed.
    pub fn create(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        let mut args = vec!["genpkey"];
        args.extend(KeyType::EcdsaP256.genpkey_args());
        args.extend(["-out", path_str(&key)?]);
        openssl(&args)?;
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            path_str(&key)?,
            "-sha256",
            "-days",
            DAYS,
            "-subj",
            "/CN=dl7 testbed CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            path_str(&cert)?,
        ])?;
        Ok(Ca {
            dir: dir.to_owned(),
            cert,
            key,
        })
    }

    /// The CA that [`Ca::create`] made in `dir` before.
    pub fn open(dir: &Path) -> Result<Self> {
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        ensure!(
            cert.exists() && key.exists(),
            "no CA in {} (ca.pem, ca.key)",
            dir.display()
        );
        Ok(Ca {
            dir: dir.to_owned(),
            cert,
            key,
        })
    }

    /// A session-ticket key file named `file` beside the CA: 80 random bytes, the format of
    /// nginx's `ssl_session_ticket_key` and the sidecars' `tls-ticket-key`.
    pub fn ticket_key(&self, file: &str) -> Result<PathBuf> {
        let path = self.dir.join(file);
        openssl(&["rand", "-out", path_str(&path)?, "80"])?;
        Ok(path)
    }

    /// A server certificate named `file` (`file.pem`, `file.key`) for the DNS `names` and
    /// `ips`, with a `key_type` key, signed by this CA.
    pub fn issue(
        &self,
        file: &str,
        names: &[&str],
        ips: &[IpAddr],
        key_type: KeyType,
    ) -> Result<ServerCert> {
        self.sign(file, names, ips, key_type, "serverAuth")
    }

    /// A sidecar's peer certificate (`peer-tls-cert`) named `file` for its address `ip`: an
    /// ECDSA P-256 key, for use as server and as client (a peer connection's two ends).
    pub fn issue_peer(&self, file: &str, ip: IpAddr) -> Result<ServerCert> {
        self.sign(
            file,
            &[],
            &[ip],
            KeyType::EcdsaP256,
            "serverAuth,clientAuth",
        )
    }

    /// A certificate as [`issue`](Self::issue) says, with the extended key usages `usage`.
    fn sign(
        &self,
        file: &str,
        names: &[&str],
        ips: &[IpAddr],
        key_type: KeyType,
        usage: &str,
    ) -> Result<ServerCert> {
        ensure!(
            !names.is_empty() || !ips.is_empty(),
            "a certificate needs a name or an address"
        );
        let key = self.dir.join(format!("{file}.key"));
        let csr = self.dir.join(format!("{file}.csr"));
        let cert = self.dir.join(format!("{file}.pem"));
        let ext = self.dir.join(format!("{file}.ext"));
        let mut args = vec!["genpkey"];
        args.extend(key_type.genpkey_args());
        args.extend(["-out", path_str(&key)?]);
        openssl(&args)?;
        let cn = names
            .first()
            .map_or_else(|| ips[0].to_string(), |n| (*n).to_owned());
        openssl(&[
            "req",
            "-new",
            "-key",
            path_str(&key)?,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            path_str(&csr)?,
        ])?;
        let san: Vec<String> = names
            .iter()
            .map(|n| format!("DNS:{n}"))
            .chain(ips.iter().map(|a| format!("IP:{a}")))
            .collect();
        fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n",
                san.join(",")
            ),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            path_str(&csr)?,
            "-CA",
            path_str(&self.cert)?,
            "-CAkey",
            path_str(&self.key)?,
            "-CAcreateserial",
            "-days",
            DAYS,
            "-sha256",
            "-extfile",
            path_str(&ext)?,
            "-out",
            path_str(&cert)?,
        ])?;
        Ok(ServerCert { cert, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_verify_against_the_ca_and_carry_their_names() {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("skipped: no openssl");
            return;
        }
        let dir = std::env::temp_dir().join(format!("dl7-tls-test-{}", std::process::id()));
        let result = (|| -> Result<()> {
            let ca = Ca::create(&dir)?;
            for key_type in [KeyType::EcdsaP256, KeyType::Rsa2048] {
                let c = ca.issue(
                    key_type.name(),
                    &["dl7.test"],
                    &["10.214.0.100".parse()?],
                    key_type,
                )?;
                let verified =
                    openssl(&["verify", "-CAfile", path_str(&ca.cert)?, path_str(&c.cert)?])?;
                ensure!(verified.trim().ends_with("OK"), "{verified}");
                let text = openssl(&["x509", "-in", path_str(&c.cert)?, "-noout", "-text"])?;
                ensure!(
                    text.contains("DNS:dl7.test") && text.contains("IP Address:10.214.0.100"),
                    "{text}"
                );
            }
            // A peer certificate serves both ends of a peer connection.
            let peer = ca.issue_peer("peer", "10.214.0.11".parse()?)?;
            for purpose in ["sslserver", "sslclient"] {
                let verified = openssl(&[
                    "verify",
                    "-purpose",
                    purpose,
                    "-CAfile",
                    path_str(&ca.cert)?,
                    path_str(&peer.cert)?,
                ])?;
                ensure!(verified.trim().ends_with("OK"), "{purpose}: {verified}");
            }
            Ok(())
        })();
        let _ = fs::remove_dir_all(&dir);
        result.unwrap();
    }
}
