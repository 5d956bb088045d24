"""The Lua scripts of cluster presence: what must happen in one step in Redis.

Redis runs a script atomically (nothing else runs meanwhile), so a check and the
write it allows cannot be split by another node's request:

* :data:`CLAIM` — a nick is given to a session only if nobody on a *live* node
  holds its key or its look-alike skeleton; a rename (``replacing``) releases the
  old nick in the same step, only if the claim succeeds.
* :data:`RELEASE` — a nick is let go only by the session that holds it (a late
  release never removes someone else's newer claim).
* :data:`FIND` — who holds a nick, if their node is alive.
* :data:`JOINED` / :data:`PARTED` — a room's member table and the room listing,
  the room removed from the listing with its last member.
* :data:`ROOM_LIST` — every room with its member count, in one round trip.
* :data:`SWEEP` — everything a dead node held, removed at once and returned to
  the one caller that ran it first (so exactly one node announces the quits).

The scripts touch keys they compute from a prefix passed in ``ARGV`` (the node
keys of holders): fine on one Redis (or Sentinel), not on Redis Cluster, whose
slots would need every key in ``KEYS``.  Values are the JSON that
:mod:`chatd.builtin.cluster.presence` writes (``cjson`` reads them here).
"""

from __future__ import annotations

#: KEYS: nicks hash, this node's nick set.
#: ARGV: key field, look field, person JSON, session, node-key prefix ("p:node:"),
#: old key field or "", old look field or "", node-nicks prefix ("p:nicks:").
#: Returns 1 (claimed) or 0 (held by another live session).
CLAIM = """
local function blocks(field)
  local v = redis.call('HGET', KEYS[1], field)
  if not v then return false end
  local p = cjson.decode(v)
  if p.session == ARGV[4] then return false end
  return redis.call('EXISTS', ARGV[5] .. p.node) == 1
end
if blocks(ARGV[1]) or blocks(ARGV[2]) then return 0 end
for i = 6, 7 do
  local f = ARGV[i]
  if f ~= '' then
    local v = redis.call('HGET', KEYS[1], f)
    if v and cjson.decode(v).session == ARGV[4] then
      redis.call('HDEL', KEYS[1], f)
      redis.call('SREM', KEYS[2], f)
    end
  end
end
for i = 1, 2 do
  local f = ARGV[i]
  local v = redis.call('HGET', KEYS[1], f)
  if v then
    local p = cjson.decode(v)
    if p.session ~= ARGV[4] then redis.call('SREM', ARGV[8] .. p.node, f) end
  end
  redis.call('HSET', KEYS[1], f, ARGV[3])
  redis.call('SADD', KEYS[2], f)
end
return 1
"""

#: KEYS: nicks hash, this node's nick set.  ARGV: session, then the fields to release.
#: Returns how many fields were released.
RELEASE = """
local n = 0
for i = 2, #ARGV do
  local f = ARGV[i]
  local v = redis.call('HGET', KEYS[1], f)
  if v and cjson.decode(v).session == ARGV[1] then
    redis.call('HDEL', KEYS[1], f)
    redis.call('SREM', KEYS[2], f)
    n = n + 1
  end
end
return n
"""

#: KEYS: nicks hash.  ARGV: node-key prefix, then the fields to look at in order.
#: Returns the person JSON of the first field held by a live node, or nil.
FIND = """
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local p = cjson.decode(v)
    if redis.call('EXISTS', ARGV[1] .. p.node) == 1 then return v end
  end
end
return false
"""

#: KEYS: the room's members hash, the rooms hash, this node's room set.
#: ARGV: session, member JSON, room key, room JSON, room-set entry.  A room already
#: listed keeps its entry: its topic is the one set last on any node, and a node whose
#: first member just joined knows none yet (it reads it with the members).
JOINED = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
return 1
"""

#: KEYS: the room's members hash, the rooms hash, this node's room set.
#: ARGV: session, room key, room-set entry.  Returns the members left.
PARTED = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[3])
local left = redis.call('HLEN', KEYS[1])
if left == 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
return left
"""

#: KEYS: the rooms hash.  ARGV: members-key prefix ("p:members:").
#: Returns a flat list: room JSON, member count, room JSON, member count...
ROOM_LIST = """
local rooms = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #rooms, 2 do
  local count = redis.call('HLEN', ARGV[1] .. rooms[i])
  if count > 0 then
    out[#out + 1] = rooms[i + 1]
    out[#out + 1] = count
  end
end
return out
"""

#: KEYS: nicks hash, the dead node's nick set, the dead node's room set, the rooms
#: hash, the node set.  ARGV: dead node, its node key, members-key prefix, and "own"
#: when a live node clears its own entries (:func:`reregister`).
#: Nothing happens if the node is alive again (unless "own").  Returns a flat list:
#: person JSON, JSON list of its room names, person JSON, ...  (each session once).
SWEEP = """
if ARGV[4] ~= 'own' and redis.call('EXISTS', ARGV[2]) == 1 then return {} end
local rooms_of = {}
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local e = cjson.decode(entry)
  local rk, session = e[1], e[2]
  local room = redis.call('HGET', KEYS[4], rk)
  local members = ARGV[3] .. rk
  redis.call('HDEL', members, session)
  if room then
    rooms_of[session] = rooms_of[session] or {}
    table.insert(rooms_of[session], cjson.decode(room).name)
  end
  if redis.call('HLEN', members) == 0 then redis.call('HDEL', KEYS[4], rk) end
end
local out = {}
local seen = {}
for _, f in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local v = redis.call('HGET', KEYS[1], f)
  if v then
    local p = cjson.decode(v)
    if p.node == ARGV[1] then
      redis.call('HDEL', KEYS[1], f)
      if not seen[p.session] then
        seen[p.session] = true
        out[#out + 1] = v
        local names = rooms_of[p.session]
        if names and #names > 0 then out[#out + 1] = cjson.encode(names)
        else out[#out + 1] = '[]' end
      end
    end
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
if ARGV[4] ~= 'own' then redis.call('SREM', KEYS[5], ARGV[1]) end
return out
"""
