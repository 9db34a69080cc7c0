-- wrk script for deepserve's benchmarks: every request is a POST whose body
-- and Content-Type come from the environment (WRK_BODY, WRK_CONTENT_TYPE;
-- default: an empty body, Content-Length: 0), and the run ends with one JSON
-- line that run.py reads instead of wrk's human-readable report.

wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or ""
local content_type = os.getenv("WRK_CONTENT_TYPE")
if content_type and content_type ~= "" then
   wrk.headers["Content-Type"] = content_type
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
      '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
      summary.duration, summary.requests, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
