//! Security properties of the shop examples over HTTP: their real routes served on real
//! TCP ports by two servers that share a real memcached cluster, as a deployment runs
//! them, in both modes (sticky with routes `a1` and `a2`, non-sticky) and with every
//! `--concurrency` setting: two axum servers (`shop`), and mixed pairs of one axum and
//! one actix-web server (`shop-actix`).
//!
//! - [`fixation`]: a login's new id never reaches the requests of whoever planted the
//!   old id, not even those in flight at the login.
//! - [`logout`]: a logout is final for a stolen cookie in use on both servers.
//!
//! Each test is one mode and one concurrency setting, so that a failure names them;
//! its message counts the violations it saw and shows a few, and names the two
//! servers' frameworks. `--concurrency merge` runs two axum servers, `lock` an axum
//! server (the victim's or owner's) and an actix-web one, `none` the other way round:
//! every setting crosses frameworks, and each framework serves the victim somewhere,
//! at no more test time than one pair per setting.

// The examples' modules (all but their `main`), so that the routes are tested as they
// ship, served by the binaries' own `serve`; the parts only a binary uses are unused.
#[allow(dead_code)]
#[path = "../../examples/shop/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "../../examples/shop/options.rs"]
mod options;
#[path = "../../examples/shop/actix.rs"]
mod shop_actix;
#[path = "../../examples/shop/axum.rs"]
mod shop_axum;

// Shared with tests/shop, which reads more of its answers.
#[allow(dead_code)]
mod client;
mod fixation;
mod harness;
mod logout;
mod shops;
