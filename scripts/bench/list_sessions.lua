-- GET /api/v1/sessions?limit=20: the first page of the caller's session list.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

function init(args)
   local options = parse_args(args)
   apply_common(options)
   wrk.method = "GET"
   wrk.path = "/api/v1/sessions?limit=20"
   wrk.body = nil
end
