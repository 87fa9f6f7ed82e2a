-- wrk script: closed-loop Open Inference Protocol (KServe v2) infer load.
-- Every connection POSTs one fixed infer body and sends the next request
-- when the answer arrives; done() prints one machine-readable RESULT line.
--
--   wrk -t1 -c64 -d10s --timeout 30s -s loadtest/oip.lua http://127.0.0.1:8080/v2/models/mlp_small/infer
--   MODEL=mlp_wide wrk ... http://127.0.0.1:8080/v2/models/mlp_wide/infer
--   INPUT=features FEATURES=50 wrk ... http://127.0.0.1:8080/v2/models/ridership/infer
--
-- Environment (all optional):
--   MODEL=mlp_small   sets FEATURES when it is not given (mlp_small 16, mlp_wide 256)
--   FEATURES          floats per row
--   BATCH=1           rows per request
--   INPUT=input       input tensor name
--   NESTED=0          1: data as nested rows [[...],[...]] instead of flat
--   BINARY=0          1: send the input as binary tensor data (Triton's extension:
--                     Inference-Header-Content-Length, binary_data_size) instead of JSON
--   BINARY_OUTPUT=0   1: ask for binary outputs ("binary_data_output": true)
-- Row values are (i%7)/7 - 0.5: the bench harness's reference row.

local model = os.getenv("MODEL") or "mlp_small"
local defaults = { mlp_small = 16, mlp_wide = 256 }
local features = tonumber(os.getenv("FEATURES") or defaults[model] or "16")
local batch = tonumber(os.getenv("BATCH") or "1")
local input = os.getenv("INPUT") or "input"
local nested = os.getenv("NESTED") == "1"

local row = {}
for i = 0, features - 1 do
  row[#row + 1] = string.format("%.7g", (i % 7) / 7 - 0.5)
end
local rowstr = table.concat(row, ",")

local rows = {}
for r = 1, batch do
  rows[r] = nested and ("[" .. rowstr .. "]") or rowstr
end

local binary = os.getenv("BINARY") == "1"
local params = os.getenv("BINARY_OUTPUT") == "1" and ',"parameters":{"binary_data_output":true}' or ""

wrk.method = "POST"
if binary then
  -- little-endian FP32 bytes through LuaJIT's ffi (wrk embeds LuaJIT)
  local ffi = require("ffi")
  local n = batch * features
  local buf = ffi.new("float[?]", n)
  for k = 0, n - 1 do
    buf[k] = ((k % features) % 7) / 7 - 0.5
  end
  local header = string.format(
    '{"inputs":[{"name":"%s","shape":[%d,%d],"datatype":"FP32","parameters":{"binary_data_size":%d}}]%s}',
    input, batch, features, 4 * n, params)
  wrk.body = header .. ffi.string(buf, 4 * n)
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = tostring(#header)
else
  wrk.body = string.format('{"inputs":[{"name":"%s","shape":[%d,%d],"datatype":"FP32","data":[%s]}]%s}',
    input, batch, features, table.concat(rows, ","), params)
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f " ..
    "non2xx=%d socket_errors=%d body_bytes=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout, #wrk.body))
end
