-- wrk script for the warm-up runs of benches/e2e.sh: counts responses per X-Node value
-- (which simulated GeoServer node answered) and per HTTP status, and prints them when the
-- run ends as lines the script parses:
--   node <name> <count>
--   status <code> <count>
-- Only used for the warm-up: a response() callback costs wrk some CPU, so the measured
-- runs go without it.

-- Globals (not locals): thread:get() in done() reads each thread's globals.
nodes = {}
statuses = {}

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function response(status, headers, body)
   local node = "(none)"
   for name, value in pairs(headers) do
      if string.lower(name) == "x-node" then
         node = value
      end
   end
   nodes[node] = (nodes[node] or 0) + 1
   local code = tostring(status)
   statuses[code] = (statuses[code] or 0) + 1
end

function done(summary, latency, requests)
   local all_nodes, all_statuses = {}, {}
   for _, thread in ipairs(threads) do
      for name, n in pairs(thread:get("nodes")) do
         all_nodes[name] = (all_nodes[name] or 0) + n
      end
      for code, n in pairs(thread:get("statuses")) do
         all_statuses[code] = (all_statuses[code] or 0) + n
      end
   end
   for name, n in pairs(all_nodes) do
      io.write(string.format("node %s %d\n", name, n))
   end
   for code, n in pairs(all_statuses) do
      io.write(string.format("status %s %d\n", code, n))
   end
end
