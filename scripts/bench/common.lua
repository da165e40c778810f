-- Shared by the wrk scripts of scripts/bench.py.
--
-- Arguments (after `--` on the wrk command line), as key=value pairs:
--   auth=Header-Name:value   sent with every request (X-API-Key for chat-store,
--                            X-User-ID for the baseline)
--   data=/path/to/file       one line per target (sessions, or "session message" pairs)
--   threads=N                the -t given to wrk (to split the data between threads)
--   pace_ms=N                each connection waits N ms after an answer before its next
--                            request (a load that need not saturate the server); 0: none
-- done() prints one line: BENCH_JSON {...} with rps and latency percentiles.

local counter = 0
local thread_objects = {}

function setup(thread)
   thread:set("thread_index", counter)
   counter = counter + 1
   table.insert(thread_objects, thread)
end

function parse_args(args)
   local options = {}
   for _, arg in ipairs(args) do
      local key, value = arg:match("^([%w_]+)=(.*)$")
      if key then
         options[key] = value
      end
   end
   return options
end

function apply_common(options)
   wrk.headers["Content-Type"] = "application/json"
   if options.auth and options.auth ~= "" then
      local name, value = options.auth:match("^([^:]+):(.*)$")
      wrk.headers[name] = value
   end
   local pace = tonumber(options.pace_ms or "0")
   if pace > 0 then
      -- wrk looks for a global delay() after init(): defined only when pacing, so unpaced
      -- runs keep wrk's plain send-on-answer loop. The waits are exponential with mean `pace`:
      -- a fixed wait keeps the connections in step, and they arrive as one burst.
      math.randomseed(os.time() + (thread_index or 0))
      delay = function() return math.floor(-pace * math.log(1 - math.random())) end
   end
end

function read_lines(path)
   local lines = {}
   local file = assert(io.open(path, "r"))
   for line in file:lines() do
      if line ~= "" then
         table.insert(lines, line)
      end
   end
   file:close()
   return lines
end

-- The lines of `path` that belong to this thread (round-robin by line number).
function thread_share(path, threads)
   local mine = {}
   local index = thread_index or 0
   for i, line in ipairs(read_lines(path)) do
      if (i - 1) % threads == index then
         table.insert(mine, line)
      end
   end
   return mine
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   local out = string.format(
      '{"requests":%d,"duration_s":%.3f,"rps":%.2f,"bytes":%d,' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}',
      summary.requests, seconds, summary.requests / seconds, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout)
   io.write("BENCH_JSON " .. out .. "\n")
end
