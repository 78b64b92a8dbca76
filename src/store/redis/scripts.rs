//! The Lua scripts that make every write and every lease step one atomic step on the server.
//!
//! Keys of one credential share a hash tag, so each script touches one cluster slot. A lease is
//! the value `<owner>:<fence>`: the owner is a random 128-bit id per store handle, the fence a
//! counter incremented on every acquisition, so a value names one acquisition by one handle.

use std::sync::LazyLock;

use ::redis::Script;

/// Compare-and-swap save.
///
/// KEYS: state, lease, fence. ARGV: expected version (`""`: expect an empty store), the
/// serialized token set, the lease value this handle holds (`""`: none), its fence, the change
/// channel. Replies `{1, version}` when saved, `{0}` / `{0, version, tokens}` on a version
/// conflict, `{-1}` when the handle holds a lease that another acquisition has since replaced.
/// The version is checked first, so a fenced-out writer still learns what the store holds.
///
/// A credential's first version is the server's clock in milliseconds, not 1: a server that
/// restarts without its data then hands out versions above any it handed out before, so a
/// replica never mistakes a new set for the one it read before the restart.
const SAVE: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'version', 'tokens')
if cur[1] and not tonumber(cur[1]) then
  return redis.error_reply('CORRUPT keepfresh: the version field is not a number')
end
local version = tonumber(cur[1])
if not version then
  local now = redis.call('TIME')
  version = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
local held = cur[2]
local matches
if ARGV[1] == '' then
  matches = not held
else
  matches = held and version == tonumber(ARGV[1])
end
if not matches then
  if held then return {0, version, held} end
  return {0}
end
if ARGV[3] ~= '' then
  local lease = redis.call('GET', KEYS[2])
  if redis.call('GET', KEYS[3]) ~= ARGV[4] or (lease and lease ~= ARGV[3]) then
    return {-1}
  end
end
version = version + 1
local shown = string.format('%d', version)
redis.call('HSET', KEYS[1], 'version', shown, 'tokens', ARGV[2])
redis.call('PUBLISH', ARGV[5], shown)
return {1, version}
"#;

/// Compare-and-swap clear: deletes the tokens but keeps (and increments) the version, so a
/// version is never reused.
///
/// KEYS: state, lease, fence. ARGV: expected version, lease value (`""`: none), fence, the
/// change channel. Replies the new version when cleared, 0 on a version mismatch or an empty
/// store, -1 when fenced out.
const CLEAR: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'version', 'tokens')
if not cur[2] or tonumber(cur[1]) ~= tonumber(ARGV[1]) then
  return 0
end
if ARGV[2] ~= '' then
  local lease = redis.call('GET', KEYS[2])
  if redis.call('GET', KEYS[3]) ~= ARGV[3] or (lease and lease ~= ARGV[2]) then
    return -1
  end
end
redis.call('HDEL', KEYS[1], 'tokens')
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('PUBLISH', ARGV[4], version)
return version
"#;

/// `SET lease owner NX PX ttl` and `INCR fence` as one step.
///
/// KEYS: lease, fence. ARGV: owner, ttl in milliseconds. Replies `{1, fence}` with the new
/// fence, or `{0, holder}` with the current holder's lease value.
const ACQUIRE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder then
  return {0, holder}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', fence), 'PX', ARGV[2])
return {1, fence}
"#;

/// Extends a lease held under this value. A lease that ran out is taken back when nobody
/// acquired it since (the fence is unchanged), as the in-memory store does.
///
/// KEYS: lease, fence. ARGV: lease value, fence, ttl in milliseconds. Replies 1 when the lease
/// is ours for `ttl` from now, 0 when it is not.
const RENEW: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if not cur and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0
"#;

/// Deletes the lease if it still holds this value (Redis 7.0 has no `DELEX IFEQ`) and tells
/// the waiters.
///
/// KEYS: lease. ARGV: lease value, change channel. Replies 1 when released, 0 otherwise.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0
"#;

pub(super) static SAVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SAVE));
pub(super) static CLEAR_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLEAR));
pub(super) static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
pub(super) static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW));
pub(super) static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
