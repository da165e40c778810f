-- POST /api/v1/sessions/{sid}/messages/{mid}/append with `Prefer: return=minimal`.
--
-- data= lists "session_id message_id" pairs of pending messages, each in its own session;
-- each thread takes its share. A message is used by one request at a time: request() takes a
-- free one and response() frees it again with the stored length the answer reports, which is
-- the offset of its next delta. So each connection streams into a message of its own and
-- every delta lands exactly at the end of the stored text.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local free = {}        -- stack of message ids ready for their next delta
local session_of = {}  -- message id -> session id
local offset_of = {}   -- message id -> stored length
local delta = string.rep("0123456789", 10)  -- 100 characters
local lost = 0

function init(args)
   local options = parse_args(args)
   apply_common(options)
   wrk.headers["Prefer"] = "return=minimal"
   local threads = tonumber(options.threads or "1")
   for _, line in ipairs(thread_share(options.data, threads)) do
      local session, message = line:match("^(%S+)%s+(%S+)$")
      session_of[message] = session
      offset_of[message] = 0
      table.insert(free, message)
   end
end

function request()
   local message = table.remove(free)
   if message == nil then
      -- Every message is waiting for an answer (or was lost to an error): should not happen
      -- while the data has more messages than this thread has connections.
      lost = lost + 1
      return wrk.format("GET", "/health")
   end
   local body = '{"delta":"' .. delta .. '","offset":' .. offset_of[message] .. '}'
   local path = "/api/v1/sessions/" .. session_of[message] .. "/messages/" .. message .. "/append"
   return wrk.format("POST", path, nil, body)
end

function response(status, headers, body)
   local message = body:match('"id":"([%x%-]+)"')
   local length = body:match('"length":(%d+)')
   if status == 200 and message and length and session_of[message] then
      offset_of[message] = tonumber(length)
      table.insert(free, message)
   end
end
