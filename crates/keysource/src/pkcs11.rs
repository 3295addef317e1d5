//! The master key in an HSM, through PKCS#11: an AES key held in a token, never extractable,
//! wraps the data keys inside the token.
//!
//! The token and key are named by an RFC 7512 URI ([`Pkcs11Uri`]); the module (the vendor's
//! PKCS#11 library) by `vault.pkcs11_module` or the URI's `module-path`; the user PIN comes
//! from a file or the environment. The module is loaded and initialised once per process; a
//! session is opened and logged in at first use and opened again after the token drops it.
//! Calls into the module block, so they run on tokio's blocking threads.
//!
//! The wrapping, by what the token offers:
//!
//! ```text
//! 0x01 | IV (12) | AES-256-GCM(data key) with its 16-byte tag     CKM_AES_GCM, AAD = data_key_aad(id)
//! 0x02 | AES key wrap with padding (RFC 5649) of id (4, BE) | 4 zero bytes | data key
//!                                                    CKM_AES_KEY_WRAP_PAD
//! ```
//!
//! GCM binds the key id through its AAD; key wrap, which has none, wraps the id with the key
//! and checks it on unwrapping. The wrapped value is 40 bytes, a multiple of 8, so that no
//! padding is added (SoftHSM 2.6 returns RFC 5649's padding with the value on unwrapping). Either way a wrapping altered, or presented for another id,
//! does not unwrap.

use crate::uri::Pkcs11Uri;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use grantkeeper_core::master::{
    BoxFuture, MasterKeyError, MasterKeySource, SettingProblem, data_key_aad,
};
use grantkeeper_core::{KeyId, SecretString};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use zeroize::{Zeroize, Zeroizing};

const URI_SETTING: &str = "vault.pkcs11";
const MODULE_SETTING: &str = "vault.pkcs11_module";
const GCM: u8 = 0x01;
const KEY_WRAP: u8 = 0x02;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What key wrap wraps before the data key: its id, then zeros up to a multiple of 8.
const KEY_WRAP_HEADER: usize = 8;

fn key_wrap_header(id: KeyId) -> [u8; KEY_WRAP_HEADER] {
    let [a, b, c, d] = id.0.to_be_bytes();
    [a, b, c, d, 0, 0, 0, 0]
}

/// How data keys are wrapped in the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrapping {
    /// CKM_AES_GCM through C_Encrypt / C_Decrypt.
    AesGcm,
    /// CKM_AES_KEY_WRAP_PAD through C_WrapKey / C_UnwrapKey.
    AesKeyWrapPad,
}

/// Where to find the key and how to log in.
pub struct Pkcs11Settings {
    /// The RFC 7512 URI of the key.
    pub uri: String,
    /// The module; the URI's `module-path` when None.
    pub module: Option<PathBuf>,
    /// The user PIN; the file of the URI's `pin-source` when None.
    pub pin: Option<SecretString>,
    /// The setting the PIN came from, named when the token refuses it.
    pub pin_setting: &'static str,
    /// Forces a wrapping (tests); otherwise GCM when the token offers it, else key wrap.
    pub wrapping: Option<Wrapping>,
}

fn refused(setting: &str, problem: impl Into<String>, fix: impl Into<String>) -> MasterKeyError {
    MasterKeyError::Refused(SettingProblem::new(setting, problem, fix))
}

/// Modules loaded by this process, by path: C_Initialize once per module and process.
fn modules() -> MutexGuard<'static, HashMap<PathBuf, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn load_module(path: &Path) -> Result<Pkcs11, MasterKeyError> {
    let mut loaded = modules();
    if let Some(module) = loaded.get(path) {
        return Ok(module.clone());
    }
    let fix = "install the HSM's PKCS#11 library and set vault.pkcs11_module to its path \
               (SoftHSM2: apt install softhsm2, /usr/lib/softhsm/libsofthsm2.so)";
    let module = Pkcs11::new(path).map_err(|e| {
        refused(
            MODULE_SETTING,
            format!("cannot load the PKCS#11 module {}: {e}", path.display()),
            fix,
        )
    })?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(refused(
                MODULE_SETTING,
                format!(
                    "the PKCS#11 module {} did not initialise: {e}",
                    path.display()
                ),
                "check the module's own configuration (SoftHSM2: SOFTHSM2_CONF)",
            ));
        }
    }
    loaded.insert(path.to_owned(), module.clone());
    Ok(module)
}

/// An open session on the token, logged in, with the key found.
struct Open {
    session: Session,
    key: ObjectHandle,
}

struct Token {
    module: Pkcs11,
    module_path: PathBuf,
    slot: Slot,
    uri: Pkcs11Uri,
    pin: SecretString,
    pin_setting: &'static str,
    wrapping: Wrapping,
    open: Option<Open>,
}

