-- wrk script: cycle through many distinct valid tracked-link paths, and print a JSON summary at the end.
-- Each wrk thread starts at a different offset so threads do not send the same paths in step.
-- Usage: wrk -t1 -c64 -d30s -s loadtests/clicks.lua http://127.0.0.1:8080 -- loadtests/tokens.txt
-- No response() callback: it would cost wrk more than the servers it measures.

local paths = {}
local counter = 0

function init(args)
  local file = args[1] or "loadtests/tokens.txt"
  for line in io.lines(file) do
    paths[#paths + 1] = line
  end
  if #paths == 0 then
    error("no paths in " .. file)
  end
  counter = math.random(#paths)
end

function request()
  counter = counter % #paths + 1
  return wrk.format("GET", paths[counter])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
