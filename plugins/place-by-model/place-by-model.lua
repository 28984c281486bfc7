-- place-by-model: put devices in teams by model and device family.
--
-- Hook: place(device) -> { team = "name" } | { no_team = true } | nil (no opinion)
--
-- Configuration (plugin config; every value is a string):
--
--   model.<prefix>   Team for devices whose model starts with <prefix>, ignoring case. The
--                    longest matching prefix wins: with "model.MacBook" and "model.MacBook Pro",
--                    a "MacBook Pro 14-inch" gets the second.
--   family.<family>  Team for devices of this family (Mac, iPhone, iPad, AppleTV, ...), ignoring
--                    case. Asked only when no model rule matches.
--   default          Team for devices no rule matches. Without it they get no opinion (nil).
--   keep_current     "true": leave a device that already has a team alone (nil). Default "false".
--
-- A team value of "-" means "no team": the device is taken out of any team. An empty value
-- switches the rule off, as if it were not there.
--
-- A device with neither a model nor a family is unknown: no opinion, whatever the rules say.

---@type pomona.Plugin
local plugin = {}

local NO_TEAM = "-"

-- `v` if it is a string, else "" (fields may be missing or of the wrong type).
local function text(v)
  if type(v) == "string" then
    return v
  end
  return ""
end

local function trim(s)
  return s:match("^%s*(.-)%s*$")
end

local function flag(value, default)
  local v = trim(text(value)):lower()
  if v == "true" or v == "yes" or v == "1" then
    return true
  elseif v == "false" or v == "no" or v == "0" then
    return false
  end
  if v ~= "" then
    pomona.log("place-by-model: ignoring unreadable flag value", value)
  end
  return default
end

-- A config value as a place decision: "-" is no team, "" is no rule (nil).
local function decision(value)
  local team = trim(value)
  if team == "" then
    return nil
  elseif team == NO_TEAM then
    return { no_team = true }
  end
  return { team = team }
end

-- The rules, read once when the plugin loads. Keys are visited in sorted order so that two keys
-- differing only in case resolve the same way every time (the first in byte order wins).
local model_rules = {} -- { prefix = lower-case prefix, key = config key, decision = ... }
local family_rules = {} -- lower-case family -> decision
local default_decision = nil
local keep_current = false

do
  local config = pomona.config or {}
  local keys = {}
  for key in pairs(config) do
    keys[#keys + 1] = key
  end
  table.sort(keys)
  for _, key in ipairs(keys) do
    local value = text(config[key])
    local prefix = key:match("^model%.(.+)$")
    local family = key:match("^family%.(.+)$")
    if prefix then
      local d = decision(value)
      if d then
        model_rules[#model_rules + 1] = { prefix = prefix:lower(), key = key, decision = d }
      end
    elseif family then
      family = family:lower()
      if family_rules[family] == nil then
        family_rules[family] = decision(value)
      end
    elseif key == "default" then
      default_decision = decision(value)
    elseif key == "keep_current" then
      keep_current = flag(value, false)
    else
      pomona.log("place-by-model: ignoring unknown config key", key)
    end
  end
  table.sort(model_rules, function(a, b)
    if #a.prefix ~= #b.prefix then
      return #a.prefix > #b.prefix
    end
    return a.key < b.key
  end)
end

---@param device pomona.Device
---@return pomona.PlaceDecision?
function plugin.place(device)
  if type(device) ~= "table" then
    return nil
  end
  local model = text(device.model):lower()
  local family = text(device.device_family):lower()
  if model == "" and family == "" then
    return nil
  end
  if keep_current and text(device.team) ~= "" then
    return nil
  end
  if model ~= "" then
    for _, rule in ipairs(model_rules) do
      if model:sub(1, #rule.prefix) == rule.prefix then
        return rule.decision
      end
    end
  end
  return family_rules[family] or default_decision
end

return plugin
