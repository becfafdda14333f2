-- wrk script for bench/api/bench.py. Settings come from the environment:
--   BENCH_MODE    create | show | list
--   BENCH_BODY    JSON body of a template create, with __NAME__ where the name goes
--   BENCH_PREFIX  prefix of created template names (unique per case)
--   BENCH_UUIDS   file of template uuids, one a line (show)
-- done() prints one line "BENCH_RESULT {json}" that bench.py parses.

local mode = os.getenv("BENCH_MODE") or "list"
local body_template = os.getenv("BENCH_BODY") or ""
local prefix = os.getenv("BENCH_PREFIX") or "w"

local headers = {
  ["X-Project-Id"] = "bench",
  ["X-User-Id"] = "bench",
  ["X-Roles"] = "admin",
  ["OpenStack-API-Version"] = "container-infra latest",
  ["Accept"] = "application/json",
}
local post_headers = {}
for k, v in pairs(headers) do post_headers[k] = v end
post_headers["Content-Type"] = "application/json"

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

local uuids = {}
local counter = 0
local list_request = nil

function init(args)
  if mode == "show" then
    local path = os.getenv("BENCH_UUIDS")
    for line in io.lines(path) do
      if #line > 0 then uuids[#uuids + 1] = line end
    end
    if #uuids == 0 then error("no uuids in " .. tostring(path)) end
  elseif mode == "list" then
    list_request = wrk.format("GET", "/v1/clustertemplates", headers)
  end
end

function request()
  counter = counter + 1
  if mode == "create" then
    local name = prefix .. "-" .. tostring(thread_id) .. "-" .. tostring(counter)
    local body = (body_template:gsub("__NAME__", name))
    return wrk.format("POST", "/v1/clustertemplates", post_headers, body)
  elseif mode == "show" then
    return wrk.format("GET", "/v1/clustertemplates/" .. uuids[(counter % #uuids) + 1], headers)
  end
  return list_request
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
