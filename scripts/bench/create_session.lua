-- POST /api/v1/sessions: one new session per request.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local body = '{"title":"Benchmark session","metadata":{"client":"wrk"}}'

function init(args)
   local options = parse_args(args)
   apply_common(options)
   wrk.method = "POST"
   wrk.path = "/api/v1/sessions"
   wrk.body = body
end
