-- wrk script of scripts/bench-api.sh: POSTs one GraphQL request (the body in the
-- file $BENCH_BODY_FILE) with the bearer token $BENCH_TOKEN, counts answers that
-- carry GraphQL errors, and ends with one line:
--   WRK <requests> <duration_us> <p50_ms> <p99_ms> <socket_errors> <non_2xx> <graphql_errors>
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    gql_errors = 0
end

function response(status, headers, body)
    if body and string.find(body, '"errors"', 1, true) then
        gql_errors = gql_errors + 1
    end
end

function done(summary, latency, requests)
    local gql = 0
    for _, thread in ipairs(threads) do
        gql = gql + thread:get("gql_errors")
    end
    local e = summary.errors
    io.write(string.format("WRK %d %d %.2f %.2f %d %d %d\n", summary.requests, summary.duration,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        e.connect + e.read + e.write + e.timeout, e.status, gql))
end
