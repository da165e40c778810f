-- GET /api/v1/sessions/{id}/messages?order=desc&limit=50: the newest 50 messages of the
-- sessions listed in data= (round-robin; each thread starts at its own place).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local paths = {}
local next_index = 1

function init(args)
   local options = parse_args(args)
   apply_common(options)
   local threads = tonumber(options.threads or "1")
   local sessions = read_lines(options.data)
   for _, session in ipairs(sessions) do
      table.insert(paths, "/api/v1/sessions/" .. session .. "/messages?order=desc&limit=50")
   end
   -- Threads walk the list from different places, so they do not read the same session at once.
   next_index = math.floor((thread_index or 0) * #paths / threads) % #paths + 1
end

function request()
   local path = paths[next_index]
   next_index = next_index % #paths + 1
   return wrk.format("GET", path)
end
