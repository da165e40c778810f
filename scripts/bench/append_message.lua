-- POST /api/v1/sessions/{id}/messages: one user message per request, spread over the
-- sessions listed in data= (round-robin, each thread starting at its own place).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local sessions = {}
local next_index = 1
local body = '{"role":"user","content":"' .. string.rep("Why does the billing test fail on CI? ", 5) .. '"}'

function init(args)
   local options = parse_args(args)
   apply_common(options)
   sessions = read_lines(options.data)
   next_index = ((thread_index or 0) * 7919) % #sessions + 1
end

function request()
   local session = sessions[next_index]
   next_index = next_index % #sessions + 1
   return wrk.format("POST", "/api/v1/sessions/" .. session .. "/messages", nil, body)
end
