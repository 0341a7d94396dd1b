-- Refresh token rotation in a closed loop: each answer's new refresh token goes back into the
-- queue and is used (once) by the next request, so the run can last as long as wanted.
--   wrk -t1 -cN -dD -s refresh.lua URL -- TOKENS_FILE AUTHORIZATION
-- TOKENS_FILE needs at least N tokens of distinct families (a rotated token is dead).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
bench.counters = { "ok", "failures", "starved" }

local queue, authz, headers
ok, failures, starved = 0, 0, 0

function init(args)
  queue = bench.read_lines(args[1])
  authz = args[2]
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = authz }
end

local verified = false
function request()
  if not verified then
    -- wrk calls request() once before connecting, to check the request parses; that one is
    -- never sent, so it must not use up a token.
    verified = true
    return wrk.format("POST", nil, headers, "grant_type=refresh_token&refresh_token=" .. bench.urlencode(queue[1] or "x"))
  end
  local rt = table.remove(queue, 1)
  if not rt then
    starved = starved + 1
    return ""
  end
  return wrk.format("POST", nil, headers, "grant_type=refresh_token&refresh_token=" .. bench.urlencode(rt))
end

function response(status, headers, body)
  local rt = status == 200 and body:match('"refresh_token":"([^"]+)"')
  if rt then
    ok = ok + 1
    queue[#queue + 1] = rt
  else
    failures = failures + 1
  end
end
