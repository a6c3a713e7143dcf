//! Secrets at rest: CI/CD variables, project credentials and other values the server must be
//! able to read back, stored encrypted under a keyring that lives outside the database.
//!
//! A copy of the database (a backup, a dump attached to a bug report) then holds no usable
//! secret; the key file, or the `GANTRY_SECRETS_KEY` variable, is needed as well.
//!
//! # The sealed text
//!
//! [`Keyring::seal`] encrypts with XChaCha20-Poly1305 (authenticated encryption, a random
//! 192-bit nonce per value, so no nonce bookkeeping) under the keyring's current key and
//! returns one line of ASCII that a text column can hold:
//!
//! ```text
//! gsec1:<key id>:<base64url without padding of (nonce (24 bytes) || ciphertext || tag (16 bytes))>
//! ```
//!
//! `gsec1` names this format, so [`is_sealed`] tells a sealed value from anything else and a
//! later format can sit beside it. The key id says which key opens the value.
//!
//! # Row binding
//!
//! Every seal and open takes associated data chosen by the caller: the row the value belongs
//! to, such as `b"project:12:credentials"` or `b"variable:7:value"`. It is authenticated but
//! not stored, so a ciphertext copied into another row (by someone who can write to the
//! database but has no key) fails to open instead of handing that row's secret to whoever
//! reads the other row. The header (`gsec1:<key id>:`) is authenticated too.
//!
//! # Keys and rotation
//!
//! A keyring is a list of 256-bit keys, each with a short id (`k1`, `k2`, …); the last one is
//! current and seals new values, the others only open old ones. The key file has one key a
//! line, `<id> <base64 of 32 bytes>`, with `#` comments and blank lines allowed:
//!
//! ```text
//! # Gantry's keys for secrets at rest; the last one is current
//! k1 <44 characters: the output of `openssl rand -base64 32`>
//! k2 <another one>
//! ```
//!
//! It must be readable by its owner only ([`Keyring::load_file`] refuses it otherwise). The
//! same list can come from `GANTRY_SECRETS_KEY` ([`Keyring::from_env_value`]), one entry a
//! line or separated by `;`, or as a single bare base64 key (id `env`).
//!
//! Rotating is three steps, none of which loses a value:
//! 1. [`Keyring::rotate_file`] appends a fresh key (`k<N+1>`) and keeps the old ones;
//! 2. the server reloads the keyring: new values are sealed with the new key, old ones
//!    still open;
//! 3. a sweep calls [`Keyring::reseal`] on every stored value and writes back what it
//!    returns; once nothing is sealed with an old key any more, that key may be deleted
//!    from the file.
//!
//! # Keeping plaintext and keys out of sight
//!
//! Opened values come back in [`secrecy`] types (wiped on drop, `[REDACTED]` in `Debug`);
//! key bytes live only inside the cipher, which wipes them on drop, and in buffers that are
//! wiped after use. No error message and no `Debug` output contains a plaintext, a key, or
//! any part of a key file's line but its number and key id.

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, general_purpose};
use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};
/// The types opened values come back in, re-exported: callers need no `secrecy` of their own.
pub use secrecy::{ExposeSecret, SecretSlice, SecretString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable that can hold the keyring (see [`Keyring::from_env_value`]).
pub const KEY_ENV: &str = "GANTRY_SECRETS_KEY";

/// What every sealed text starts with: the format's name and version.
const PREFIX: &str = "gsec1:";
/// Key size: 256 bits.
const KEY_LEN: usize = 32;
/// XChaCha20 nonce size: 192 bits, random per seal.
const NONCE_LEN: usize = 24;
/// Poly1305 tag size.
const TAG_LEN: usize = 16;
/// Longest key id: short enough that a base64 key (44 characters) can never pass for an id,
/// so quoting an id in a message never quotes key material.
const MAX_ID_LEN: usize = 16;
/// A key file larger than this is not a key file.
const MAX_KEY_FILE: u64 = 64 * 1024;
/// Id of the single bare key given in [`KEY_ENV`].
const ENV_KEY_ID: &str = "env";

/// Key files are written in standard base64 with padding (what `openssl rand -base64 32`
/// prints); reading also takes them unpadded and in the URL-safe alphabet.
const KEY_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const KEY_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What can go wrong with sealed values and key files. No variant holds a plaintext or key
/// bytes, so `Display` and `Debug` are safe to log.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The value names a key the keyring does not have.
    #[error(
        "cannot decrypt: the value was sealed with key {id:?}, which the keyring (keys: {known}) does not have; the key file may be missing a rotated key"
    )]
    UnknownKey { id: String, known: String },
    /// Authentication failed: the value, its key id or its row binding was changed, or it
    /// belongs to another row.
    #[error("cannot decrypt: the value was altered or belongs to another row")]
    Tampered,
    /// Not a sealed text at all, or a damaged one (the text itself is not quoted).
    #[error("not a sealed secret: {0}")]
    Malformed(&'static str),
    /// The value opened but is not UTF-8 text (from [`Keyring::open_string`]).
    #[error("the decrypted value is not UTF-8 text")]
    NotText,
    /// A key file that others can read.
    #[error(
        "{} is accessible to other users (mode {mode:03o}); the secrets key must be readable by its owner only: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Insecure { path: PathBuf, mode: u32 },
    /// A line of a key file (or an entry of [`KEY_ENV`]) that is not `<id> <base64 key>`.
    #[error("{origin}, {unit} {line}: {problem}")]
    KeySyntax {
        /// The key file's path, or [`KEY_ENV`].
        origin: String,
        /// `line` (key file) or `entry` ([`KEY_ENV`]).
        unit: &'static str,
        line: usize,
        problem: String,
    },
    /// A key file or [`KEY_ENV`] value without any key.
    #[error(
        "{origin} holds no key: add a line `<id> <base64 of 32 random bytes>`, such as `k1 ` followed by the output of `openssl rand -base64 32`"
    )]
    NoKeys { origin: String },
    /// [`Keyring::create_file`] found a file in the way.
    #[error(
        "{} already exists: it may hold the keys of stored secrets, so it is not replaced; to add a key, rotate it instead",
        path.display()
    )]
    Exists { path: PathBuf },
    /// Reading or writing a key file.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The operating system's random number generator failed.
    #[error("cannot make a secrets key: the system random number generator failed: {0}")]
    Random(#[from] getrandom::Error),
}

