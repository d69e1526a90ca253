-- wrk script: browse pages chosen by a Zipf distribution (s = 1.1) over
-- N distinct parameter sets, as a skewed real workload would.
local N = tonumber(os.getenv("ZIPF_PAGES") or "2000")
local S = 1.1
local categories = { "coding", "data-analysis", "writing", "research", "customer-support",
  "marketing", "sales", "design", "devops", "security", "finance", "productivity" }
local sorts = { "trending", "popular", "newest", "rating", "name" }
local prefix = os.getenv("PATH_PREFIX") or ""

local paths, cdf = {}, {}
local total = 0
for i = 1, N do
  local c = categories[(i % #categories) + 1]
  local s = sorts[(math.floor(i / #categories) % #sorts) + 1]
  local offset = (math.floor(i / (#categories * #sorts))) * 20
  paths[i] = string.format("%s/api/marketplace?category=%s&sortBy=%s&limit=20&offset=%d", prefix, c, s, offset)
  total = total + 1 / (i ^ S)
  cdf[i] = total
end
for i = 1, N do cdf[i] = cdf[i] / total end

local function pick()
  local r = math.random()
  local lo, hi = 1, N
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return paths[lo]
end

function setup(thread)
  thread:set("seed", math.random(1, 1e9))
end

function init(args)
  math.randomseed(seed or os.time())
end

request = function()
  return wrk.format("GET", pick())
end

-- With COUNT_X_CACHE set, counts the answers by their X-Cache header and
-- prints "x-cache HIT=n MISS=n STALE=n none=n" at the end (bench/warm.sh).
if os.getenv("COUNT_X_CACHE") then
  local threads = {}
  setup = function(thread)
    thread:set("seed", math.random(1, 1e9))
    table.insert(threads, thread)
  end
  counts = { HIT = 0, MISS = 0, STALE = 0, none = 0 }
  response = function(status, headers, body)
    local x = headers["X-Cache"] or headers["x-cache"] or "none"
    counts[x] = (counts[x] or 0) + 1
  end
  done = function(summary, latency, requests)
    local total = { HIT = 0, MISS = 0, STALE = 0, none = 0 }
    for _, thread in ipairs(threads) do
      local c = thread:get("counts")
      for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
    end
    io.write(string.format("x-cache HIT=%d MISS=%d STALE=%d none=%d\n",
      total.HIT, total.MISS, total.STALE, total.none))
  end
end
