-- wrk script: POST 100 NDJSON click events per request to /collect.
-- Start a server:  cargo run --release -p clickpulse-server --example collector_load -- --serve-only
-- Then:            wrk -t2 -c64 -d10s --latency -s crates/server/examples/wrk_collect.lua http://ADDR/collect
local lines = {}
for i = 0, 99 do
  lines[#lines + 1] = string.format(
    '{"ts_ms":%d,"visitor_id":"v%d","url":"/category/%d","event_type":"page_view","referrer":"/home"}',
    1700000000000 + i, i % 50, i % 17)
end
wrk.method = "POST"
wrk.body = table.concat(lines, "\n") .. "\n"
wrk.headers["Content-Type"] = "application/x-ndjson"

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. ": " .. body .. "\n")
  end
end
