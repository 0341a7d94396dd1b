-- A protected API called with a DPoP-bound access token: GET with `Authorization: DPoP <token>`
-- and a fresh proof of a pool (bench/proofs.py --htm GET --ath ..., one a line) per request.
--   wrk -t1 -cN -dD -s api_dpop.lua URL -- PROOFS_FILE AUTHORIZATION
-- A success is a 200 (the route's direct_response); should the pool run out first, the run ends
-- when the last answer is in (`starved` counts the connections left idle).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
bench.counters = { "ok", "failures", "failures_4xx", "failures_5xx", "starved", "pool" }

local proofs, headers
local next_i, sent = 1, 0
ok, failures, failures_4xx, failures_5xx, starved, pool = 0, 0, 0, 0, 0, 0

function init(args)
  proofs = bench.read_lines(args[1])
  pool = #proofs
  headers = { ["Authorization"] = args[2] }
end

local function api_request(proof)
  headers["DPoP"] = proof
  return wrk.format("GET", nil, headers, nil)
end

local verified = false
function request()
  if not verified then
    -- wrk's parse check: never sent, so it must not use up a proof.
    verified = true
    return api_request(proofs[1] or "x")
  end
  local proof = proofs[next_i]
  if not proof then
    starved = starved + 1
    return ""
  end
  next_i = next_i + 1
  sent = sent + 1
  return api_request(proof)
end

function response(status, hdrs, resp)
  if status == 200 then
    ok = ok + 1
  else
    failures = failures + 1
    if status >= 500 then
      failures_5xx = failures_5xx + 1
    elseif status >= 400 then
      failures_4xx = failures_4xx + 1
    end
  end
  if next_i > pool and ok + failures == sent then
    bench.stop()
  end
end
