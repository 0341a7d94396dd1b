-- Shared by the wrk scripts of `make bench` (loaded with dofile from each script's folder).
-- wrk runs a script in one Lua state per thread and one more for setup()/done(); the bench always
-- runs wrk with one thread (-t1), so per-thread counters are simply globals of that thread.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *ts);
int getpid(void);
int kill(int pid, int sig);
]]

bench = {}

local ts = ffi.new("bench_timespec")

-- CLOCK_MONOTONIC, seconds.
function bench.now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- SIGINT to wrk itself: its handler stops every thread and it prints its summary with the real
-- elapsed time (a script cannot end a run early otherwise).
function bench.stop()
  ffi.C.kill(ffi.C.getpid(), 2)
end

function bench.urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

function bench.urldecode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

function bench.read_lines(path)
  local t = {}
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    if #line > 0 then t[#t + 1] = line end
  end
  f:close()
  return t
end

-- The threads, so done() (in the main state) can read their counters.
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

-- Counters a script keeps in its thread's globals and wants in the report.
bench.counters = {}

-- One line of JSON on stdout, read by bench.py.
function done(summary, latency, requests)
  local e = summary.errors
  local out = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}',
      latency.mean, latency.stdev, latency.min, latency.max, latency:percentile(50),
      latency:percentile(90), latency:percentile(99), latency:percentile(99.9)),
  }
  for _, name in ipairs(bench.counters) do
    local sum = 0
    for _, t in ipairs(threads) do
      sum = sum + (tonumber(t:get(name)) or 0)
    end
    out[#out + 1] = string.format('"%s":%.6f', name, sum)
  end
  io.write("BENCH_JSON {" .. table.concat(out, ",") .. "}\n")
end
