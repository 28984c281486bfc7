-- my-policy: a template Pomona policy plugin. Copy it, rename it, change the rules.
--
-- A plugin is a Lua file that returns a table of hook functions. Implement only the hooks you
-- need; return nil from a hook for "no opinion" (the next plugin, or the engine's default,
-- decides). Inputs and answers are documented in sdk/lua/pomona.lua (editor stubs).
--
-- Configuration (plugin config; every value is a string):
--
--   profile        auto_assign: enrollment profile for devices newly added to the MDM server
--   it_group       place: identity-provider group whose members' devices go to `it_team`
--   it_team        place: that team
--   wifi_profile   setup_steps: a profile to install while Setup Assistant waits
--   name_prefix    setup_steps: rename iPhones and iPads "<prefix>-<serial number>"
--   max_wait_secs  release: release after this long even if steps are unfinished (default 600)

---@type pomona.Plugin
local plugin = {}

-- Read the configuration once, when the plugin loads. Keep everything in locals: a plugin has
-- no business defining globals.
local config = pomona.config
local max_wait = math.tointeger(tonumber(config.max_wait_secs or "")) or 600

-- auto_assign(event): which enrollment profile an Apple Business Manager device gets.
---@param event pomona.DepEvent
---@return pomona.AssignDecision?
function plugin.auto_assign(event)
  if event.op_type ~= "added" then
    return nil -- only act on devices newly added to this MDM server
  end
  if event.device_family == "AppleTV" then
    return { skip = true } -- leave Apple TVs unassigned
  end
  if config.profile then
    return { assign = config.profile }
  end
  return nil
end

-- place(device): which team a device belongs to.
---@param device pomona.Device
---@return pomona.PlaceDecision?
function plugin.place(device)
  local user = device.user -- nil until the engine knows who uses the device
  if user == nil or config.it_group == nil or config.it_team == nil then
    return nil
  end
  for _, group in ipairs(user.groups or {}) do
    if group == config.it_group then
      return { team = config.it_team }
    end
  end
  return nil
end

-- setup_steps(device): what to install while Setup Assistant waits. Each step has a stable id,
-- unique in the list, and one action: install_profile, install_package, account or command.
---@param device pomona.Device
---@return pomona.Step[]?
function plugin.setup_steps(device)
  local steps = {}
  if config.wifi_profile then
    steps[#steps + 1] = { id = "wifi", install_profile = config.wifi_profile }
  end
  local mobile = device.device_family == "iPhone" or device.device_family == "iPad"
  if config.name_prefix and mobile then
    steps[#steps + 1] = {
      id = "device-name",
      required = false, -- release does not wait for it
      command = {
        request_type = "Settings",
        parameters = {
          Settings = {
            { Item = "DeviceName", DeviceName = config.name_prefix .. "-" .. device.serial_number },
          },
        },
      },
    }
  end
  if #steps == 0 then
    return nil
  end
  return steps
end

-- release(device, progress): when the device leaves Setup Assistant.
---@param device pomona.Device
---@param progress pomona.Progress
---@return pomona.ReleaseDecision
function plugin.release(device, progress) -- `device` is there for rules that need it
  for _, step in ipairs(progress.steps) do
    local busy = step.status == "pending" or step.status == "running"
    if step.required and busy and progress.elapsed_secs < max_wait then
      return { wait = 15 } -- ask again in 15 seconds
    end
  end
  return "release"
end

return plugin
