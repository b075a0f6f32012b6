//! The session manager's behaviour suite (`tandem-behaviour`) against real memcached
//! processes, with the fixture the conformance suite uses (`fixture/mod.rs`): an
//! unavailable node is a paused (hung) process.
//!
//! What is about memcached itself (operations counted by the store's health, the
//! items a process holds, killed and restarted processes) stays in the facade
//! package's `tests/`.

mod fixture;

tandem_behaviour::behaviour_tests!(fixture::MemcachedFixture);
