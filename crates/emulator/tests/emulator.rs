#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The emulator served on 127.0.0.1:0 and spoken to over real HTTP, one test per Google
//! behaviour it reproduces (see shared/reference/google-oauth.md §2-§6, §8, §10).

mod emulator {
    pub mod helpers;

    mod codes;
    mod consent;
    mod control;
    mod discovery;
    mod drive;
    mod drive_access;
    mod drive_ops;
    mod faults;
    mod gsi;
    mod kms;
    mod persistence;
    mod refresh;
    mod revoke;
    mod risc;
}
