-- One fixed request, built once by wrk (no Lua per request): the client_credentials token request,
-- the same bytes to the ceiling route, or a GET.
--   wrk -t1 -cN -dD -s fixed.lua URL -- METHOD [BODY [AUTHORIZATION]]
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

function init(args)
  wrk.method = args[1] or "GET"
  if args[2] and #args[2] > 0 then
    wrk.body = args[2]
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
  if args[3] and #args[3] > 0 then
    wrk.headers["Authorization"] = args[3]
  end
end