impl SecretError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SecretError {
        let path = path.to_path_buf();
        move |source| SecretError::Io { what, path, source }
    }
}

pub type Result<T, E = SecretError> = std::result::Result<T, E>;

/// Whether `text` is a value sealed by [`Keyring::seal`] (its shape, not whether any key
/// opens it): tells sealed values from plaintext written before encryption was turned on.
pub fn is_sealed(text: &str) -> bool {
    Sealed::parse(text).is_ok()
}

/// One key: its id and the cipher holding its bytes (wiped when dropped).
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// A set of 256-bit keys with ids, the last one current. See the [module](self) for the
/// formats and for rotation.
pub struct Keyring {
    /// In the order they were given; never empty, ids unique.
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    /// Key ids only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.ids().collect::<Vec<_>>())
            .field("current", &self.current_id())
            .finish()
    }
}

impl Keyring {
    /// Reads a key file: one `<id> <base64 key>` a line, `#` comments and blank lines
    /// allowed, the last key current. Refuses a file that group or others may access, and
    /// names the line of any malformed entry.
    pub fn load_file(path: &Path) -> Result<Keyring> {
        let mut file =
            File::open(path).map_err(SecretError::io("cannot open the key file", path))?;
        let text = read_key_file(&mut file, path)?;
        parse_list(&text, b"\n", &path.display().to_string(), "line")
    }

    /// Reads the value of [`KEY_ENV`]: the key file's format with entries separated by
    /// newlines or `;`, or a single bare base64 key, which gets the id `env`.
    pub fn from_env_value(value: &str) -> Result<Keyring> {
        let trimmed = value.trim();
        if !trimmed.is_empty() && !trimmed.contains(|c: char| c.is_whitespace() || c == ';') {
            let key = decode_key(trimmed).map_err(|problem| SecretError::KeySyntax {
                origin: KEY_ENV.to_string(),
                unit: "entry",
                line: 1,
                problem,
            })?;
            return Ok(Keyring::from_keys(vec![(ENV_KEY_ID.to_string(), key)]));
        }
        parse_list(value.as_bytes(), b"\n;", KEY_ENV, "entry")
    }

    /// Creates a key file holding one fresh key, `k1`, readable by its owner only, and
    /// returns its keyring. Written atomically (a temporary file, synced, then linked into
    /// place); refuses to replace an existing file.
    pub fn create_file(path: &Path) -> Result<Keyring> {
        if path.symlink_metadata().is_ok() {
            return Err(SecretError::Exists {
                path: path.to_path_buf(),
            });
        }
        let id = "k1".to_string();
        let key = random_key()?;
        let mut text = Zeroizing::new(String::with_capacity(256));
        text.push_str(
            "# Gantry's keys for secrets at rest: `<id> <base64 key>`, the last one seals new values.\n\
             # Keep every key until nothing is sealed with it any more; keep this file private.\n",
        );
        push_key_line(&mut text, &id, &key);
        write_atomically(path, text.as_bytes(), Replace::Never)?;
        Ok(Keyring::from_keys(vec![(id, key)]))
    }

