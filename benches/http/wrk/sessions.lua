-- wrk script for scripts/bench-http.sh: requests spread over the live sessions'
-- cookies, a share of them writes.
--   COOKIES    file with one `name=value` cookie per line (from `bench-http-app populate`)
--   WRITE_PCT  percentage of requests that are `POST /cart` (the rest `GET /cart`)
-- Requests are formatted once per thread in init(), so that wrk's Lua costs the same
-- tiny amount per request for every variant. Prints one `RESULT key=value ...` line.

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local requests = {}
local index = 0

function init(args)
   local path = os.getenv("COOKIES")
   local write_pct = tonumber(os.getenv("WRITE_PCT") or "0")
   local cookies = {}
   for line in io.lines(path) do
      if #line > 0 then
         cookies[#cookies + 1] = line
      end
   end
   math.randomseed(id * 7919)
   -- Each thread walks every session in its own random order.
   for i = #cookies, 2, -1 do
      local j = math.random(i)
      cookies[i], cookies[j] = cookies[j], cookies[i]
   end
   local rounds = math.max(1, math.ceil(20000 / #cookies))
   for _ = 1, rounds do
      for _, cookie in ipairs(cookies) do
         local method = "GET"
         if math.random(100) <= write_pct then
            method = "POST"
         end
         requests[#requests + 1] = wrk.format(method, "/cart", { ["Cookie"] = cookie })
      end
   end
   index = math.random(#requests)
end

function request()
   index = index + 1
   if index > #requests then
      index = 1
   end
   return requests[index]
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), errors.status,
      errors.connect + errors.read + errors.write + errors.timeout))
end
