//! The server-side scripts of the operations Redis has no single command for:
//! writes and deletes conditional on the CAS token, and appends that keep the token
//! at the end. Each runs atomically on the server and costs O(1) in the value's
//! size but for the bytes it writes (`GETRANGE key -8 -1` reads the token alone).
//!
//! They are sent with `EVALSHA` (the server caches scripts by hash) and loaded
//! again when the server answers `NOSCRIPT`, as after a restart. Plain Lua without
//! a shebang line, for Redis 6.2 and every Valkey.

use redis::Script;

/// `cas`: KEYS[1] the key; ARGV[1] the expected token, ARGV[2] the new value with
/// its token, ARGV[3] the TTL in milliseconds or empty for none. Answers 1 (stored),
/// -1 (another token: conflict), 0 (no such item).
const CAS: &str = r"
local current = redis.call('GETRANGE', KEYS[1], -8, -1)
if current == '' then return 0 end
if current ~= ARGV[1] then return -1 end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// `delete_if`: KEYS[1] the key; ARGV[1] the expected token. Answers as [`CAS`].
const DELETE_IF: &str = r"
local current = redis.call('GETRANGE', KEYS[1], -8, -1)
if current == '' then return 0 end
if current ~= ARGV[1] then return -1 end
redis.call('UNLINK', KEYS[1])
return 1
";

/// `append`: KEYS[1] the key; ARGV[1] the bytes to append, ARGV[2] the new token,
/// ARGV[3] the TTL for a new item in milliseconds or empty for none, ARGV[4] the
/// largest value allowed. A missing item is created with the TTL; an existing one
/// gets the bytes written over its old token, followed by the new token
/// (`SETRANGE`, which keeps its TTL and copies nothing else). Answers 0 when done,
/// or the size the value would have grown to when that is over the limit (nothing
/// written).
const APPEND: &str = r"
local length = redis.call('STRLEN', KEYS[1])
if length == 0 then
  if ARGV[3] == '' then
    redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2])
  else
    redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
  end
  return 0
end
if length < 8 then
  return redis.error_reply('ERR the item is shorter than a CAS token: not written by tandem')
end
local size = length - 8 + string.len(ARGV[1])
if size > tonumber(ARGV[4]) then return size end
redis.call('SETRANGE', KEYS[1], length - 8, ARGV[1] .. ARGV[2])
return 0
";

/// The store's scripts, hashed once.
pub(crate) struct Scripts {
    pub(crate) cas: Script,
    pub(crate) delete_if: Script,
    pub(crate) append: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            cas: Script::new(CAS),
            delete_if: Script::new(DELETE_IF),
            append: Script::new(APPEND),
        }
    }
}
