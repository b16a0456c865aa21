-- wrk script for the Elygate benchmark: POSTs one JSON body, with a client key picked at random
-- per request from a file (one key per line), and prints the results as one JSON line.
--   BENCH_PATH       request path (default /v1/chat/completions)
--   BENCH_BODY_FILE  file holding the JSON body
--   BENCH_KEYS_FILE  optional file of client keys; without it no Authorization header is sent
local path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
local body
do
  local f = assert(io.open(assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE"), "r"))
  body = f:read("*a")
  f:close()
end

local keys = {}
local keysFile = os.getenv("BENCH_KEYS_FILE")
if keysFile and keysFile ~= "" then
  for line in io.lines(keysFile) do
    if line ~= "" then keys[#keys + 1] = line end
  end
end
local nkeys = #keys

-- Pre-formatted requests, one per key (formatting per request would cost the generator CPU).
local reqs = {}

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  if nkeys == 0 then
    reqs[1] = wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
  else
    for i = 1, nkeys do
      reqs[i] = wrk.format("POST", path, { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. keys[i] }, body)
    end
  end
end

function request()
  if nkeys <= 1 then return reqs[1] end
  return reqs[math.random(nkeys)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
