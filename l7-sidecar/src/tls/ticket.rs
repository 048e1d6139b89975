//! Session tickets that every sidecar of the cluster can open: with direct server return a
//! client's next connection may land on any server, so the key that seals a ticket must be
//! shared (`tls-ticket-key`, the same files on every sidecar).
//!
//! A key file is 80 random bytes, as nginx's `ssl_session_ticket_key`
//! (`openssl rand 80 > ticket.key`): bytes 0..16 are the key's name, sent in the clear at the
//! start of each ticket so that the right key is found; the AES-256-GCM key is derived with
//! HKDF-SHA256 from the 64 bytes after the name (salt: the name, info: [`HKDF_INFO`]).
//! Derived rather than bytes 48..80 used as they are: the key then depends on all 64 secret
//! bytes, and a file shared with nginx (which uses bytes 48..80 as an AES-CBC key) never
//! gives the same AES key to two different constructions.
//!
//! A ticket is `name (16) || nonce (12) || ciphertext || tag (16)`, the name also
//! authenticated (the AEAD's associated data); the nonce is random per ticket
//! (`ring::rand::SystemRandom`), well within GCM's bound for random nonces at the number of
//! tickets one key seals in its lifetime. The first key seals, every key opens: to rotate,
//! put a new file first and keep the old one second for a ticket lifetime.

use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// The size of a key file.
pub const KEY_FILE_BYTES: usize = 80;
/// The size of a key's name, the start of the file and of every ticket.
const NAME_LEN: usize = 16;
/// What the AES key is derived for (HKDF's info).
const HKDF_INFO: &[u8] = b"dl7 tls-ticket-key AES-256-GCM";
/// The AEAD tag.
const TAG_LEN: usize = 16;

/// Why a `tls-ticket-key` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The file is not 80 bytes long.
    #[error("{path} holds {len} bytes, not {KEY_FILE_BYTES} (make one with `openssl rand 80`)")]
    Size {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: usize,
    },
}

/// One `tls-ticket-key` file, read and its AES key derived.
pub struct TicketKey {
    /// The file.
    pub path: PathBuf,
    /// Bytes 0..16 of the file.
    pub name: [u8; NAME_LEN],
    /// The 64 secret bytes, kept to tell whether a reloaded file changed.
    secret: [u8; KEY_FILE_BYTES - NAME_LEN],
    key: LessSafeKey,
}

impl std::fmt::Debug for TicketKey {
    /// The file and the name only: the secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKey")
            .field("path", &self.path)
            .field("name", &self.name_hex())
            .finish_non_exhaustive()
    }
}

impl PartialEq for TicketKey {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.name == other.name && self.secret == other.secret
    }
}

impl Eq for TicketKey {}

impl Clone for TicketKey {
    fn clone(&self) -> Self {
        Self::from_bytes(&self.path, &self.file_bytes())
    }
}

