-- wrk script: alternate POST /v2/users/{id}/lock and /unlock so every request succeeds.
--
-- Each wrk thread owns the users whose index i has i % THREADS == thread id and walks them
-- round-robin; a user's next request is issued only after all the thread's other users had one,
-- so with more users per thread than connections per thread no two requests on one user are in
-- flight together. Users must exist (run.sh adds them) and be active.
--
-- wrk shares the two cores with the server, so the script keeps wrk's own CPU low: requests
-- are formatted once in init(), and there is no response() callback (with one, wrk builds a
-- Lua table of every response's headers). Failures are counted by wrk itself ("Non-2xx or 3xx
-- responses", repeated by done()); any non-zero count makes the run invalid.
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

local function format(name, verb)
  return wrk.format("POST", "/v2/users/" .. name .. "/" .. verb,
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, "{}")
end

function init(args)
  mine = {}
  for i = id, users - 1, threads do
    local name = "u" .. i
    mine[#mine + 1] = { lock = format(name, "lock"), unlock = format(name, "unlock"), locked = false }
  end
  cursor = 0
  -- wrk calls request() once on thread 0's state before running, only to check that the
  -- request parses (script_verify_request in wrk.c), and never sends it. That call must not
  -- flip a user, or thread 0's first user would get the same verb twice.
  verified = id ~= 0
end

function request()
  if not verified then
    verified = true
    return mine[1].lock
  end
  cursor = cursor % #mine + 1
  local user = mine[cursor]
  user.locked = not user.locked
  return user.locked and user.lock or user.unlock
end

function done(summary, latency, requests)
  io.write(string.format("non-2xx/3xx: %d; p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n",
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000))
end
