-- Metrics (GET /metrics): the backlog of streams, each for the consumer group that works it,
-- read in one step: {lag, pending}. `pending`: entries delivered to a consumer and not
-- acknowledged; lag: entries not delivered yet. Lag is XINFO GROUPS's `lag` (Redis >= 7.0) when
-- Redis knows it; else 0 when the group has read up to the last entry, else the entries after
-- its last-delivered id, counted up to ARGV[1] (Redis 6.2 has no `lag`: bounded work at scrape).
-- A stream with no such group yet (no worker has started) has every entry waiting: lag = XLEN.
-- Also the ids of the oldest entry pending ('' none) and of the oldest not delivered yet ('' none):
-- the older of them is the stream's oldest waiting work (GET /v1/status).
-- KEYS: the streams. ARGV: 1 the most entries counted per stream, 2.. the group of each stream.
-- Returns per stream {lag, pending, oldest pending id, oldest undelivered id}.

local out = {}
for k = 1, #KEYS do
  local lag, pending = redis.call('XLEN', KEYS[k]), 0
  local first_pending, first_waiting, grouped = '', '', false
  if lag > 0 or redis.call('EXISTS', KEYS[k]) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[k])) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == ARGV[k + 1] then
        pending, lag = info['pending'], info['lag']
        if type(lag) ~= 'number' then
          local last = nil
          local s = redis.call('XINFO', 'STREAM', KEYS[k])
          for i = 1, #s, 2 do if s[i] == 'last-generated-id' then last = s[i + 1] end end
          if info['last-delivered-id'] == last then
            lag = 0
          else
            lag = #redis.call('XRANGE', KEYS[k], '(' .. info['last-delivered-id'], '+', 'COUNT', ARGV[1])
          end
        end
        if tonumber(pending) > 0 then
          local summary = redis.call('XPENDING', KEYS[k], ARGV[k + 1])
          if summary[2] then first_pending = summary[2] end
        end
        local next_one = redis.call('XRANGE', KEYS[k], '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
        if next_one[1] then first_waiting = next_one[1][1] end
        grouped = true
      end
    end
    if not grouped then
      local first = redis.call('XRANGE', KEYS[k], '-', '+', 'COUNT', 1)
      if first[1] then first_waiting = first[1][1] end
    end
  end
  out[k] = {lag, pending, first_pending, first_waiting}
end
return out