    /// Appends a fresh key to a key file, with the id `k<N+1>` (`N` the largest number among
    /// the `k…` ids), keeping the old keys so that values sealed with them still open.
    /// Returns the new id. The file is replaced atomically and stays owner-only; concurrent
    /// rotations of the same file wait for each other.
    pub fn rotate_file(path: &Path) -> Result<String> {
        // Hold an exclusive lock on the file being replaced; a rotation that waited for it
        // finds the file replaced and starts over with the new one.
        let (file, text) = loop {
            let mut file =
                File::open(path).map_err(SecretError::io("cannot open the key file", path))?;
            file.lock()
                .map_err(SecretError::io("cannot lock the key file", path))?;
            let same = match fs::metadata(path) {
                Ok(now) => {
                    let held = file
                        .metadata()
                        .map_err(SecretError::io("cannot read the key file", path))?;
                    now.dev() == held.dev() && now.ino() == held.ino()
                }
                Err(_) => false,
            };
            if same {
                let text = read_key_file(&mut file, path)?;
                break (file, text);
            }
        };
        let keyring = parse_list(&text, b"\n", &path.display().to_string(), "line")?;
        let next = keyring
            .ids()
            .filter_map(|id| id.strip_prefix('k')?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let id = format!("k{next}");
        let key = random_key()?;
        let mut out = Zeroizing::new(String::with_capacity(text.len() + 128));
        out.push_str(
            std::str::from_utf8(&text).map_err(|_| SecretError::KeySyntax {
                origin: path.display().to_string(),
                unit: "line",
                line: 1,
                problem: "the file is not UTF-8 text".into(),
            })?,
        );
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        push_key_line(&mut out, &id, &key);
        write_atomically(path, out.as_bytes(), Replace::Yes)?;
        // Releases the lock, now that the new file is in place.
        drop(file);
        Ok(id)
    }

    /// The id of the key that seals new values.
    pub fn current_id(&self) -> &str {
        &self.current().id
    }

    /// All key ids, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Encrypts `plaintext` with the current key, bound to `aad` (the row it will be stored
    /// in), and returns the sealed text (see the [module](self)). Two seals of the same
    /// value differ.
    ///
    /// # Panics
    ///
    /// When the operating system's random number generator fails (Linux's `getrandom(2)`
    /// does not, once the kernel has gathered its boot-time entropy).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let key = self.current();
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the system random number generator failed");
        let mut raw = vec![0u8; NONCE_LEN + plaintext.len() + TAG_LEN];
        raw[..NONCE_LEN].copy_from_slice(&nonce);
        let body = &mut raw[NONCE_LEN..NONCE_LEN + plaintext.len()];
        // Encrypts from the caller's buffer straight into ours: no copy of the plaintext.
        let buf = InOutBuf::new(plaintext, body).expect("same lengths");
        let tag = key
            .cipher
            .encrypt_inout_detached(&XNonce::from(nonce), &full_aad(&key.id, aad), buf)
            .expect("XChaCha20-Poly1305 takes messages of up to 256 GiB");
        raw[NONCE_LEN + plaintext.len()..].copy_from_slice(&tag);
        format!("{PREFIX}{}:{}", key.id, URL_SAFE_NO_PAD.encode(&raw))
    }

