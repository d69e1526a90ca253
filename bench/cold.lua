-- wrk script: listing pages that are (almost) never repeated, so every
-- request misses the cache and reads the database.
local categories = { "coding", "data-analysis", "writing", "research", "customer-support",
  "marketing", "sales", "design", "devops", "security", "finance", "productivity" }
local sorts = { "popular", "newest", "rating", "name" }

function setup(thread)
  thread:set("seed", math.random(1, 1e9))
end

function init(args)
  math.randomseed(seed or os.time())
end

request = function()
  local c = categories[math.random(#categories)]
  local s = sorts[math.random(#sorts)]
  local offset = math.random(0, 400) * 10
  local limit = math.random(10, 30)
  return wrk.format("GET", string.format("/api/marketplace?category=%s&sortBy=%s&limit=%d&offset=%d", c, s, limit, offset))
end
