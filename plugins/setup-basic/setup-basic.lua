-- setup-basic: a basic setup experience while Setup Assistant waits.
--
-- Hook: setup_steps(device) -> a list of steps | nil (no opinion)
--
-- Steps, in this order:
--
--   1. "account" (Macs only: macOS is the only OS with AccountConfiguration): a local account.
--      Its short name is the device's user when the engine knows one, else `account.username`;
--      with neither, no account step. A known user's full name is their short name (the user
--      record carries no display name); the configured account's is `account.full_name`.
--   2. "profile:<name>" for each profile in `profiles`, then each in `team.<team>.profiles` for
--      the device's team. A profile listed twice is installed once, at its first place.
--
-- Configuration (plugin config; every value is a string; lists are comma-separated names):
--
--   profiles              Profiles installed on every device, e.g. "wifi,vpn".
--   team.<team>.profiles  More profiles for devices in team <team> (exact team name).
--   optional              Profiles release need not wait for (their steps have required = false).
--   account               "false": never create an account. Default "true".
--   account.username      Short name of the account to create when the device has no known user.
--   account.full_name     Its full name (default: the short name).
--   account.admin         "true": an administrator account. Default "false" (standard).
--   account.lock          "true": lock the account's name and picture. Default "false".
--
-- A device that gets no step at all gets no opinion (nil), so another plugin or the engine's
-- default decides.
--
-- A configuration the plugin cannot read (an unknown key, a flag other than "true" or "false") is
-- refused when the plugin loads, with the reason.

---@type pomona.Plugin
local plugin = {}

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

-- Refuse the configuration: the plugin does not load, and the engine says why.
local function refuse(message)
  error(message, 0)
end

-- The names in a comma-separated list, trimmed, without empty entries.
local function list(value)
  local names = {}
  for item in text(value):gmatch("[^,]+") do
    local name = trim(item)
    if name ~= "" then
      names[#names + 1] = name
    end
  end
  return names
end

local config = pomona.config

local function flag(key, default)
  local value = config[key]
  if value == nil then
    return default
  elseif value ~= "true" and value ~= "false" then
    refuse(key .. ' must be "true" or "false", not "' .. tostring(value) .. '"')
  end
  return value == "true"
end

local KNOWN_KEYS = {
  profiles = true,
  optional = true,
  account = true,
  ["account.username"] = true,
  ["account.full_name"] = true,
  ["account.admin"] = true,
  ["account.lock"] = true,
}
for key in pairs(config) do
  if not KNOWN_KEYS[key] and not key:match("^team%..+%.profiles$") then
    refuse('unknown config key "' .. key .. '": expected profiles, team.<team>.profiles, '
      .. "optional, account or account.*")
  end
end

local common_profiles = list(config.profiles)
local optional = {}
for _, name in ipairs(list(config.optional)) do
  optional[name] = true
end
local account_enabled = flag("account", true)
local account_defaults = {
  username = trim(text(config["account.username"])),
  full_name = trim(text(config["account.full_name"])),
  admin = flag("account.admin", false),
  lock = flag("account.lock", false),
}

local function is_mac(device)
  local family = text(device.device_family):lower()
  local os = text(device.os):lower()
  return family == "mac" or os == "osx" or os == "macos"
end

-- The account step for `device`, or nil.
local function account_step(device)
  if not account_enabled or not is_mac(device) then
    return nil
  end
  local username, full_name
  local user = device.user
  if type(user) == "table" and trim(text(user.username)) ~= "" then
    username = trim(user.username)
    full_name = username
  elseif account_defaults.username ~= "" then
    username = account_defaults.username
    full_name = account_defaults.full_name
    if full_name == "" then
      full_name = username
    end
  else
    return nil
  end
  return {
    id = "account",
    account = {
      username = username,
      full_name = full_name,
      admin = account_defaults.admin,
      lock = account_defaults.lock,
    },
  }
end

---@param device pomona.Device
---@return pomona.Step[]?
function plugin.setup_steps(device)
  if type(device) ~= "table" then
    return nil
  end
  local steps = {}
  local account = account_step(device)
  if account then
    steps[#steps + 1] = account
  end

  local seen = {}
  local function add_profiles(names)
    for _, name in ipairs(names) do
      if not seen[name] then
        seen[name] = true
        steps[#steps + 1] = {
          id = "profile:" .. name,
          required = not optional[name],
          install_profile = name,
        }
      end
    end
  end
  add_profiles(common_profiles)
  local team = text(device.team)
  if team ~= "" then
    add_profiles(list(config["team." .. team .. ".profiles"]))
  end

  if #steps == 0 then
    return nil
  end
  return steps
end

return plugin
