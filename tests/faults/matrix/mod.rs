//! What the fault matrices share (`tests/faults.rs` over memcached,
//! `tests/faults_redis.rs` over Redis): the app servers and the clients that load
//! them ([`load`]), and the table they print ([`table`]).
//!
//! Each client owns one session and runs requests one after another, so the value of
//! its counter attribute must equal the number of acknowledged increments: anything
//! less is a lost update, a new session is a lost session.
// Each matrix uses a part of them.
#![allow(dead_code)]

pub mod load;
pub mod table;