    /// Decrypts a sealed text stored in the row `aad` names. Fails with
    /// [`SecretError::UnknownKey`] when its key is not in the keyring and with
    /// [`SecretError::Tampered`] when the text was changed or sealed for another row.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<SecretSlice<u8>> {
        let mut plain = self.decrypt(sealed, aad)?;
        // `vec![0; n]` has a capacity of exactly `n`: the move into a boxed slice does not
        // reallocate, so no unwiped copy is left behind.
        Ok(SecretSlice::from(std::mem::take(&mut *plain)))
    }

    /// [`Keyring::open`] for values that are text (variables, passwords, tokens).
    pub fn open_string(&self, sealed: &str, aad: &[u8]) -> Result<SecretString> {
        let mut plain = self.decrypt(sealed, aad)?;
        if std::str::from_utf8(&plain).is_err() {
            return Err(SecretError::NotText);
        }
        let text = String::from_utf8(std::mem::take(&mut *plain)).expect("checked above");
        Ok(SecretString::from(text))
    }

    fn decrypt(&self, sealed: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let sealed = Sealed::parse(sealed)?;
        let key = self.key(sealed.id)?;
        let (nonce, rest) = sealed.raw.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SecretError::Malformed("bad nonce"))?;
        let tag = Tag::try_from(tag).map_err(|_| SecretError::Malformed("bad tag"))?;
        // The output is wiped on drop from the start, even if decryption fails.
        let mut plain = Zeroizing::new(vec![0u8; ciphertext.len()]);
        let buf = InOutBuf::new(ciphertext, &mut plain[..]).expect("same lengths");
        key.cipher
            .decrypt_inout_detached(&nonce, &full_aad(&key.id, aad), buf, &tag)
            .map_err(|_| SecretError::Tampered)?;
        Ok(plain)
    }

    /// Seals again with the current key a value sealed with an older one (the sweep after a
    /// rotation); `None` when the value already uses the current key, in which case it is
    /// parsed but not decrypted.
    pub fn reseal(&self, sealed: &str, aad: &[u8]) -> Result<Option<String>> {
        if Sealed::parse(sealed)?.id == self.current_id() {
            return Ok(None);
        }
        let plain = self.open(sealed, aad)?;
        Ok(Some(self.seal(plain.expose_secret(), aad)))
    }

    fn current(&self) -> &Key {
        self.keys.last().expect("a keyring is never empty")
    }

    fn key(&self, id: &str) -> Result<&Key> {
        self.keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SecretError::UnknownKey {
                id: id.to_string(),
                known: self.ids().collect::<Vec<_>>().join(", "),
            })
    }

    /// `keys` is not empty and its ids are valid and unique.
    fn from_keys(keys: Vec<(String, Zeroizing<[u8; KEY_LEN]>)>) -> Keyring {
        let keys = keys
            .into_iter()
            .map(|(id, bytes)| Key {
                id,
                cipher: XChaCha20Poly1305::new_from_slice(&bytes[..]).expect("32-byte key"),
            })
            .collect();
        Keyring { keys }
    }
}

/// A sealed text taken apart (nothing decrypted).
struct Sealed<'a> {
    id: &'a str,
    /// nonce || ciphertext || tag
    raw: Vec<u8>,
}

impl<'a> Sealed<'a> {
    fn parse(text: &'a str) -> Result<Sealed<'a>> {
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or(SecretError::Malformed("it does not start with `gsec1:`"))?;
        let (id, body) = rest
            .split_once(':')
            .ok_or(SecretError::Malformed("no `:` after the key id"))?;
        if !valid_id(id) {
            return Err(SecretError::Malformed("the key id is not valid"));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SecretError::Malformed("the data is not base64url"))?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Malformed("the data is too short"));
        }
        Ok(Sealed { id, raw })
    }
}

/// The associated data actually authenticated: the header, then the caller's row binding.
/// The id never contains `:`, so the split between the two is unambiguous.
fn full_aad(id: &str, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX.len() + id.len() + 1 + aad.len());
    out.extend_from_slice(PREFIX.as_bytes());
    out.extend_from_slice(id.as_bytes());
    out.push(b':');
    out.extend_from_slice(aad);
    out
}

