//! Security properties of the `shop` example over HTTP: its real routes served on real
//! TCP ports by two servers that share a real memcached cluster, as a deployment runs
//! them, in both modes (sticky with routes `a1` and `a2`, non-sticky) and with every
//! `--concurrency` setting.
//!
//! - [`fixation`]: a login's new id never reaches the requests of whoever planted the
//!   old id, not even those in flight at the login.
//! - [`logout`]: a logout is final for a stolen cookie in use on both servers.
//!
//! Each test is one mode and one concurrency setting, so that a failure names them;
//! its message counts the violations it saw and shows a few.

// The example itself, so that its routes are tested as they ship. Its `main` and the
// parts of it only the binary uses are unused here.
#[allow(dead_code)]
#[path = "../../examples/shop.rs"]
mod shop;

mod client;
mod fixation;
mod harness;
mod logout;
