//! SoftHSM2 with a token made in a test's own temporary directory.
//!
//! SoftHSM2 finds its token store through `SOFTHSM2_CONF`, read when the module initialises;
//! a test cannot set it in its own process (the environment is shared with every other test).
//! So [`token`] runs the calling test again in a child process whose environment names a
//! fresh store: in the parent it makes the directory, the configuration and the token
//! (`softhsm2-util`), runs the child, and checks that it ran the test and passed; in the child
//! it hands the test its [`Hsm`]. [`Hsm::make_key`] generates the AES key inside the token.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use grantkeeper_core::SecretString;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TOKEN: &str = "grantkeeper";
pub const PIN: &str = "1234";
const SO_PIN: &str = "5678";
/// Set in the child: the store's directory.
const CHILD: &str = "GRANTKEEPER_TEST_SOFTHSM_DIR";

/// Where Debian and others put SoftHSM2's module.
pub fn module() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("GRANTKEEPER_SOFTHSM_MODULE") {
        return Some(PathBuf::from(path));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A SoftHSM2 store with the token [`TOKEN`] (user PIN [`PIN`]).
pub struct Hsm {
    pub dir: PathBuf,
    pub module: PathBuf,
}

/// Writes a SoftHSM2 configuration whose token store is under `dir`; returns its path.
pub fn configure(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let made = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util runs");
    assert!(
        made.status.success(),
        "softhsm2-util --init-token: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    conf
}

/// In the child process, this test's store; in the parent, None once the child passed (or
/// when SoftHSM2 is not installed: skipped, except under CI).
pub fn token(test: &str) -> Option<Hsm> {
    if let Ok(dir) = std::env::var(CHILD) {
        return Some(Hsm {
            dir: PathBuf::from(dir),
            module: module().expect("the parent found the module"),
        });
    }
    if module().is_none() || Command::new("softhsm2-util").arg("-v").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("SoftHSM2 is not installed (apt-get install softhsm2)");
        }
        eprintln!("skipped: SoftHSM2 is not installed (apt-get install softhsm2)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = configure(dir.path());
    let child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    let err = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "{test} in SoftHSM2:\n{out}\n{err}");
    assert!(
        out.contains("1 passed"),
        "{test} did not run:\n{out}\n{err}"
    );
    None
}

impl Hsm {
    /// Generates an AES-256 key labelled `label` inside the token: sensitive, never
    /// extractable, for encrypting and wrapping.
    pub fn make_key(&self, label: &str, id: &[u8]) {
        let module = Pkcs11::new(&self.module).unwrap();
        // Another context of the same module (the source's) may have initialised it already.
        let _ = module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let slot = module
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| module.get_token_info(*s).unwrap().label() == TOKEN)
            .unwrap();
        let session = module.open_rw_session(slot).unwrap();
        let _ = session.login(UserType::User, Some(&SecretString::from(PIN)));
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(id.to_vec()),
                ],
            )
            .unwrap();
        drop(session);
        // Finalising would end the module for every other context of this process too.
        std::mem::forget(module);
    }
}