/// 1 to 16 ASCII letters, digits, `-` or `_`.
fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads an opened key file after checking its mode and size (on the open handle, so the
/// file checked is the file read).
fn read_key_file(file: &mut File, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let meta = file
        .metadata()
        .map_err(SecretError::io("cannot read the key file", path))?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE {
        return Err(SecretError::KeySyntax {
            origin: path.display().to_string(),
            unit: "line",
            line: 1,
            problem: format!(
                "this is not a key file (not a regular file of at most {MAX_KEY_FILE} bytes)"
            ),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Insecure {
            path: path.to_path_buf(),
            mode,
        });
    }
    // Room for all of it up front, so the buffer never moves (which would leave a copy).
    let mut text = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.take(MAX_KEY_FILE)
        .read_to_end(&mut text)
        .map_err(SecretError::io("cannot read the key file", path))?;
    Ok(text)
}

/// Parses `<id> <base64 key>` entries separated by any of `separators`; blank entries and
/// `#` comments are skipped; the last key is current.
fn parse_list(text: &[u8], separators: &[u8], origin: &str, unit: &'static str) -> Result<Keyring> {
    let syntax = |line: usize, problem: String| SecretError::KeySyntax {
        origin: origin.to_string(),
        unit,
        line,
        problem,
    };
    let mut keys: Vec<(String, Zeroizing<[u8; KEY_LEN]>)> = Vec::new();
    let mut first_seen: Vec<usize> = Vec::new();
    for (n, line) in text.split(|b| separators.contains(b)).enumerate() {
        let n = n + 1;
        let line = std::str::from_utf8(line)
            .map_err(|_| syntax(n, "this is not UTF-8 text".into()))?
            .trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(id), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(syntax(
                n,
                "expected `<key id> <base64 key>`, two fields separated by a space".into(),
            ));
        };
        if !valid_id(id) {
            return Err(syntax(
                n,
                format!(
                    "the key id (first field) must be 1 to {MAX_ID_LEN} letters, digits, '-' or '_'"
                ),
            ));
        }
        if let Some(i) = keys.iter().position(|(seen, _)| seen == id) {
            return Err(syntax(
                n,
                format!(
                    "key id {id:?} is already used on {unit} {}; give every key its own id",
                    first_seen[i]
                ),
            ));
        }
        let key = decode_key(key).map_err(|problem| syntax(n, problem))?;
        keys.push((id.to_string(), key));
        first_seen.push(n);
    }
    if keys.is_empty() {
        return Err(SecretError::NoKeys {
            origin: origin.to_string(),
        });
    }
    Ok(Keyring::from_keys(keys))
}

/// Decodes a base64 key of exactly 32 bytes; the problem, if any, never quotes the input.
fn decode_key(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    // Big enough for any input of a plausible length, so a long one is measured, not cut.
    let mut buf = Zeroizing::new([0u8; 96]);
    let len = KEY_STANDARD
        .decode_slice(text, &mut buf[..])
        .or_else(|_| KEY_URL_SAFE.decode_slice(text, &mut buf[..]))
        .map_err(|_| {
            "the key is not valid base64 (or too long); make one with `openssl rand -base64 32`"
                .to_string()
        })?;
    if len != KEY_LEN {
        return Err(format!(
            "the key is {len} bytes long; it must be {KEY_LEN} (256 bits): make one with `openssl rand -base64 32`"
        ));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&buf[..KEY_LEN]);
    Ok(key)
}

/// 32 bytes from the operating system's generator.
fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(&mut key[..])?;
    Ok(key)
}

/// Appends `<id> <base64 key>\n` without leaving copies of the key behind (`out` must have
/// room for it: growing would leave the old buffer unwiped).
fn push_key_line(out: &mut Zeroizing<String>, id: &str, key: &[u8; KEY_LEN]) {
    let mut b64 = Zeroizing::new([0u8; 64]);
    let len = general_purpose::STANDARD
        .encode_slice(key, &mut b64[..])
        .expect("64 bytes hold the base64 of 32");
    out.push_str(id);
    out.push(' ');
    out.push_str(std::str::from_utf8(&b64[..len]).expect("base64 is ASCII"));
    out.push('\n');
}

#[derive(Clone, Copy)]
enum Replace {
    Never,
    Yes,
}

