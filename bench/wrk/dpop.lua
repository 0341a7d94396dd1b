-- DPoP-bound client_credentials: the fixed token request plus a `DPoP` header, each proof of a
-- pool (bench/proofs.py, one a line) sent once: the filter keeps every jti in its replay cache.
--   wrk -t1 -cN -dD -s dpop.lua URL -- PROOFS_FILE AUTHORIZATION BODY
-- A run lasts D seconds like fixed.lua; should the pool run out first, the connections left get an
-- empty request and wait, and the run ends when the last answer is in (`starved` counts them).
-- A success is a 200 whose token_type is DPoP.
-- FAPI path: a pool line `ASSERTION PROOF` (proofs.py --client-jwk) appends the client assertion to
-- BODY (which then ends with `client_assertion=`), and an empty AUTHORIZATION sends none.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
bench.counters = { "ok", "failures", "failures_4xx", "failures_5xx", "not_dpop", "starved", "pool" }

local proofs, headers, body
local next_i, sent = 1, 0
ok, failures, failures_4xx, failures_5xx, not_dpop, starved, pool = 0, 0, 0, 0, 0, 0, 0

function init(args)
  proofs = bench.read_lines(args[1])
  pool = #proofs
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
  if args[2] ~= "" then
    headers["Authorization"] = args[2]
  end
  body = args[3]
end

local function token_request(line)
  local assertion, proof = line:match("^(%S+) (%S+)$")
  if assertion then
    headers["DPoP"] = proof
    return wrk.format("POST", nil, headers, body .. assertion)
  end
  headers["DPoP"] = line
  return wrk.format("POST", nil, headers, body)
end

local verified = false
function request()
  if not verified then
    -- wrk calls request() once before connecting, to check the request parses; that one is
    -- never sent, so it must not use up a proof.
    verified = true
    return token_request(proofs[1] or "x")
  end
  local proof = proofs[next_i]
  if not proof then
    starved = starved + 1
    return ""
  end
  next_i = next_i + 1
  sent = sent + 1
  return token_request(proof)
end

function response(status, hdrs, resp)
  if status == 200 then
    if resp:find('"token_type":"DPoP"', 1, true) then
      ok = ok + 1
    else
      not_dpop = not_dpop + 1
      failures = failures + 1
    end
  else
    failures = failures + 1
    if status >= 500 then
      failures_5xx = failures_5xx + 1
    elseif status >= 400 then
      failures_4xx = failures_4xx + 1
    end
  end
  if next_i > pool and ok + failures == sent then
    -- the pool is used up and every answer is in
    bench.stop()
  end
end
