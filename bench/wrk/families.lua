-- Records a pool of refresh families, each once: the first refresh of a sealed refresh token whose
-- family this Envoy has not seen records the family in its ring (as a login would), then stops wrk.
--   wrk -t1 -cN -d600s -s families.lua URL -- TOKENS_FILE AUTHORIZATION
-- When the pool is used up, a connection gets an empty request and just waits; the run ends when
-- the last answer is in.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
bench.counters = { "ok", "failures", "elapsed_s", "pool" }

local tokens, authz
local next_i = 1
ok, failures, elapsed_s, pool = 0, 0, 0, 0
local t0

function init(args)
  tokens = bench.read_lines(args[1])
  pool = #tokens
  authz = args[2]
end

local function refresh_request(rt)
  local headers = { ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = authz }
  return wrk.format("POST", nil, headers, "grant_type=refresh_token&refresh_token=" .. bench.urlencode(rt))
end

local verified = false
function request()
  if not verified then
    -- wrk calls request() once before connecting, to check the request parses; never sent.
    verified = true
    return refresh_request(tokens[1] or "x")
  end
  if not t0 then t0 = bench.now() end
  local rt = tokens[next_i]
  if not rt then return "" end
  next_i = next_i + 1
  return refresh_request(rt)
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  else
    failures = failures + 1
  end
  if ok + failures == pool then
    elapsed_s = bench.now() - t0
    bench.stop()
  end
end
