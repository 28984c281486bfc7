-- release-when-done: let a device out of Setup Assistant once its setup steps are done.
--
-- Hook: release(device, progress) -> "release" | { wait = seconds } | { hold = "reason" }
--
-- Setup is done when every required step is terminal: succeeded, failed or skipped. Optional
-- steps (required = false) are never waited for. Until setup is done the answer is
-- { wait = poll_secs }, never past the timeout; once `timeout_secs` have passed since the device
-- enrolled it is released anyway, so a stuck step cannot keep a device in Setup Assistant.
--
-- Configuration (plugin config; every value is a string):
--
--   on_failure    What a failed required step means:
--                   "release" (default): it counts as done, like any terminal step;
--                   "hold": keep the device in Setup Assistant until an admin releases it. The
--                   hold starts as soon as a required step has failed and ignores the timeout.
--   timeout_secs  Release anyway after this many seconds since enrollment (default 1800).
--   poll_secs     How long to wait before asking again while steps run (default 30).
--
-- A configuration the plugin cannot read (an unknown key, on_failure other than "hold" or
-- "release", a number of seconds that is not a whole number, poll_secs = "0") is refused when the
-- plugin loads, with the reason.

---@type pomona.Plugin
local plugin = {}

local TERMINAL = { succeeded = true, failed = true, skipped = true }

-- `v` if it is a string, else "".
local function text(v)
  if type(v) == "string" then
    return v
  end
  return ""
end

-- Refuse the configuration: the plugin does not load, and the engine says why.
local function refuse(message)
  error(message, 0)
end

local config = pomona.config
for key in pairs(config) do
  if key ~= "on_failure" and key ~= "timeout_secs" and key ~= "poll_secs" then
    refuse('unknown config key "' .. key .. '": expected on_failure, timeout_secs or poll_secs')
  end
end

-- A whole number of seconds, at least `minimum`, from the config; `default` when unset.
local function seconds(key, default, minimum)
  local value = config[key]
  if value == nil then
    return default
  end
  local n = math.tointeger(tonumber(value))
  if n == nil or n < minimum then
    local why = '%s must be a whole number of seconds, at least %d, not "%s"'
    refuse(why:format(key, minimum, value))
  end
  return n
end

local on_failure = config.on_failure or "release"
if on_failure ~= "hold" and on_failure ~= "release" then
  refuse('on_failure must be "hold" or "release", not "' .. on_failure .. '"')
end
local timeout_secs = seconds("timeout_secs", 1800, 0)
local poll_secs = seconds("poll_secs", 30, 1)

---@param device pomona.Device
---@param progress pomona.Progress
---@return pomona.ReleaseDecision
function plugin.release(device, progress)
  if type(progress) ~= "table" then
    progress = {}
  end
  local steps = progress.steps
  if type(steps) ~= "table" then
    steps = {}
  end
  local elapsed = math.tointeger(progress.elapsed_secs) or 0

  local unfinished, failed = 0, {}
  for _, step in ipairs(steps) do
    if type(step) == "table" and step.required ~= false then
      local status = text(step.status)
      if status == "failed" then
        failed[#failed + 1] = text(step.id)
      end
      if not TERMINAL[status] then
        unfinished = unfinished + 1
      end
    end
  end

  if on_failure == "hold" and #failed > 0 then
    if #failed == 1 then
      return { hold = "required step " .. failed[1] .. " failed" }
    end
    return { hold = "required steps failed: " .. table.concat(failed, ", ") }
  end
  if unfinished == 0 or elapsed >= timeout_secs then
    return "release"
  end
  return { wait = math.min(poll_secs, timeout_secs - elapsed) }
end

return plugin
