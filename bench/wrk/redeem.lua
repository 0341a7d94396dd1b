-- Redeems a pool of authorization codes (each once) at the token endpoint, then stops wrk.
--   wrk -t1 -cN -d120s -s redeem.lua URL -- CODES_FILE AUTHORIZATION REDIRECT_URI VERIFIER [REFRESH_OUT [N]]
-- When the pool is used up, a connection gets an empty request and just waits; the run ends when
-- the last answer is in. The rate is answers / (last answer - first request), measured here.
-- With REFRESH_OUT, the first N (64) refresh tokens are written there (for refresh.lua).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
bench.counters = { "ok", "failures", "elapsed_s", "pool" }

local codes_list, authz, redirect_uri, verifier, rt_out, rt_want
local next_i = 1
ok, failures, elapsed_s, pool = 0, 0, 0, 0
local t0, rt_written = nil, 0

function init(args)
  codes_list = bench.read_lines(args[1])
  pool = #codes_list
  authz, redirect_uri, verifier = args[2], args[3], args[4]
  if args[5] then
    rt_out = assert(io.open(args[5], "w"))
    rt_want = tonumber(args[6] or "64")
  end
end

local function redeem_request(code)
  local headers = { ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = authz }
  return wrk.format("POST", nil, headers, "grant_type=authorization_code&code=" .. bench.urlencode(code)
    .. "&redirect_uri=" .. bench.urlencode(redirect_uri) .. "&code_verifier=" .. verifier)
end

local verified = false
function request()
  if not verified then
    -- wrk calls request() once before connecting, to check the request parses; that one is
    -- never sent, so it must not use up a code.
    verified = true
    return redeem_request(codes_list[1] or "x")
  end
  if not t0 then t0 = bench.now() end
  local code = codes_list[next_i]
  if not code then return "" end
  next_i = next_i + 1
  return redeem_request(code)
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    if rt_out and rt_written < rt_want then
      local rt = body:match('"refresh_token":"([^"]+)"')
      if rt then
        rt_out:write(rt, "\n")
        rt_written = rt_written + 1
        if rt_written == rt_want then rt_out:flush() end
      end
    end
  else
    failures = failures + 1
  end
  if ok + failures == pool then
    elapsed_s = bench.now() - t0
    if rt_out then rt_out:flush() end
    bench.stop()
  end
end
