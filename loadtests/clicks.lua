-- wrk script: cycle through many distinct valid tracked-link paths.
-- Each wrk thread starts at a different offset so threads do not send the same paths in step.
-- Usage: wrk -t2 -c64 -d30s -s loadtests/clicks.lua http://127.0.0.1:8080 -- loadtests/tokens.txt

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

responses = {}
function response(status, headers, body)
  responses[status] = (responses[status] or 0) + 1
end
