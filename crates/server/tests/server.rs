//! The server over real HTTP on 127.0.0.1, against the Google emulator, with a real SQLite
//! file. One test binary; modules beneath it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server {
    pub mod admin;
    pub mod bad_input;
    pub mod faults;
    pub mod harness;
    pub mod jobs;
    pub mod limits;
    pub mod master_keys;
    pub mod metrics;
    pub mod no_leaks;
    pub mod page;
    pub mod revocations;
    pub mod risc;
    pub mod rotation;
    pub mod secrets;
    pub mod seen;
    pub mod signin;
    pub mod store_faults;
    pub mod v1;
    pub mod workers;
}
