//! The session manager's behaviour suite (`tandem-behaviour`) against real
//! redis-server processes, with the fixture the conformance suite uses
//! (`fixture/mod.rs`): an unavailable node is a paused (hung) process.

mod fixture;

tandem_behaviour::behaviour_tests!(fixture::RedisFixture);