impl TicketKey {
    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, TicketKeyError> {
        let bytes = std::fs::read(path).map_err(|e| TicketKeyError::Read {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        let bytes: [u8; KEY_FILE_BYTES] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| TicketKeyError::Size {
                    path: path.to_owned(),
                    len: bytes.len(),
                })?;
        Ok(Self::from_bytes(path, &bytes))
    }

    /// The key in the 80 bytes `file` (read from `path`).
    fn from_bytes(path: &Path, file: &[u8; KEY_FILE_BYTES]) -> Self {
        let (name, secret) = file.split_at(NAME_LEN);
        let mut name_bytes = [0u8; NAME_LEN];
        name_bytes.copy_from_slice(name);
        let mut secret_bytes = [0u8; KEY_FILE_BYTES - NAME_LEN];
        secret_bytes.copy_from_slice(secret);
        // HKDF's expand fails only for outputs above 255 hash lengths: 32 bytes never do.
        let prk = Salt::new(HKDF_SHA256, name).extract(secret);
        let okm = prk
            .expand(&[HKDF_INFO], &AES_256_GCM)
            .expect("32 bytes of HKDF-SHA256 output");
        let key = LessSafeKey::new(UnboundKey::from(okm));
        Self {
            path: path.to_owned(),
            name: name_bytes,
            secret: secret_bytes,
            key,
        }
    }

    /// The name in hex, for logs and errors.
    pub fn name_hex(&self) -> String {
        self.name.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn file_bytes(&self) -> [u8; KEY_FILE_BYTES] {
        let mut file = [0u8; KEY_FILE_BYTES];
        file[..NAME_LEN].copy_from_slice(&self.name);
        file[NAME_LEN..].copy_from_slice(&self.secret);
        file
    }
}

/// The ticketer of a sidecar with `tls-ticket-key`: seals with the first key, opens with the
/// one a ticket names.
#[derive(Debug)]
pub struct SharedTickets {
    keys: Vec<TicketKey>,
    lifetime: u32,
    random: SystemRandom,
}

impl SharedTickets {
    /// Seals with `keys[0]`, opens with any of `keys` (not empty, names distinct: checked
    /// with the configuration); `lifetime` is the hint sent to clients, in seconds.
    pub fn new(keys: Vec<TicketKey>, lifetime: u32) -> Self {
        Self {
            keys,
            lifetime,
            random: SystemRandom::new(),
        }
    }
}

impl ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.name),
                &mut sealed,
            )
            .ok()?;
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let name = ticket.get(..NAME_LEN)?;
        let nonce = ticket.get(NAME_LEN..NAME_LEN + NONCE_LEN)?;
        let sealed = ticket.get(NAME_LEN + NONCE_LEN..)?;
        if sealed.len() < TAG_LEN {
            return None;
        }
        let key = self.keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain_len = key
            .key
            .open_in_place(nonce, Aad::from(&key.name), &mut buf)
            .ok()?
            .len();
        buf.truncate(plain_len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> TicketKey {
        let mut file = [fill; KEY_FILE_BYTES];
        file[0] = fill.wrapping_add(1);
        TicketKey::from_bytes(Path::new("k"), &file)
    }

    fn random_bytes(random: &SystemRandom, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        random.fill(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_ticket_opens_with_its_key_and_the_rotation_keeps_the_old_one() {
        let (old, new) = (key(1), key(2));
        let before = SharedTickets::new(vec![old.clone()], 3600);
        let ticket = before.encrypt(b"session state").unwrap();
        assert_eq!(&ticket[..NAME_LEN], &old.name);
        assert_eq!(ticket.len(), NAME_LEN + NONCE_LEN + 13 + TAG_LEN);
        assert_ne!(before.encrypt(b"session state").unwrap(), ticket, "nonce");
        let rotated = SharedTickets::new(vec![new.clone(), old], 3600);
        assert_eq!(rotated.decrypt(&ticket).unwrap(), b"session state");
        assert_eq!(&rotated.encrypt(b"x").unwrap()[..NAME_LEN], &new.name);
        let other = SharedTickets::new(vec![new], 3600);
        assert_eq!(other.decrypt(&ticket), None, "an unknown name");
        assert_eq!(before.decrypt(&before.encrypt(b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn random_truncated_and_flipped_tickets_are_refused_without_panic() {
        let random = SystemRandom::new();
        let tickets = SharedTickets::new(vec![key(7)], 60);
        let ticket = tickets.encrypt(&random_bytes(&random, 100)).unwrap();
        for len in 0..ticket.len() {
            assert_eq!(tickets.decrypt(&ticket[..len]), None, "truncated to {len}");
        }
        for at in 0..ticket.len() {
            for bit in 0..8 {
                let mut flipped = ticket.clone();
                flipped[at] ^= 1 << bit;
                assert_eq!(tickets.decrypt(&flipped), None, "byte {at} bit {bit}");
            }
        }
        for len in 0..300 {
            let mut garbage = random_bytes(&random, len);
            assert_eq!(tickets.decrypt(&garbage), None);
            // With the right name, so that the AEAD itself refuses.
            if len >= NAME_LEN {
                garbage[..NAME_LEN].copy_from_slice(&key(7).name);
                assert_eq!(tickets.decrypt(&garbage), None);
            }
        }
    }

    #[test]
    fn a_key_file_must_be_80_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, [0u8; 48]).unwrap();
        let e = TicketKey::load(&short).unwrap_err().to_string();
        assert!(e.contains("holds 48 bytes, not 80"), "{e}");
        let missing = dir.path().join("missing.key");
        let e = TicketKey::load(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read {}", missing.display())),
            "{e}"
        );
        let good = dir.path().join("good.key");
        std::fs::write(&good, [3u8; 80]).unwrap();
        let k = TicketKey::load(&good).unwrap();
        assert_eq!(k.name_hex(), "03".repeat(16));
        assert!(
            !format!("{k:?}").contains(&"3, ".repeat(20)),
            "no secret in Debug"
        );
        assert_eq!(k.clone(), k);
    }
}
