-- wrk script: alternate POST /v2/users/{id}/lock and /unlock so every request succeeds.
--
-- Each wrk thread owns the users whose index i has i % THREADS == thread id and walks them
-- round-robin; a user's next request is issued only after all the thread's other users had one,
-- so with more users per thread than connections per thread no two requests on one user are in
-- flight together. Users must exist (run.sh adds them) and be active.
--
-- Environment: TOKEN (bearer token), USERS (number of users u0..u{USERS-1}), THREADS (wrk -t).

local token = os.getenv("TOKEN")
local users = tonumber(os.getenv("USERS") or "1000")
local threads = tonumber(os.getenv("THREADS") or "2")
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  mine = {}
  for i = id, users - 1, threads do
    mine[#mine + 1] = { name = "u" .. i, locked = false }
  end
  cursor = 0
  failures = 0
  -- wrk calls request() once on thread 0's state before running, only to check that the
  -- request parses (script_verify_request in wrk.c), and never sends it. That call must not
  -- flip a user, or thread 0's first user would get the same verb twice.
  verified = id ~= 0
end

function request()
  if not verified then
    verified = true
    return wrk.format("POST", "/v2/users/" .. mine[1].name .. "/lock",
      { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, "{}")
  end
  cursor = cursor % #mine + 1
  local user = mine[cursor]
  local verb = user.locked and "unlock" or "lock"
  user.locked = not user.locked
  return wrk.format("POST", "/v2/users/" .. user.name .. "/" .. verb,
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, "{}")
end

function response(status, headers, body)
  if status ~= 200 then
    failures = failures + 1
    if failures <= 3 then
      io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
    end
  end
end

function done(summary, latency, requests)
  io.write(string.format("non-2xx/3xx: %d; p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n",
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000))
end
