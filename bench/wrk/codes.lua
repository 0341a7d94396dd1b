-- Makes authorization codes and writes them to a file, one a line, then stops wrk.
--   wrk -t1 -cN -d60s -s codes.lua http://HOST:PORT -- MODE OUT COUNT AUTHORIZATION CLIENT_ID REDIRECT_URI CHALLENGE USER
-- MODE plain: GET /oauth/authorize with every parameter in the query (one request a code);
-- MODE par:   POST /oauth/pushed-authorization, then GET /oauth/authorize?client_id&request_uri.
-- The user is the `x-user` header (plugin config `user: {header: x-user}`).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
bench.counters = { "codes", "failures", "failures_4xx", "failures_5xx", "failures_redirect", "elapsed_s" }

local mode, out, target, authz, client_id, redirect_uri, challenge, user
local request_uris = {}
local plain_req, par_req
codes, failures, failures_4xx, failures_5xx, failures_redirect, elapsed_s = 0, 0, 0, 0, 0, 0
local t0

local function authorize_query()
  return "response_type=code&client_id=" .. bench.urlencode(client_id)
    .. "&redirect_uri=" .. bench.urlencode(redirect_uri)
    .. "&scope=read%20write&state=s&code_challenge=" .. challenge
    .. "&code_challenge_method=S256"
end

function init(args)
  mode, out, target = args[1], assert(io.open(args[2], "w")), tonumber(args[3])
  authz, client_id, redirect_uri, challenge, user = args[4], args[5], args[6], args[7], args[8]
  plain_req = wrk.format("GET", "/oauth/authorize?" .. authorize_query(), { ["x-user"] = user })
  par_req = wrk.format("POST", "/oauth/pushed-authorization",
    { ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = authz },
    authorize_query())
  t0 = bench.now()
end

-- (wrk's first call, a parse check before connecting, is never sent: it gets a PAR, which uses
-- up nothing.)
function request()
  if mode == "plain" then
    return plain_req
  end
  local ru = table.remove(request_uris, 1)
  if ru then
    return wrk.format("GET", "/oauth/authorize?client_id=" .. bench.urlencode(client_id)
      .. "&request_uri=" .. bench.urlencode(ru), { ["x-user"] = user })
  end
  return par_req
end

function response(status, headers, body)
  if status == 201 then
    local ru = body:match('"request_uri":"([^"]+)"')
    if ru then request_uris[#request_uris + 1] = ru return end
  elseif status == 303 then
    local loc = headers["location"] or headers["Location"] or ""
    local code = loc:match("[?&]code=([^&]+)")
    if code then
      out:write(bench.urldecode(code), "\n")
      codes = codes + 1
      if codes == target then
        out:flush()
        elapsed_s = bench.now() - t0
        bench.stop()
      end
      return
    end
  end
  failures = failures + 1
  if status == 303 then
    -- an error sent to the client's redirect_uri (e.g. error=server_error: the code ring is full)
    failures_redirect = failures_redirect + 1
  elseif status >= 500 then
    failures_5xx = failures_5xx + 1
  elseif status >= 400 then
    failures_4xx = failures_4xx + 1
  end
end
