-- One Dramatiq queue's counts, read atomically in one round trip (Dramatiq's own dispatch
-- script moves messages between these keys atomically, so a pipeline of separate reads
-- could count a message twice or not at all).
--
-- ARGV: namespace, queue, cutoff (ms; a worker whose last heartbeat is at or before it is
-- dead, as the dispatch script's maintenance decides: zrangebyscore 0 (now - timeout)).
-- Returns {visible, delayed, orphaned, orphaned_delayed, ids, held, held_delayed}:
-- visible/delayed: LLEN of <ns>:<q> and <ns>:<q>.DQ; orphaned(_delayed): what dead
-- workers fetched and never acked (maintenance puts it back on the queue); ids, held,
-- held_delayed: each live worker and the SCARD of its ack sets for <q> and <q>.DQ.
-- Read-only: nothing is written.

local ns, queue, cutoff = ARGV[1], ARGV[2], tonumber(ARGV[3])

-- A key of another type is an error naming the key, with Redis' WRONGTYPE code.
local function read(want, command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == "table" and reply.err then
    error({err = "WRONGTYPE key " .. key .. " is not a " .. want .. " (" .. reply.err .. ")"})
  end
  return reply
end

local queue_key = ns .. ":" .. queue
local visible = read("list", "LLEN", queue_key)
local delayed = read("list", "LLEN", queue_key .. ".DQ")
local beats = read("sorted set", "ZRANGE", ns .. ":__heartbeats__", 0, -1, "WITHSCORES")

local orphaned, orphaned_delayed = 0, 0
local ids, held, held_delayed = {}, {}, {}
for i = 1, #beats, 2 do
  local id, beat = beats[i], tonumber(beats[i + 1])
  local acks = ns .. ":__acks__." .. id .. "." .. queue
  local n = read("set", "SCARD", acks)
  local d = read("set", "SCARD", acks .. ".DQ")
  if beat > cutoff then
    ids[#ids + 1] = id
    held[#held + 1] = n
    held_delayed[#held_delayed + 1] = d
  else
    orphaned = orphaned + n
    orphaned_delayed = orphaned_delayed + d
  end
end
return {visible, delayed, orphaned, orphaned_delayed, ids, held, held_delayed}
