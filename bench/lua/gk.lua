-- wrk script of grantkeeper's benchmarks. The bench binary sets everything through the
-- environment (secrets never appear on a command line):
--   GK_MODE     static | bodies | random
--   GK_METHOD   GET | POST
--   GK_PATH     request path (static, bodies)
--   GK_AUTH     value of the Authorization header (optional)
--   GK_CT       Content-Type (optional)
--   GK_XRW      value of X-Requested-With (optional)
--   GK_BODIES   bodies mode: a file with one request body per line, each sent once; wrk's
--               threads take lines in turn (thread t sends lines t, t+T, t+2T, ...)
--   GK_THREADS  the -t given to wrk (bodies and random modes)
--   GK_USERS, GK_SUB_PREFIX, GK_SUB_DIGITS
--               random mode: POST /v1/users/{sub}/token for a sub drawn uniformly from
--               PREFIX .. zero-padded index in [0, USERS)
-- done() prints one line `GKBENCH {json}` with the totals and latency percentiles (µs).

local mode = os.getenv("GK_MODE") or "static"
local method = os.getenv("GK_METHOD") or "GET"
local path = os.getenv("GK_PATH") or "/"
local headers = {}
if os.getenv("GK_AUTH") then headers["Authorization"] = os.getenv("GK_AUTH") end
if os.getenv("GK_CT") then headers["Content-Type"] = os.getenv("GK_CT") end
if os.getenv("GK_XRW") then headers["X-Requested-With"] = os.getenv("GK_XRW") end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- Per thread (each wrk thread runs its own copy of this script).
tid = 0
exhausted = 0
local bodies = {}
local sent = 0
local nthreads = tonumber(os.getenv("GK_THREADS") or "1")
local users = tonumber(os.getenv("GK_USERS") or "1")
local sub_format = (os.getenv("GK_SUB_PREFIX") or "") .. "%0" .. (os.getenv("GK_SUB_DIGITS") or "1") .. "d"
local fixed = nil

function init(args)
  if mode == "bodies" then
    for line in io.lines(os.getenv("GK_BODIES")) do
      bodies[#bodies + 1] = line
    end
  elseif mode == "random" then
    math.randomseed(1000003 * (tid + 1) + os.time())
  else
    fixed = wrk.format(method, path, headers, nil)
  end
end

function request()
  if mode == "bodies" then
    local i = tid + sent * nthreads + 1
    sent = sent + 1
    if i > #bodies then
      -- Out of single-use bodies: a repeated one fails, and the bench refuses the run.
      exhausted = exhausted + 1
      i = ((i - 1) % #bodies) + 1
    end
    return wrk.format(method, path, headers, bodies[i])
  elseif mode == "random" then
    local sub = string.format(sub_format, math.random(0, users - 1))
    return wrk.format(method, "/v1/users/" .. sub .. "/token", headers, nil)
  end
  return fixed
end

function done(summary, latency, requests)
  local spent = 0
  for _, thread in ipairs(threads) do
    spent = spent + (thread:get("exhausted") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'GKBENCH {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "exhausted": %d, '
      .. '"mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, spent,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
