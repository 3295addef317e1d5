//! grantkeeper-provider against the Google emulator, served on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The one test binary of this crate; its modules live in tests/provider/.
mod provider {
    mod support;

    mod discovery;
    mod errors;
    mod exchange;
    mod id_token;
    mod keystore;
    mod metrics;
    mod risc;
}