/// A key in a PKCS#11 token as a master key source.
pub struct Pkcs11Key {
    label: String,
    token: Arc<Mutex<Token>>,
}

impl Pkcs11Key {
    /// Loads the module, finds the token, logs in and finds the key: every setting is checked
    /// here, so that a wrong one stops the start with its name.
    pub async fn open(settings: Pkcs11Settings) -> Result<Pkcs11Key, MasterKeyError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(settings))
            .await
            .map_err(|_| refused(URI_SETTING, "opening the token failed", "see the log"))?
    }

    fn open_blocking(settings: Pkcs11Settings) -> Result<Pkcs11Key, MasterKeyError> {
        let uri = Pkcs11Uri::parse(&settings.uri).map_err(|problem| {
            refused(
                URI_SETTING,
                problem,
                "write it as pkcs11:token=TOKEN;object=KEY_LABEL (RFC 7512)",
            )
        })?;
        let module_path = settings
            .module
            .or_else(|| uri.module_path.clone())
            .ok_or_else(|| {
                refused(
                    MODULE_SETTING,
                    "no PKCS#11 module",
                    "set vault.pkcs11_module to the HSM's PKCS#11 library, or add \
                     ?module-path=... to the URI",
                )
            })?;
        let (pin, pin_setting) = match settings.pin {
            Some(pin) => (pin, settings.pin_setting),
            None => {
                let path = uri.pin_source.clone().ok_or_else(|| {
                    refused(
                        "vault.pkcs11_pin_file",
                        "no PIN for the token",
                        "set vault.pkcs11_pin_file to a file holding the user PIN (mode 0600), \
                         or GRANTKEEPER_VAULT__PKCS11_PIN",
                    )
                })?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    refused(
                        URI_SETTING,
                        format!(
                            "cannot read the PIN file {} (pin-source): {e}",
                            path.display()
                        ),
                        "point pin-source at a file holding the user PIN",
                    )
                })?;
                let pin = SecretString::from(text.trim().to_owned());
                let mut text = text;
                text.zeroize();
                (pin, URI_SETTING)
            }
        };
        let module = load_module(&module_path)?;
        let slot = find_slot(&module, &uri, &module_path)?;
        let offered = module.get_mechanism_list(slot).map_err(|e| {
            refused(
                URI_SETTING,
                format!("the token does not list its mechanisms: {e}"),
                "check the token",
            )
        })?;
        let wrapping = match settings.wrapping {
            Some(w) => w,
            None if offered.contains(&MechanismType::AES_GCM) => Wrapping::AesGcm,
            None if offered.contains(&MechanismType::AES_KEY_WRAP_PAD) => Wrapping::AesKeyWrapPad,
            None => {
                return Err(refused(
                    URI_SETTING,
                    "the token offers neither CKM_AES_GCM nor CKM_AES_KEY_WRAP_PAD",
                    "use a token that can encrypt with AES",
                ));
            }
        };
        let mut token = Token {
            module,
            module_path,
            slot,
            uri,
            pin,
            pin_setting,
            wrapping,
            open: None,
        };
        token.session()?;
        Ok(Pkcs11Key {
            label: token.uri.label(),
            token: Arc::new(Mutex::new(token)),
        })
    }

    /// How this key wraps.
    pub fn wrapping(&self) -> Wrapping {
        lock(&self.token).wrapping
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Token) -> Result<T, MasterKeyError> + Send + 'static,
    ) -> Result<T, MasterKeyError> {
        let token = self.token.clone();
        tokio::task::spawn_blocking(move || work(&mut lock(&token)))
            .await
            .map_err(|_| {
                MasterKeyError::Unavailable(SettingProblem::new(
                    URI_SETTING,
                    "a call into the PKCS#11 module ended abnormally",
                    "see the log",
                ))
            })?
    }
}

fn lock(token: &Mutex<Token>) -> MutexGuard<'_, Token> {
    token.lock().unwrap_or_else(|e| e.into_inner())
}

fn find_slot(module: &Pkcs11, uri: &Pkcs11Uri, path: &Path) -> Result<Slot, MasterKeyError> {
    let slots = module.get_slots_with_token().map_err(|e| {
        refused(
            URI_SETTING,
            format!("the module {} lists no slots: {e}", path.display()),
            "check the module's configuration",
        )
    })?;
    let mut found = Vec::new();
    for slot in slots {
        if uri.slot_id.is_some_and(|id| id != slot.id()) {
            continue;
        }
        let Ok(info) = module.get_token_info(slot) else {
            continue;
        };
        let matches = |wanted: &Option<String>, has: &str| {
            wanted.as_deref().is_none_or(|w| w == has.trim_end())
        };
        if matches(&uri.token, info.label())
            && matches(&uri.manufacturer, info.manufacturer_id())
            && matches(&uri.model, info.model())
            && matches(&uri.serial, info.serial_number())
        {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(refused(
            URI_SETTING,
            format!(
                "no token of the module {} matches {}",
                path.display(),
                uri.label()
            ),
            "check the token's label (softhsm2-util --show-slots, pkcs11-tool --list-slots)",
        )),
        _ => Err(refused(
            URI_SETTING,
            format!("several tokens match {}", uri.label()),
            "add the token's serial= to the URI",
        )),
    }
}

/// Errors after which the session is dropped and opened again at the next call.
fn lost_session(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::UserNotLoggedIn
            | RvError::GeneralError
    )
}

