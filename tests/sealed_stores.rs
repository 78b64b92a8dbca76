//! The encrypted file store and the keyring store: the store contract, sealed bytes that give
//! nothing away, every kind of bad file as a typed error with the file untouched, keys from
//! every source, key rotation, and the keyring's fallback to an encrypted file. The keyring
//! tests use `keyring_core`'s mock store; one test talks to a real Secret Service when
//! `KEEPFRESH_KEYRING_TEST=1` (run it under `.ci/with-keyring`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use keepfresh::runtime::Runtime;
use keepfresh::store::contract::{Contract, Fixture};
use keepfresh::store::keyring_core::{self, mock, CredentialStore, Entry};
use keepfresh::store::{
    EncryptedFileStore, Key, KeyringStore, SaveOutcome, StoreError, StoreErrorKind, TokenStore,
    Version,
};
use keepfresh::{AccessToken, RefreshToken, TokenSet};

/// A temporary directory private to this user (tempfile's follows the umask).
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// A fixed instant, so that a set made twice compares equal.
fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_900_000_000)
}

fn set(n: u32) -> TokenSet {
    let now = now();
    TokenSet::new(
        AccessToken::new(format!("secret-at-{n}")),
        Some(RefreshToken::new(format!("secret-rt-{n}"))),
        now,
        now + time::Duration::hours(1),
    )
}

