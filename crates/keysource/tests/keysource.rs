#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The master key sources against what they speak to: Cloud KMS and its credentials as the
//! Google emulator serves them on 127.0.0.1, and PKCS#11 against SoftHSM2 with a token made in
//! each test's own temporary directory.

mod keysource {
    pub mod emu;
    pub mod softhsm;

    mod adc;
    mod kms;
    mod pkcs11;
}