impl Token {
    fn unavailable(&self, what: &str, e: &CkError) -> MasterKeyError {
        MasterKeyError::Unavailable(SettingProblem::new(
            URI_SETTING,
            format!("the token did not {what}: {e}"),
            "check that the HSM is reachable and its token present; running servers keep the \
             data keys they hold",
        ))
    }

    /// The logged-in session and the key, opened if needed.
    fn session(&mut self) -> Result<&Open, MasterKeyError> {
        if self.open.is_none() {
            let session = self
                .module
                .open_ro_session(self.slot)
                .map_err(|e| self.unavailable("open a session", &e))?;
            match session.login(UserType::User, Some(&self.pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                    return Err(refused(
                        self.pin_setting,
                        format!("the token {} refused the PIN", self.uri.label()),
                        "give the token's user PIN (not the security officer's); the token \
                         counts wrong tries and may lock the PIN",
                    ));
                }
                Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                    return Err(refused(
                        self.pin_setting,
                        format!("the user PIN of the token {} is locked", self.uri.label()),
                        "unlock it with the security officer's PIN, then set the new PIN",
                    ));
                }
                Err(e) => return Err(self.unavailable("log in", &e)),
            }
            let mut template = vec![Attribute::Class(ObjectClass::SECRET_KEY)];
            if let Some(object) = &self.uri.object {
                template.push(Attribute::Label(object.as_bytes().to_vec()));
            }
            if let Some(id) = &self.uri.id {
                template.push(Attribute::Id(id.clone()));
            }
            let found = session
                .find_objects(&template)
                .map_err(|e| self.unavailable("search its objects", &e))?;
            let key = match found.as_slice() {
                [key] => *key,
                [] => {
                    return Err(refused(
                        URI_SETTING,
                        format!(
                            "the token holds no secret key matching {}",
                            self.uri.label()
                        ),
                        "create an AES-256 key with that label on the token (see the README), \
                         or correct object= in the URI",
                    ));
                }
                _ => {
                    return Err(refused(
                        URI_SETTING,
                        format!("several keys match {}", self.uri.label()),
                        "add the key's id= to the URI",
                    ));
                }
            };
            let kind = session
                .get_attributes(key, &[AttributeType::KeyType])
                .map_err(|e| self.unavailable("read the key's type", &e))?;
            if !kind
                .iter()
                .any(|a| matches!(a, Attribute::KeyType(t) if *t == KeyType::AES))
            {
                return Err(refused(
                    URI_SETTING,
                    format!("the key {} is not an AES key", self.uri.label()),
                    "use an AES-256 key",
                ));
            }
            self.open = Some(Open { session, key });
        }
        self.open
            .as_ref()
            .ok_or_else(|| refused(URI_SETTING, "no session", "see the log"))
    }

    /// Runs `op` on the session; a lost session is dropped (the next call opens another).
    fn with<T>(
        &mut self,
        op: impl FnOnce(&Open) -> Result<T, CkError>,
        what: &str,
        on_other: impl FnOnce(&CkError) -> MasterKeyError,
    ) -> Result<T, MasterKeyError> {
        let open = self.session()?;
        let result = op(open);
        // Some tokens (SoftHSM2 among them) answer a GCM tag that does not verify with
        // CKR_GENERAL_ERROR: a session that still answers was not lost.
        let alive = matches!(result, Err(CkError::Pkcs11(RvError::GeneralError, _)))
            && open.session.get_session_info().is_ok();
        match result {
            Ok(v) => Ok(v),
            Err(e @ CkError::Pkcs11(rv, _)) if lost_session(rv) && !alive => {
                self.open = None;
                tracing::warn!(module = %self.module_path.display(), error = %e, "the PKCS#11 session was lost; it is opened again at the next call");
                Err(self.unavailable(what, &e))
            }
            Err(e) => Err(on_other(&e)),
        }
    }

    fn wrap(&mut self, id: KeyId, data_key: &[u8; 32]) -> Result<Vec<u8>, MasterKeyError> {
        let failed = |e: &CkError| {
            refused(
                URI_SETTING,
                format!("the token cannot wrap with this key: {e}"),
                "the key must allow encrypting and decrypting (or wrapping and unwrapping)",
            )
        };
        match self.wrapping {
            Wrapping::AesGcm => {
                let aad = data_key_aad(id);
                let mut iv = grantkeeper_core::random::bytes::<IV_LEN>();
                let iv_copy = iv;
                let sealed = self.with(
                    |open| {
                        let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())?;
                        open.session
                            .encrypt(&Mechanism::AesGcm(params), open.key, data_key)
                    },
                    "encrypt",
                    failed,
                )?;
                let mut out = Vec::with_capacity(1 + IV_LEN + sealed.len());
                out.push(GCM);
                out.extend_from_slice(&iv_copy);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
            Wrapping::AesKeyWrapPad => {
                let mut value = Zeroizing::new(Vec::with_capacity(KEY_WRAP_HEADER + 32));
                value.extend_from_slice(&key_wrap_header(id));
                value.extend_from_slice(data_key);
                let wrapped = self.with(
                    |open| {
                        // The id and key become a session object for the moment of wrapping.
                        let object = open.session.create_object(&[
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(KeyType::GENERIC_SECRET),
                            Attribute::Token(false),
                            Attribute::Sensitive(false),
                            Attribute::Extractable(true),
                            Attribute::Value(value.to_vec()),
                        ])?;
                        let wrapped =
                            open.session
                                .wrap_key(&Mechanism::AesKeyWrapPad, open.key, object);
                        let _ = open.session.destroy_object(object);
                        wrapped
                    },
                    "wrap",
                    failed,
                )?;
                let mut out = Vec::with_capacity(1 + wrapped.len());
                out.push(KEY_WRAP);
                out.extend_from_slice(&wrapped);
                Ok(out)
            }
        }
    }

    fn unwrap(&mut self, id: KeyId, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, MasterKeyError> {
        let Some((&format, body)) = wrapped.split_first() else {
            return Err(MasterKeyError::Unwrap);
        };
        let opened: Zeroizing<Vec<u8>> = match format {
            GCM => {
                if body.len() != IV_LEN + 32 + TAG_LEN {
                    return Err(MasterKeyError::Unwrap);
                }
                let (iv, sealed) = body.split_at(IV_LEN);
                let mut iv: [u8; IV_LEN] = iv.try_into().map_err(|_| MasterKeyError::Unwrap)?;
                let aad = data_key_aad(id);
                Zeroizing::new(self.with(
                    |open| {
                        let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())?;
                        open.session
                            .decrypt(&Mechanism::AesGcm(params), open.key, sealed)
                    },
                    "decrypt",
                    |_| MasterKeyError::Unwrap,
                )?)
            }
            KEY_WRAP => {
                let value = Zeroizing::new(self.with(
                    |open| {
                        let object = open.session.unwrap_key(
                            &Mechanism::AesKeyWrapPad,
                            open.key,
                            body,
                            &[
                                Attribute::Class(ObjectClass::SECRET_KEY),
                                Attribute::KeyType(KeyType::GENERIC_SECRET),
                                Attribute::Token(false),
                                Attribute::Sensitive(false),
                                Attribute::Extractable(true),
                            ],
                        )?;
                        let read = open.session.get_attributes(object, &[AttributeType::Value]);
                        let _ = open.session.destroy_object(object);
                        let mut found = Vec::new();
                        for attribute in read? {
                            if let Attribute::Value(mut v) = attribute {
                                found.extend_from_slice(&v);
                                v.zeroize();
                            }
                        }
                        Ok(found)
                    },
                    "unwrap",
                    |_| MasterKeyError::Unwrap,
                )?);
                match value.split_first_chunk::<KEY_WRAP_HEADER>() {
                    Some((named, key)) if *named == key_wrap_header(id) => {
                        Zeroizing::new(key.to_vec())
                    }
                    _ => return Err(MasterKeyError::Unwrap),
                }
            }
            _ => return Err(MasterKeyError::Unwrap),
        };
        let key: [u8; 32] = opened
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::Unwrap)?;
        Ok(Zeroizing::new(key))
    }
}

impl MasterKeySource for Pkcs11Key {
    fn label(&self) -> &str {
        &self.label
    }

    fn wrap<'a>(
        &'a self,
        id: KeyId,
        data_key: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Vec<u8>, MasterKeyError>> {
        let key = Zeroizing::new(*data_key);
        Box::pin(self.run(move |token| token.wrap(id, &key)))
    }

    fn unwrap<'a>(
        &'a self,
        id: KeyId,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<[u8; 32]>, MasterKeyError>> {
        let wrapped = wrapped.to_vec();
        Box::pin(self.run(move |token| token.unwrap(id, &wrapped)))
    }
}
