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
-- A team value of "@none" means "no team": the device is taken out of any team.
--
-- A device with neither a model nor a family is unknown: no opinion, whatever the rules say.
--
-- A configuration the plugin cannot read (an unknown key, an empty team, two keys naming the same
-- prefix or family in different case, keep_current other than "true" or "false") is refused when
-- the plugin loads, with the reason, so a typo cannot silently leave devices unplaced.

---@type pomona.Plugin
local plugin = {}

local NO_TEAM = "@none"

-- `v` if it is a string, else "" (fields may be missing or of the wrong type).
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

-- A config value as a place decision: "@none" is no team.
local function decision(key, value)
  local team = value:match("^%s*(.-)%s*$")
  if team == "" then
    refuse(key .. " has an empty team name (use @none for no team)")
  elseif team == NO_TEAM then
    return { no_team = true }
  end
  return { team = team }
end

-- The rules, read once when the plugin loads.
local model_rules = {} -- { prefix = lower-case prefix, decision = ... }, longest prefix first
local family_rules = {} -- lower-case family -> decision
local default_decision = nil
local keep_current = false

do
  local seen = {} -- lower-case key -> the key as written, to catch case-only duplicates
  for key, raw in pairs(pomona.config) do
    local value = text(raw)
    local prefix = key:match("^model%.(.+)$")
    local family = key:match("^family%.(.+)$")
    local lower = key:lower()
    if seen[lower] then
      local a, b = seen[lower], key
      if b < a then
        a, b = b, a
      end
      refuse(a .. " and " .. b .. " differ only in case")
    end
    seen[lower] = key
    if prefix then
      model_rules[#model_rules + 1] = { prefix = prefix:lower(), decision = decision(key, value) }
    elseif family then
      family_rules[family:lower()] = decision(key, value)
    elseif key == "default" then
      default_decision = decision(key, value)
    elseif key == "keep_current" then
      if value ~= "true" and value ~= "false" then
        refuse('keep_current must be "true" or "false", not "' .. value .. '"')
      end
      keep_current = value == "true"
    else
      refuse('unknown config key "' .. key .. '": expected model.<prefix>, family.<family>, '
        .. "default or keep_current")
    end
  end
  table.sort(model_rules, function(a, b)
    return #a.prefix > #b.prefix
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
