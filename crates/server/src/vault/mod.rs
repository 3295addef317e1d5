//! The vault's keyring, in one home: loading the data keys from the store (the first one made
//! on a deployment's first start), keeping a running server's keyring current
//! ([`keyring::keep_reloading`]), rotating the data keys and retiring the old ones
//! ([`rotation`]), and moving them to another master key ([`rewrap`]).
//!
//! Why here, in the server crate: the keyring joins the vault (grantkeeper-core: sealing, the
//! in-memory keyring, the master key source trait) and the store's data keys
//! (grantkeeper-store: [`grantkeeper_store::KeyStore`], and [`grantkeeper_store::RotationStore`]
//! for rotating). Core must not import the store, and the store never opens or seals a value,
//! so the code that needs both sits in a crate that sees both; core only names what it reads a
//! keyring through ([`grantkeeper_core::KeyringSource`]), which [`keyring::StoreKeyring`]
//! implements. Each part takes only the store capability it uses: reading the keys
//! ([`grantkeeper_store::KeyStore`]) for loading and reloading,
//! [`grantkeeper_store::RotationStore`] for rotating. What the store does for a rotation
//! (counting and re-sealing values by the key that seals them, in SQL) stays in the store's
//! `rotation` module.

pub mod keyring;
pub mod rewrap;
pub mod rotation;