/// A token set whose document is about 3 KB: over Windows' 2,560-byte cap.
fn big_set(n: u32) -> TokenSet {
    let now = now();
    TokenSet::new(
        AccessToken::new(format!("secret-at-{n}-{}", "j".repeat(3000))),
        Some(RefreshToken::new(format!("secret-rt-{n}"))),
        now,
        now + time::Duration::hours(1),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn saved(outcome: SaveOutcome) -> Version {
    match outcome {
        SaveOutcome::Saved(v) => v,
        SaveOutcome::Conflict(_) => panic!("the save conflicted"),
    }
}

/// The error's text, checked to carry no token and no key material.
fn clean(e: &StoreError, key: &Key) -> String {
    let text = format!("{e} {e:?}");
    assert!(!text.contains("secret-"), "the error shows a token: {text}");
    assert!(
        !text.contains(key.to_base64().as_str()),
        "the error shows the key: {text}"
    );
    text
}

// ---------------------------------------------------------------- encrypted file store

struct Sealed {
    dir: tempfile::TempDir,
    key: Key,
    n: usize,
}

#[async_trait]
impl Fixture for Sealed {
    type Store = EncryptedFileStore;
    async fn fresh(&mut self) -> EncryptedFileStore {
        self.n += 1;
        let path = self.dir.path().join(format!("t{}.sealed", self.n));
        EncryptedFileStore::open(path, "test/contract", self.key.clone()).unwrap()
    }
    async fn reopen(&mut self, store: &EncryptedFileStore) -> EncryptedFileStore {
        EncryptedFileStore::open(store.path(), "test/contract", self.key.clone()).unwrap()
    }
}

#[tokio::test]
async fn encrypted_file_store_passes_the_store_contract() {
    let report = Contract::new(Runtime::tokio())
        .notifies(true)
        .check(&mut Sealed {
            dir: private_dir(),
            key: Key::generate().unwrap(),
            n: 0,
        })
        .await
        .unwrap_or_else(|v| panic!("{v:#?}"));
    assert_eq!(report.passed.len(), 11, "{:?}", report.passed);
}

/// A store with one saved set, its file's bytes and its key.
async fn sealed_with_tokens(dir: &Path, name: &str, identity: &str) -> (PathBuf, Key, Vec<u8>) {
    let path = dir.join(name);
    let key = Key::generate().unwrap();
    let store = EncryptedFileStore::open(&path, identity, key.clone()).unwrap();
    store.save(None, &set(1)).await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, key, bytes)
}

#[tokio::test]
async fn sealed_bytes_never_contain_the_tokens() {
    let dir = private_dir();
    let path = dir.path().join("t.sealed");
    let store = EncryptedFileStore::open(&path, "github/alice", Key::generate().unwrap()).unwrap();
    let v = saved(store.save(None, &set(1)).await.unwrap());
    let first = std::fs::read(&path).unwrap();
    saved(store.save(Some(v), &set(1)).await.unwrap());
    let second = std::fs::read(&path).unwrap();
    for bytes in [&first, &second] {
        assert!(bytes.starts_with(b"KFSEAL\x01"));
        for needle in [
            &b"secret-at-1"[..],
            b"secret-rt-1",
            b"access_token",
            b"keepfresh_store",
            b"github/alice",
        ] {
            assert!(
                !contains(bytes, needle),
                "the file shows {}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    // A fresh nonce on every write: the same tokens never seal to the same bytes.
    assert_ne!(first[23..47], second[23..47]);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// Loads and saves over `path` with `store` fail as `Corrupt`, mentioning `says`, and leave the
/// file byte for byte as it is.
async fn refused(store: &EncryptedFileStore, key: &Key, path: &Path, says: &str, label: &str) {
    let before = std::fs::read(path).unwrap();
    let e = store.load().await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{label}: {e}");
    let text = clean(&e, key);
    assert!(text.contains(says), "{label}: expected {says:?} in {text}");
    assert!(text.contains("left as it is"), "{label}: {text}");
    for expected in [None, Some(Version(1))] {
        let e = store.save(expected, &set(2)).await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{label}: save over it");
    }
    let e = store.clear(Version(1)).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{label}: clear over it");
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "{label}: the file changed"
    );
}

#[tokio::test]
async fn a_wrong_key_is_a_typed_error_naming_both_keys() {
    let dir = private_dir();
    let (path, key, _) = sealed_with_tokens(dir.path(), "t.sealed", "github/alice").await;
    let other = Key::generate().unwrap();
    let store = EncryptedFileStore::open(&path, "github/alice", other.clone()).unwrap();
    refused(
        &store,
        &other,
        &path,
        "sealed with another key",
        "wrong key",
    )
    .await;
    let text = store.load().await.unwrap_err().to_string();
    assert!(text.contains(&key.id().to_string()), "{text}");
    assert!(text.contains(&other.id().to_string()), "{text}");
}

#[tokio::test]
async fn every_tampered_byte_is_a_typed_error_and_the_file_is_left_alone() {
    let dir = private_dir();
    let (path, key, original) = sealed_with_tokens(dir.path(), "t.sealed", "github/alice").await;
    let len = original.len();
    let cases = [
        ("magic", 0, "no KFSEAL header"),
        ("format version", 6, "sealed in format"),
        ("key id", 7, "sealed with another key"),
        ("identity tag", 15, "sealed for another credential"),
        ("nonce, first byte", 23, "fails authentication"),
        ("nonce, last byte", 46, "fails authentication"),
        ("ciphertext, first byte", 47, "fails authentication"),
        (
            "ciphertext, middle",
            (47 + len - 16) / 2,
            "fails authentication",
        ),
        ("tag, first byte", len - 16, "fails authentication"),
        ("tag, last byte", len - 1, "fails authentication"),
    ];
    let store = EncryptedFileStore::open(&path, "github/alice", key.clone()).unwrap();
    for (label, at, says) in cases {
        for flip in [0x01, 0x80] {
            let mut bytes = original.clone();
            bytes[at] ^= flip;
            std::fs::write(&path, &bytes).unwrap();
            refused(&store, &key, &path, says, label).await;
        }
    }
    // The original bytes still open: the checks above changed nothing but the copy.
    std::fs::write(&path, &original).unwrap();
    assert_eq!(store.load().await.unwrap().unwrap().tokens, set(1));
}

#[tokio::test]
async fn truncated_files_are_typed_errors() {
    let dir = private_dir();
    let (path, key, original) = sealed_with_tokens(dir.path(), "t.sealed", "github/alice").await;
    let store = EncryptedFileStore::open(&path, "github/alice", key.clone()).unwrap();
    let len = original.len();
    let cases = [
        (0, "no KFSEAL header"),
        (4, "no KFSEAL header"),
        (7, "truncated"),
        (30, "truncated"),
        (62, "truncated"),
        (63, "fails authentication"),
        (len / 2, "fails authentication"),
        (len - 1, "fails authentication"),
    ];
    for (keep, says) in cases {
        std::fs::write(&path, &original[..keep]).unwrap();
        refused(&store, &key, &path, says, &format!("cut to {keep} bytes")).await;
    }
}

#[tokio::test]
async fn swapped_or_copied_files_of_another_identity_are_refused() {
    let dir = private_dir();
    let key = Key::generate().unwrap();
    let alice_path = dir.path().join("alice.sealed");
    let bob_path = dir.path().join("bob.sealed");
    let alice = EncryptedFileStore::open(&alice_path, "github/alice", key.clone()).unwrap();
    let bob = EncryptedFileStore::open(&bob_path, "github/bob", key.clone()).unwrap();
    alice.save(None, &set(1)).await.unwrap();
    bob.save(None, &set(2)).await.unwrap();

    // Swap the two files: each store now holds the other user's tokens.
    let (a, b) = (
        std::fs::read(&alice_path).unwrap(),
        std::fs::read(&bob_path).unwrap(),
    );
    std::fs::write(&alice_path, &b).unwrap();
    std::fs::write(&bob_path, &a).unwrap();
    refused(
        &alice,
        &key,
        &alice_path,
        "sealed for another credential",
        "swapped to alice",
    )
    .await;
    refused(
        &bob,
        &key,
        &bob_path,
        "sealed for another credential",
        "swapped to bob",
    )
    .await;

    // The same file under another identity, and under another file name.
    std::fs::write(&alice_path, &a).unwrap();
    let mallory = EncryptedFileStore::open(&alice_path, "github/mallory", key.clone()).unwrap();
    refused(
        &mallory,
        &key,
        &alice_path,
        "sealed for another credential",
        "other identity",
    )
    .await;
    let renamed = dir.path().join("alice-copy.sealed");
    std::fs::write(&renamed, &a).unwrap();
    std::fs::set_permissions(&renamed, std::fs::Permissions::from_mode(0o600)).unwrap();
    let copy = EncryptedFileStore::open(&renamed, "github/alice", key.clone()).unwrap();
    refused(
        &copy,
        &key,
        &renamed,
        "sealed for another credential",
        "renamed",
    )
    .await;

    // Forged header: the identity tag rewritten to match does not get past the cipher.
    let mut forged = b.clone();
    forged[15..23].copy_from_slice(&a[15..23]);
    std::fs::write(&alice_path, &forged).unwrap();
    refused(
        &alice,
        &key,
        &alice_path,
        "fails authentication",
        "forged identity tag",
    )
    .await;
}

#[tokio::test]
async fn a_plain_file_store_file_is_not_taken_for_a_sealed_one() {
    let dir = private_dir();
    let path = dir.path().join("t.json");
    keepfresh::store::FileStore::open(&path)
        .unwrap()
        .save(None, &set(1))
        .await
        .unwrap();
    let key = Key::generate().unwrap();
    let store = EncryptedFileStore::open(&path, "github/alice", key.clone()).unwrap();
    refused(&store, &key, &path, "plain JSON", "plain file").await;
}

#[tokio::test]
async fn the_sealed_file_keeps_the_file_stores_permission_checks() {
    let dir = private_dir();
    let (path, key, _) = sealed_with_tokens(dir.path(), "t.sealed", "me").await;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = EncryptedFileStore::open(&path, "me", key).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

// ---------------------------------------------------------------- rotation

#[tokio::test]
async fn rekey_rewrites_under_the_new_key_and_keeps_the_version() {
    let dir = private_dir();
    let path = dir.path().join("t.sealed");
    let (old, new) = (Key::generate().unwrap(), Key::generate().unwrap());
    let store = EncryptedFileStore::open(&path, "me", old.clone()).unwrap();
    let clone = store.clone();
    let v = saved(store.save(None, &set(1)).await.unwrap());

    store.rekey(new.clone()).await.unwrap();
    assert_eq!(store.key_id(), new.id());
    assert_eq!(clone.key_id(), new.id(), "a clone shares the key");
    // The header names the new key.
    assert_eq!(
        std::fs::read(&path).unwrap()[7..15],
        hex(&new.id().to_string())[..]
    );
    let got = store.load().await.unwrap().unwrap();
    assert_eq!((got.version, got.tokens), (v, set(1)));

    // Another process with the old key: told so, nothing overwritten.
    let stale = EncryptedFileStore::open(&path, "me", old.clone()).unwrap();
    refused(
        &stale,
        &old,
        &path,
        "sealed with another key",
        "old key after rekey",
    )
    .await;
    // With the new key: reads, and writes on from the same version.
    let fresh = EncryptedFileStore::open(&path, "me", new.clone()).unwrap();
    saved(fresh.save(Some(v), &set(2)).await.unwrap());
    assert_eq!(store.load().await.unwrap().unwrap().tokens, set(2));
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn rekey_of_an_empty_store_switches_the_key() {
    let dir = private_dir();
    let path = dir.path().join("t.sealed");
    let new = Key::generate().unwrap();
    let store = EncryptedFileStore::open(&path, "me", Key::generate().unwrap()).unwrap();
    store.rekey(new.clone()).await.unwrap();
    assert!(!path.exists());
    store.save(None, &set(1)).await.unwrap();
    let reader = EncryptedFileStore::open(&path, "me", new).unwrap();
    assert_eq!(reader.load().await.unwrap().unwrap().tokens, set(1));
}

#[tokio::test]
async fn rekey_with_the_wrong_current_key_changes_nothing() {
    let dir = private_dir();
    let (path, key, before) = sealed_with_tokens(dir.path(), "t.sealed", "me").await;
    let wrong = Key::generate().unwrap();
    let store = EncryptedFileStore::open(&path, "me", wrong.clone()).unwrap();
    let e = store.rekey(Key::generate().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Corrupt);
    assert_eq!(store.key_id(), wrong.id(), "the handle keeps its key");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let right = EncryptedFileStore::open(&path, "me", key).unwrap();
    assert_eq!(right.load().await.unwrap().unwrap().tokens, set(1));
}

// ---------------------------------------------------------------- keys

#[test]
fn key_from_env_takes_base64_and_hex_and_never_echoes_the_value() {
    let key = Key::from_bytes(*b"0123456789abcdef0123456789ABCDEF");
    let b64 = key.to_base64().to_string();
    let hex: String = b"0123456789abcdef0123456789ABCDEF"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let url_unpadded = b64
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_");
    let cases = [
        ("base64", b64.clone()),
        ("base64 unpadded", b64.trim_end_matches('=').to_owned()),
        ("base64 url-safe", url_unpadded),
        ("hex lower", hex.clone()),
        ("hex upper", hex.to_uppercase()),
        ("with whitespace", format!("  {b64}\n")),
    ];
    for (i, (label, value)) in cases.iter().enumerate() {
        let var = format!("KEEPFRESH_TEST_KEY_OK_{i}");
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var(&var, value) };
        assert_eq!(Key::from_env(&var).unwrap().id(), key.id(), "{label}");
    }
    let bad = [
        ("too short", "c2hvcnQ=".to_owned()),
        ("31 bytes of hex", hex[..62].to_owned()),
        ("not hex", "zz".repeat(32)),
        ("33 bytes", format!("{b64}AAAA")),
        (
            "a passphrase",
            "correct horse battery staple secret-passphrase".to_owned(),
        ),
    ];
    for (i, (label, value)) in bad.iter().enumerate() {
        let var = format!("KEEPFRESH_TEST_KEY_BAD_{i}");
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var(&var, value) };
        let e = Key::from_env(&var).unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Config, "{label}");
        let text = format!("{e} {e:?}");
        assert!(text.contains(&var), "{label}: {text}");
        assert!(
            !text.contains(value.as_str()),
            "{label}: echoes the value: {text}"
        );
    }
    let e = Key::from_env("KEEPFRESH_TEST_KEY_UNSET").unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(e.to_string().contains("not set"), "{e}");
}

#[test]
fn key_from_file_takes_raw_bytes_or_text_with_the_token_file_checks() {
    let dir = private_dir();
    let key = Key::generate().unwrap();
    let write = |name: &str, bytes: &[u8], mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let b64 = key.to_base64().to_string();
    let path = write("b64.key", format!("{b64}\n").as_bytes(), 0o600);
    assert_eq!(Key::from_file(&path).unwrap().id(), key.id());
    let raw = base64_decode(&b64);
    let path = write("raw.key", &raw, 0o600);
    assert_eq!(Key::from_file(&path).unwrap().id(), key.id());
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let path = write("hex.key", hex.as_bytes(), 0o400);
    assert_eq!(Key::from_file(&path).unwrap().id(), key.id());

    let loose = write("loose.key", &raw, 0o640);
    let e = Key::from_file(&loose).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(e.to_string().contains("chmod 600"), "{e}");

    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(dir.path().join("raw.key"), &link).unwrap();
    let e = Key::from_file(&link).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");

    let e = Key::from_file(dir.path().join("missing.key")).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(e.to_string().contains("does not exist"), "{e}");

    let garbage = write("garbage.key", b"secret-passphrase-not-a-key", 0o600);
    let e = Key::from_file(&garbage).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(!e.to_string().contains("secret-passphrase"), "{e}");
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

#[test]
fn key_from_the_keyring_is_created_once_and_read_back() {
    let keyring: Arc<CredentialStore> = mock::Store::new().unwrap();
    let first = Key::from_keyring_in(&keyring, "keepfresh-test", "store-key").unwrap();
    let again = Key::from_keyring_in(&keyring, "keepfresh-test", "store-key").unwrap();
    assert_eq!(first.id(), again.id());
    let entry = Entry::new_in_store(&keyring, "keepfresh-test", "store-key").unwrap();
    assert_eq!(entry.get_password().unwrap(), first.to_base64().as_str());
    let other = Key::from_keyring_in(&keyring, "keepfresh-test", "other-key").unwrap();
    assert_ne!(first.id(), other.id());

    // An entry that holds something else is reported and left alone, never replaced.
    let entry = Entry::new_in_store(&keyring, "keepfresh-test", "not-a-key").unwrap();
    entry
        .set_password("secret-password-of-something-else")
        .unwrap();
    let e = Key::from_keyring_in(&keyring, "keepfresh-test", "not-a-key").unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Corrupt);
    assert!(!e.to_string().contains("secret-password"), "{e}");
    assert_eq!(
        entry.get_password().unwrap(),
        "secret-password-of-something-else"
    );
}

#[tokio::test]
async fn debug_display_and_errors_never_show_keys_or_tokens() {
    let dir = private_dir();
    let key = Key::generate().unwrap();
    let b64 = key.to_base64().to_string();
    let store = EncryptedFileStore::open(dir.path().join("t.sealed"), "me", key.clone()).unwrap();
    store.save(None, &set(7)).await.unwrap();
    let keyring: Arc<CredentialStore> = mock::Store::new().unwrap();
    let builder = KeyringStore::builder("keepfresh-test", "debug")
        .credential_store(keyring.clone())
        .lock_dir(dir.path().join("locks"))
        .fallback_file(dir.path().join("fallback.sealed"))
        .max_secret_len(300);
    let kstore = builder.clone().open().unwrap();
    kstore.save(None, &set(7)).await.unwrap();
    let v = kstore.load().await.unwrap().unwrap().version;
    kstore.save(Some(v), &big_set(7)).await.unwrap();
    let wrong = EncryptedFileStore::open(store.path(), "me", Key::generate().unwrap()).unwrap();
    let e = wrong.load().await.unwrap_err();
    let texts = [
        format!("{key:?}"),
        format!("{:?} {}", key.id(), key.id()),
        format!("{store:?}"),
        format!("{builder:?}"),
        format!("{kstore:?}"),
        format!("{e} {e:?}"),
        format!("{:?}", store.load().await.unwrap()),
        format!("{:?}", kstore.load().await.unwrap()),
    ];
    let raw_hex: String = base64_decode(&b64)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for text in texts {
        assert!(!text.contains("secret-"), "shows a token: {text}");
        assert!(!text.contains(&b64), "shows the key: {text}");
        assert!(!text.contains(&raw_hex), "shows the key: {text}");
    }
    assert_eq!(format!("{key:?}"), format!("Key {{ id: {} }}", key.id()));
}

// ---------------------------------------------------------------- keyring store

struct Keyring {
    keyring: Arc<CredentialStore>,
    dir: tempfile::TempDir,
    max_secret: usize,
    n: usize,
}

impl Keyring {
    fn new(max_secret: usize) -> Keyring {
        Keyring {
            keyring: mock::Store::new().unwrap(),
            dir: private_dir(),
            max_secret,
            n: 0,
        }
    }

    fn open(&self, account: &str) -> KeyringStore {
        KeyringStore::builder("keepfresh-test", account)
            .credential_store(self.keyring.clone())
            .lock_dir(self.dir.path().join("locks"))
            .fallback_file(self.dir.path().join(format!("{account}.sealed")))
            .max_secret_len(self.max_secret)
            .open()
            .unwrap()
    }

    fn entry(&self, account: &str) -> Entry {
        Entry::new_in_store(&self.keyring, "keepfresh-test", account).unwrap()
    }
}

#[async_trait]
impl Fixture for Keyring {
    type Store = KeyringStore;
    async fn fresh(&mut self) -> KeyringStore {
        self.n += 1;
        self.open(&format!("account-{}", self.n))
    }
    async fn reopen(&mut self, store: &KeyringStore) -> KeyringStore {
        self.open(store.account())
    }
}

#[tokio::test]
async fn keyring_store_passes_the_store_contract() {
    let report = Contract::new(Runtime::tokio())
        .notifies(true)
        .check(&mut Keyring::new(KeyringStore::PLATFORM_MAX_SECRET))
        .await
        .unwrap_or_else(|v| panic!("{v:#?}"));
    assert_eq!(report.passed.len(), 11, "{:?}", report.passed);
}

/// With a cap below every document, every save goes through the fallback file.
#[tokio::test]
async fn keyring_store_passes_the_store_contract_through_its_fallback_file() {
    let mut fixture = Keyring::new(0);
    let report = Contract::new(Runtime::tokio())
        .notifies(true)
        .check(&mut fixture)
        .await
        .unwrap_or_else(|v| panic!("{v:#?}"));
    assert_eq!(report.passed.len(), 11, "{:?}", report.passed);
    let raw = fixture.entry("account-2").get_secret().unwrap();
    assert!(
        raw.starts_with(b"{\"keepfresh_fallback\""),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[tokio::test]
async fn keyring_entry_holds_the_versioned_document() {
    let k = Keyring::new(KeyringStore::PLATFORM_MAX_SECRET);
    let store = k.open("alice");
    let v = saved(store.save(None, &set(1)).await.unwrap());
    let raw = k.entry("alice").get_secret().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(doc["keepfresh_store"], 1);
    assert_eq!(doc["version"], v.0);
    assert!(!k.dir.path().join("alice.sealed").exists());
    // The lock files live in the private lock directory.
    let locks = k.dir.path().join("locks");
    assert_eq!(
        std::fs::metadata(&locks).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(std::fs::read_dir(&locks).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".lock")));
}

#[tokio::test]
async fn a_token_set_too_big_for_the_keyring_moves_to_the_encrypted_file_and_back() {
    // Windows' cap, tested on any platform through the mock.
    let k = Keyring::new(2560);
    let store = k.open("alice");
    let file = k.dir.path().join("alice.sealed");
    assert_eq!(store.fallback_file(), Some(file.as_path()));

    let v1 = saved(store.save(None, &set(1)).await.unwrap());
    assert!(!file.exists());

    let v2 = saved(store.save(Some(v1), &big_set(2)).await.unwrap());
    let pointer = k.entry("alice").get_secret().unwrap();
    assert!(pointer.starts_with(b"{\"keepfresh_fallback\":1"));
    assert!(pointer.len() < 2560);
    let sealed = std::fs::read(&file).unwrap();
    assert!(sealed.starts_with(b"KFSEAL"));
    assert!(!contains(&sealed, b"secret-"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The file's key is in the keyring too, beside the entry.
    assert!(k.entry("alice#keepfresh-file-key").get_password().is_ok());

    // Another handle (another process) reads the big set through the pointer.
    let other = k.open("alice");
    let got = other.load().await.unwrap().unwrap();
    assert_eq!((got.version, got.tokens), (v2, big_set(2)));

    // Compare-and-swap still holds across the move.
    assert!(matches!(
        store.save(Some(v1), &set(9)).await.unwrap(),
        SaveOutcome::Conflict(Some(_))
    ));

    // Small again: back in the entry, and the file with spent tokens is removed.
    let v3 = saved(other.save(Some(v2), &set(3)).await.unwrap());
    assert!(!file.exists());
    let raw = k.entry("alice").get_secret().unwrap();
    assert!(raw.starts_with(b"{\"keepfresh_store\""));
    let got = store.load().await.unwrap().unwrap();
    assert_eq!((got.version, got.tokens), (v3, set(3)));

    // Clear through the file too.
    let v4 = saved(store.save(Some(v3), &big_set(4)).await.unwrap());
    assert!(store.clear(v4).await.unwrap());
    assert!(store.load().await.unwrap().is_none());
    assert!(!file.exists(), "the cleared document fits the entry");
}

#[tokio::test]
async fn without_a_fallback_a_too_big_set_is_a_clear_error() {
    let k = Keyring::new(2560);
    let store = KeyringStore::builder("keepfresh-test", "alice")
        .credential_store(k.keyring.clone())
        .lock_dir(k.dir.path().join("locks"))
        .without_fallback()
        .max_secret_len(2560)
        .open()
        .unwrap();
    let v = saved(store.save(None, &set(1)).await.unwrap());
    let e = store.save(Some(v), &big_set(2)).await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    let text = e.to_string();
    assert!(text.contains("more than the 2560"), "{text}");
    assert!(text.contains("EncryptedFileStore"), "{text}");
    assert!(!text.contains("secret-"), "{text}");
    assert_eq!(store.load().await.unwrap().unwrap().tokens, set(1));
}

#[tokio::test]
async fn a_pointer_to_another_fallback_file_is_a_config_error() {
    let k = Keyring::new(2560);
    let store = k.open("alice");
    store.save(None, &big_set(1)).await.unwrap();
    let elsewhere = KeyringStore::builder("keepfresh-test", "alice")
        .credential_store(k.keyring.clone())
        .lock_dir(k.dir.path().join("locks"))
        .fallback_file(k.dir.path().join("elsewhere.sealed"))
        .open()
        .unwrap();
    let e = elsewhere.load().await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(e.to_string().contains("alice.sealed"), "{e}");
    let off = KeyringStore::builder("keepfresh-test", "alice")
        .credential_store(k.keyring.clone())
        .lock_dir(k.dir.path().join("locks"))
        .without_fallback()
        .open()
        .unwrap();
    let e = off.load().await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(e.to_string().contains("without a fallback file"), "{e}");
}

#[tokio::test]
async fn a_tampered_fallback_file_is_corrupt_and_left_alone() {
    let k = Keyring::new(2560);
    let store = k.open("alice");
    store.save(None, &big_set(1)).await.unwrap();
    let file = k.dir.path().join("alice.sealed");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let e = store.load().await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("fails authentication"), "{e}");
    assert_eq!(
        store
            .save(Some(Version(1)), &set(2))
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::Corrupt
    );
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}

#[tokio::test]
async fn a_fallback_file_whose_key_is_gone_is_corrupt_and_no_key_is_made() {
    let k = Keyring::new(2560);
    k.open("alice").save(None, &big_set(1)).await.unwrap();
    k.entry("alice#keepfresh-file-key")
        .delete_credential()
        .unwrap();
    let file = k.dir.path().join("alice.sealed");
    let before = std::fs::read(&file).unwrap();
    // A new process (a new handle, no cached key).
    let store = k.open("alice");
    let e = store.load().await.unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("missing from the keyring"), "{e}");
    assert!(matches!(
        k.entry("alice#keepfresh-file-key").get_password(),
        Err(keyring_core::Error::NoEntry)
    ));
    assert_eq!(
        store
            .save(Some(Version(1)), &big_set(2))
            .await
            .unwrap_err()
            .kind(),
        StoreErrorKind::Corrupt
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[tokio::test]
async fn bad_keyring_content_is_corrupt_and_left_alone() {
    let k = Keyring::new(KeyringStore::PLATFORM_MAX_SECRET);
    let store = k.open("alice");
    let cases: [&[u8]; 4] = [
        b"secret-at-1 is not a document",
        br#"{"keepfresh_store":2,"version":1,"tokens":null}"#,
        br#"{"keepfresh_fallback":1,"file":"#,
        b"\xff\xfe",
    ];
    for bytes in cases {
        k.entry("alice").set_secret(bytes).unwrap();
        let e = store.load().await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e}");
        assert!(!e.to_string().contains("secret-"), "{e}");
        assert_eq!(
            store.save(None, &set(2)).await.unwrap_err().kind(),
            StoreErrorKind::Corrupt
        );
        assert_eq!(k.entry("alice").get_secret().unwrap(), bytes);
    }
}

#[tokio::test]
async fn keyring_failures_are_typed() {
    let k = Keyring::new(KeyringStore::PLATFORM_MAX_SECRET);
    let store = k.open("alice");
    let entry = k.entry("alice");
    let cred: &mock::Cred = entry.as_any().downcast_ref().unwrap();
    let cases = [
        (
            keyring_core::Error::PlatformFailure("the daemon went away".into()),
            StoreErrorKind::Io,
        ),
        (
            keyring_core::Error::NoStorageAccess("the collection is locked".into()),
            StoreErrorKind::Config,
        ),
        (
            keyring_core::Error::BadEncoding(b"secret-at-1".to_vec()),
            StoreErrorKind::Corrupt,
        ),
    ];
    for (error, kind) in cases {
        cred.set_error(error);
        let e = store.load().await.unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert!(!e.to_string().contains("secret-"), "{e}");
    }
    // The injected errors are spent: the store works again.
    assert!(store.load().await.unwrap().is_none());
}

// ---------------------------------------------------------------- a real Secret Service

/// Runs only with `KEEPFRESH_KEYRING_TEST=1`, inside a D-Bus session with an unlocked Secret
/// Service: `KEEPFRESH_KEYRING_TEST=1 .ci/with-keyring cargo test … --test sealed_stores real_`.
#[tokio::test]
async fn real_secret_service_round_trip() {
    if std::env::var("KEEPFRESH_KEYRING_TEST").as_deref() != Ok("1") {
        eprintln!(
            "not run: set KEEPFRESH_KEYRING_TEST=1 and run under .ci/with-keyring to test against a real Secret Service"
        );
        return;
    }
    let dir = private_dir();
    let account = format!(
        "test-{}-{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let open = |max: usize| {
        KeyringStore::builder("keepfresh-integration-test", &account)
            .lock_dir(dir.path().join("locks"))
            .fallback_file(dir.path().join("fallback.sealed"))
            .max_secret_len(max)
            .open()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let store = open(KeyringStore::PLATFORM_MAX_SECRET);
    assert!(store.load().await.unwrap().is_none());
    let v1 = saved(store.save(None, &set(1)).await.unwrap());
    let got = open(KeyringStore::PLATFORM_MAX_SECRET)
        .load()
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.version, got.tokens), (v1, set(1)));

    // The fallback with Windows' cap, against the real keyring (the file's key lives there).
    let small_cap = open(2560);
    let v2 = saved(small_cap.save(Some(v1), &big_set(2)).await.unwrap());
    assert!(dir.path().join("fallback.sealed").exists());
    assert_eq!(store.load().await.unwrap().unwrap().tokens, big_set(2));
    let v3 = saved(small_cap.save(Some(v2), &set(3)).await.unwrap());
    assert!(!dir.path().join("fallback.sealed").exists());
    assert!(store.clear(v3).await.unwrap());

    // The key source against the real keyring.
    let key_account = format!("{account}-key");
    let key = Key::from_keyring("keepfresh-integration-test", &key_account).unwrap();
    let again = Key::from_keyring("keepfresh-integration-test", &key_account).unwrap();
    assert_eq!(key.id(), again.id());

    // The contract suite, on fresh accounts.
    struct Real {
        dir: PathBuf,
        prefix: String,
        n: usize,
    }
    #[async_trait]
    impl Fixture for Real {
        type Store = KeyringStore;
        async fn fresh(&mut self) -> KeyringStore {
            self.n += 1;
            self.open(&format!("{}-c{}", self.prefix, self.n))
        }
        async fn reopen(&mut self, store: &KeyringStore) -> KeyringStore {
            self.open(store.account())
        }
    }
    impl Real {
        fn open(&self, account: &str) -> KeyringStore {
            KeyringStore::builder("keepfresh-integration-test", account)
                .lock_dir(self.dir.join("locks"))
                .fallback_file(self.dir.join(format!("{account}.sealed")))
                .open()
                .unwrap()
        }
    }
    let mut real = Real {
        dir: dir.path().to_path_buf(),
        prefix: account.clone(),
        n: 0,
    };
    let report = Contract::new(Runtime::tokio())
        .notifies(true)
        .check(&mut real)
        .await
        .unwrap_or_else(|v| panic!("{v:#?}"));
    assert_eq!(report.passed.len(), 11, "{:?}", report.passed);

    // Nothing is removed afterwards: .ci/with-keyring runs a throwaway keyring.
}

/// Store specs open sealed stores: a key from an environment variable or a key file; the same
/// spec opened twice (two processes) reads what the other wrote, and the bytes on disk are sealed.
#[tokio::test]
async fn specs_open_encrypted_file_stores() {
    use keepfresh::store::spec::StoreSpec;
    let dir = private_dir();
    let key = Key::generate().unwrap();
    // TODO: Audit that the environment access only happens in single-threaded code.
    unsafe { std::env::set_var("KEEPFRESH_TEST_SPEC_KEY", key.to_base64().as_str()) };
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, key.to_base64().as_bytes()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (n, source) in [
        "env:KEEPFRESH_TEST_SPEC_KEY".to_owned(),
        format!("file:{}", key_file.display()),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("t{n}.sealed"));
        let spec: StoreSpec = format!("encrypted-file:{}?key={source}", path.display())
            .parse()
            .unwrap();
        let writer = spec.open().await.unwrap();
        writer.save(None, &set(n as u32)).await.unwrap();
        let reader = spec.open().await.unwrap();
        assert_eq!(
            reader.load().await.unwrap().unwrap().tokens,
            set(n as u32),
            "{source}"
        );
        let raw = std::fs::read(&path).unwrap();
        assert!(
            !contains(&raw, format!("secret-rt-{n}").as_bytes()),
            "{source}: not sealed"
        );
    }
    // A key variable that is not set is a clear error naming it.
    let spec: StoreSpec = format!(
        "encrypted-file:{}?key=env:KEEPFRESH_TEST_UNSET_KEY",
        dir.path().join("x").display()
    )
    .parse()
    .unwrap();
    let e = spec.open().await.err().expect("an error");
    assert!(e.to_string().contains("KEEPFRESH_TEST_UNSET_KEY"), "{e}");
}