/// Writes `data` to `path` as a new owner-only file: into a temporary file beside it,
/// synced, then moved into place (renamed over the old file, or linked so that an existing
/// file is never replaced) and the folder synced. A reader sees the old file or the new one.
fn write_atomically(path: &Path, data: &[u8], replace: Replace) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| SecretError::Io {
            what: "cannot write the key file to",
            path: path.to_path_buf(),
            source: io::ErrorKind::InvalidInput.into(),
        })?
        .to_string_lossy();
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix)?;
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", u64::from_le_bytes(suffix)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(SecretError::io("cannot create", &tmp))?;
        // The mode given to open is filtered by the umask; make sure of it.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(SecretError::io("cannot set the mode of", &tmp))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(SecretError::io("cannot write", &tmp))?;
        match replace {
            Replace::Yes => fs::rename(&tmp, path).map_err(SecretError::io("cannot replace", path)),
            Replace::Never => match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SecretError::Exists {
                    path: path.to_path_buf(),
                }),
                Err(e) => Err(SecretError::io("cannot create", path)(e)),
            },
        }
    })();
    // After a rename there is nothing left to remove; after a link or a failure the
    // temporary name goes.
    let _ = fs::remove_file(&tmp);
    result?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SecretError::io("cannot sync the folder", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: &[u8] = b"project:12:credentials";

    fn b64(bytes: &[u8]) -> String {
        general_purpose::STANDARD.encode(bytes)
    }

    fn keyring() -> Keyring {
        Keyring::from_env_value(&b64(&[7u8; 32])).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_keyring_can_be_shared_between_threads() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<Keyring>();
    }

    #[test]
    fn roundtrip() {
        let k = keyring();
        for plain in [
            &b""[..],
            b"x",
            b"hunter2",
            &[0u8, 255, 10, 13][..],
            &[b'a'; 5000][..],
        ] {
            let sealed = k.seal(plain, AAD);
            assert!(sealed.starts_with("gsec1:env:"), "{sealed}");
            assert!(is_sealed(&sealed));
            assert_eq!(k.open(&sealed, AAD).unwrap().expose_secret(), plain);
        }
        let sealed = k.seal("pässwörd".as_bytes(), AAD);
        assert_eq!(
            k.open_string(&sealed, AAD).unwrap().expose_secret(),
            "pässwörd"
        );
        let binary = k.seal(&[0xff, 0xfe], AAD);
        assert!(matches!(
            k.open_string(&binary, AAD),
            Err(SecretError::NotText)
        ));
    }

    #[test]
    fn is_sealed_tells_sealed_from_plain() {
        assert!(!is_sealed("hunter2"));
        assert!(!is_sealed("gsec1:"));
        assert!(!is_sealed("gsec1:k1:"));
        assert!(!is_sealed("gsec1:k1:AAAA"));
        assert!(!is_sealed("gsec1:k:1:AAAA"));
        assert!(is_sealed(&keyring().seal(b"v", AAD)));
    }

    #[test]
    fn tampering_any_character_or_byte_fails() {
        let k = keyring();
        let sealed = k.seal(b"the deploy key", AAD);
        // Every character of the text, changed to another one.
        for i in 0..sealed.len() {
            let mut bytes = sealed.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(
                k.open(&changed, AAD).is_err(),
                "changed character {i} still opens"
            );
        }
        // Every bit of every byte of the data, re-encoded: authentication must catch it.
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let raw = URL_SAFE_NO_PAD.decode(body).unwrap();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut raw = raw.clone();
                raw[i] ^= 1 << bit;
                let changed = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&raw));
                let err = k.open(&changed, AAD).unwrap_err();
                assert!(
                    matches!(err, SecretError::Tampered),
                    "byte {i} bit {bit}: {err}"
                );
            }
        }
        // Cut short or lengthened.
        let short = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1]));
        assert!(matches!(k.open(&short, AAD), Err(SecretError::Tampered)));
        let long = format!(
            "{head}:{}",
            URL_SAFE_NO_PAD.encode([&raw[..], &[0]].concat())
        );
        assert!(matches!(k.open(&long, AAD), Err(SecretError::Tampered)));
    }

    #[test]
    fn another_row_cannot_open_it() {
        let k = keyring();
        let sealed = k.seal(b"s3cr3t", b"project:12:credentials");
        for aad in [
            &b"project:13:credentials"[..],
            b"project:12:credential",
            b"",
        ] {
            let err = k.open(&sealed, aad).unwrap_err();
            assert!(matches!(err, SecretError::Tampered));
            assert_eq!(
                err.to_string(),
                "cannot decrypt: the value was altered or belongs to another row"
            );
        }
    }

    #[test]
    fn the_key_id_is_authenticated() {
        // Two keyrings holding the same key under different ids: relabelling fails.
        let key = b64(&[9u8; 32]);
        let k = Keyring::from_env_value(&format!("a {key};b {key}")).unwrap();
        let sealed = k.seal(b"v", AAD);
        assert!(sealed.starts_with("gsec1:b:"));
        let relabelled = sealed.replacen("gsec1:b:", "gsec1:a:", 1);
        assert!(matches!(
            k.open(&relabelled, AAD),
            Err(SecretError::Tampered)
        ));
    }

    #[test]
    fn unknown_key_names_the_id() {
        let old = Keyring::from_env_value(&format!("k7 {}", b64(&[1u8; 32]))).unwrap();
        let sealed = old.seal(b"v", AAD);
        let err = keyring().open(&sealed, AAD).unwrap_err();
        assert!(matches!(err, SecretError::UnknownKey { .. }));
        let msg = err.to_string();
        assert!(msg.contains("\"k7\""), "{msg}");
        assert!(msg.contains("missing a rotated key"), "{msg}");
        assert!(msg.contains("env"), "{msg}");
    }

    #[test]
    fn malformed_texts_are_not_quoted() {
        let k = keyring();
        for text in [
            "hunter2",
            "gsec1:hunter2",
            "gsec1:k1:hunter2!",
            "gsec1:k1:AAAA",
        ] {
            let err = k.open(text, AAD).unwrap_err();
            assert!(matches!(err, SecretError::Malformed(_)), "{text}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }

    #[test]
    fn two_seals_differ() {
        let k = keyring();
        let a = k.seal(b"same", AAD);
        let b = k.seal(b"same", AAD);
        assert_ne!(a, b);
        assert_eq!(k.open(&a, AAD).unwrap().expose_secret(), b"same");
        assert_eq!(k.open(&b, AAD).unwrap().expose_secret(), b"same");
    }

    #[test]
    fn the_sealed_text_does_not_contain_the_plaintext() {
        let k = keyring();
        let plain = b"correct horse battery staple, correct horse battery staple!";
        let sealed = k.seal(plain, AAD);
        assert!(!sealed.contains("correct"));
        // Nor its base64, at any alignment, in either alphabet.
        for shift in 0..3 {
            let shifted = [&vec![0u8; shift][..], plain].concat();
            for enc in [
                general_purpose::STANDARD.encode(&shifted),
                URL_SAFE_NO_PAD.encode(&shifted),
            ] {
                let middle = &enc[4..enc.len() - 4];
                assert!(!sealed.contains(middle), "{sealed} contains {middle}");
            }
        }
    }

    #[test]
    fn debug_shows_ids_only() {
        let key = [0x5au8; 32];
        let k = Keyring::from_env_value(&format!("k1 {};k2 {}", b64(&[1; 32]), b64(&key))).unwrap();
        let debug = format!("{k:?}");
        assert_eq!(debug, r#"Keyring { keys: ["k1", "k2"], current: "k2" }"#);
        let pretty = format!("{k:#?}");
        assert!(!pretty.contains(&b64(&key)));
        assert!(
            !pretty.contains("5a5a") && !pretty.contains("90, 90"),
            "{pretty}"
        );
        let opened = k.open(&k.seal(b"hunter2", AAD), AAD).unwrap();
        assert!(!format!("{opened:?}").contains("hunter2"));
    }

    #[test]
    fn env_value_forms() {
        let (a, b) = (b64(&[1; 32]), b64(&[2; 32]));
        let bare = Keyring::from_env_value(&format!(" {a}\n")).unwrap();
        assert_eq!(bare.current_id(), "env");
        let list = Keyring::from_env_value(&format!("k1 {a}; k2 {b}")).unwrap();
        assert_eq!(list.ids().collect::<Vec<_>>(), ["k1", "k2"]);
        let lines = Keyring::from_env_value(&format!("# old\nk1 {a}\n\nk2 {b}\n")).unwrap();
        assert_eq!(lines.current_id(), "k2");
        // Unpadded and URL-safe keys are accepted too.
        let url = URL_SAFE_NO_PAD.encode([0xfbu8; 32]);
        assert_eq!(Keyring::from_env_value(&url).unwrap().current_id(), "env");

        let err = Keyring::from_env_value(&format!("k1 {a};k2 {}", b64(&[3; 16]))).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("GANTRY_SECRETS_KEY, entry 2: the key is 16 bytes"),
            "{msg}"
        );
        assert!(!msg.contains(&b64(&[3; 16])), "{msg}");
        assert!(matches!(
            Keyring::from_env_value(" ; "),
            Err(SecretError::NoKeys { .. })
        ));
        assert!(Keyring::from_env_value("not-base64!").is_err());
    }

    #[test]
    fn malformed_lines_are_named_by_number_without_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let good = b64(&[4; 32]);
        let short = b64(&[5; 20]);
        let cases = [
            (
                format!("# c\nk1 {good}\n\nk2 {short}\n"),
                4,
                "20 bytes long",
            ),
            (format!("k1 {good}\n{good}\n"), 2, "two fields"),
            (format!("k1 {good} extra\n"), 1, "two fields"),
            (format!("k:1 {good}\n"), 1, "key id"),
            (format!("{good} k1\n"), 1, "key id"),
            (
                format!("k1 {good}\nk1 {good}\n"),
                2,
                "already used on line 1",
            ),
            (format!("k1 {good}\nk2 ***\n"), 2, "not valid base64"),
        ];
        for (text, line, what) in cases {
            fs::write(&path, &text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = Keyring::load_file(&path).unwrap_err();
            let SecretError::KeySyntax { line: got, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(*got, line, "{text}");
            let msg = err.to_string();
            assert!(msg.contains(&format!(", line {line}: ")), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(what), "{msg}");
            for shown in [msg, format!("{err:?}")] {
                assert!(!shown.contains(&good) && !shown.contains(&short), "{shown}");
            }
        }
        fs::write(&path, "# nothing yet\n").unwrap();
        assert!(matches!(
            Keyring::load_file(&path),
            Err(SecretError::NoKeys { .. })
        ));
    }

    #[test]
    fn load_refuses_a_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        fs::write(&path, format!("k1 {}\n", b64(&[6; 32]))).unwrap();
        for m in [0o644, 0o640, 0o604, 0o602] {
            fs::set_permissions(&path, fs::Permissions::from_mode(m)).unwrap();
            let err = Keyring::load_file(&path).unwrap_err();
            assert!(matches!(err, SecretError::Insecure { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("chmod 600 {}", path.display())),
                "{msg}"
            );
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(Keyring::rotate_file(&path).is_err());
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(Keyring::load_file(&path).unwrap().current_id(), "k1");
    }

    #[test]
    fn create_rotate_reload_reseal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let first = Keyring::create_file(&path).unwrap();
        assert_eq!(first.current_id(), "k1");
        assert_eq!(mode(&path), 0o600);
        let sealed_k1 = first.seal(b"old value", AAD);
        // Nothing left behind but the file.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secrets.key"]);

        // The file reloads to the same key.
        let reloaded = Keyring::load_file(&path).unwrap();
        assert_eq!(
            reloaded.open(&sealed_k1, AAD).unwrap().expose_secret(),
            b"old value"
        );
        assert_eq!(reloaded.reseal(&sealed_k1, AAD).unwrap(), None);

        // Creating again refuses, and leaves the keys alone.
        let before = fs::read(&path).unwrap();
        let err = Keyring::create_file(&path).unwrap_err();
        assert!(matches!(err, SecretError::Exists { .. }), "{err:?}");
        assert_eq!(fs::read(&path).unwrap(), before);

        assert_eq!(Keyring::rotate_file(&path).unwrap(), "k2");
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secrets.key"]);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(std::str::from_utf8(&before).unwrap()),
            "old keys kept"
        );

        let second = Keyring::load_file(&path).unwrap();
        assert_eq!(second.ids().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(second.current_id(), "k2");
        assert_eq!(
            second.open(&sealed_k1, AAD).unwrap().expose_secret(),
            b"old value"
        );
        let sealed_k2 = second.seal(b"new value", AAD);
        assert!(sealed_k2.starts_with("gsec1:k2:"), "{sealed_k2}");
        // The old keyring cannot open what the new key sealed.
        assert!(matches!(
            first.open(&sealed_k2, AAD),
            Err(SecretError::UnknownKey { .. })
        ));

        let moved = second
            .reseal(&sealed_k1, AAD)
            .unwrap()
            .expect("k1 is not current");
        assert!(moved.starts_with("gsec1:k2:"), "{moved}");
        assert_eq!(
            second.open(&moved, AAD).unwrap().expose_secret(),
            b"old value"
        );
        assert_eq!(second.reseal(&moved, AAD).unwrap(), None);
        // Resealing checks the row binding of what it moves.
        assert!(matches!(
            second.reseal(&sealed_k1, b"project:13:credentials"),
            Err(SecretError::Tampered)
        ));

        // Ids keep counting past gaps and custom ids; comments survive.
        fs::write(
            &path,
            format!(
                "# mine\nk1 {}\nk5 {}\nbackup {}",
                b64(&[1; 32]),
                b64(&[2; 32]),
                b64(&[3; 32])
            ),
        )
        .unwrap();
        assert_eq!(Keyring::rotate_file(&path).unwrap(), "k6");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine\n"), "{text}");
        assert_eq!(
            Keyring::load_file(&path).unwrap().ids().collect::<Vec<_>>(),
            ["k1", "k5", "backup", "k6"]
        );
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn concurrent_rotations_lose_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        Keyring::create_file(&path).unwrap();
        let mut ids: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        (0..5)
                            .map(|_| Keyring::rotate_file(&path).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        ids.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
        let expected: Vec<String> = (2..=31).map(|n| format!("k{n}")).collect();
        assert_eq!(ids, expected);
        let all: Vec<String> = Keyring::load_file(&path)
            .unwrap()
            .ids()
            .map(str::to_string)
            .collect();
        assert_eq!(all.len(), 31, "{all:?}");
        assert_eq!(all.last().unwrap(), "k31");
    }

    #[test]
    fn rotating_a_missing_file_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none");
        let err = Keyring::rotate_file(&path).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(!path.exists());
    }
}
