---@meta pomona
-- Editor stubs for Pomona policy plugins written in Lua (LuaLS / EmmyLua annotations).
--
-- Point your editor's Lua language server at this file (for LuaLS: add its folder to
-- `workspace.library`) to get completion and type checks in a plugin. It describes, it does not
-- run: the engine provides the real `pomona` table, and never loads this file into a plugin.
--
-- A plugin is a chunk that returns a `pomona.Plugin`: a table with any of the four hook
-- functions. A hook returns nil for "no opinion"; anything else must be one of the decision
-- shapes below, or the call counts as failed (and still as "no opinion").
--
-- Inputs are plain tables. Fields marked `?` are absent (nil) when the engine does not know them;
-- string fields without `?` are always present but may be empty.

---@alias pomona.OpType
---| "added"    # Newly added to (or moved to) this MDM server.
---| "modified" # Changed, for example its profile status.
---| "deleted"  # Released or moved away.
---| "fetched"  # Listed by a full fetch rather than reported as a change.

---@alias pomona.Stage
---| "synced"    # Known from Apple Business Manager only.
---| "enrolling" # MachineInfo or Authenticate seen.
---| "enrolled"  # Enrolled.

---@alias pomona.StepStatus
---| "pending"   # Not yet sent, or the device said NotNow.
---| "running"   # Sent, no result yet.
---| "succeeded" # Acknowledged.
---| "failed"    # Error or CommandFormatError.
---| "skipped"   # Not applicable.

-- Inputs ---------------------------------------------------------------------------------------

---Input of `auto_assign`: one device event from an Apple Business Manager (DEP) sync.
---@class pomona.DepEvent
---@field server string The DEP server (token) the device belongs to.
---@field serial_number string Serial number.
---@field model string Model, e.g. `MacBook Pro 14"`.
---@field description string Apple's description, e.g. `MBP 14.2 SPG/8C/14C/16GB/512GB`.
---@field color string Color.
---@field device_family string `Mac`, `iPhone`, `iPad`, `AppleTV`, ...
---@field os string `OSX`, `iOS`, `tvOS`, ...
---@field profile_status string `empty`, `assigned`, `pushed` or `removed`.
---@field profile_uuid? string The profile Apple has assigned, if any.
---@field op_type pomona.OpType What happened.
---@field op_date? string When it happened (RFC 3339), if Apple said.
---@field known boolean Whether the engine had seen this device before.
---@field team? string The device's current team, if placed.

---The person using a device, when the engine knows.
---@class pomona.UserIdentity
---@field username string Short user name.
---@field email? string E-mail address.
---@field groups string[] Identity-provider groups (possibly empty).

---Input of `place`, `setup_steps` and `release`: what the engine knows of a device.
---@class pomona.Device
---@field serial_number string Serial number.
---@field udid? string UDID, once the device has enrolled or sent MachineInfo.
---@field model string Model.
---@field device_family string `Mac`, `iPhone`, `iPad`, ...
---@field os string `OSX`, `iOS`, ...
---@field os_version? string OS version, e.g. `15.1`, when known.
---@field dep_server? string The DEP server the device came from, if any.
---@field stage pomona.Stage Life stage.
---@field team? string Current team, if placed.
---@field user? pomona.UserIdentity The user, if known.

---One setup step's progress.
---@class pomona.StepProgress
---@field id string The step id.
---@field required boolean Whether release waits for it.
---@field status pomona.StepStatus How it is going.
---@field attempts integer Times the step was sent.

---Second input of `release`: setup progress.
---@class pomona.Progress
---@field steps pomona.StepProgress[] Each step, in order.
---@field elapsed_secs integer Seconds since the device enrolled.

-- Decisions ------------------------------------------------------------------------------------

---Answer of `auto_assign`: assign a named enrollment profile, leave the device alone, or ask
---again after some seconds.
---@alias pomona.AssignDecision { assign: string }|{ skip: true }|{ retry_after: integer }

---Answer of `place`: put the device in a team, or in none.
---@alias pomona.PlaceDecision { team: string }|{ no_team: true }

---Answer of `release`: send DeviceConfigured now, ask again after some seconds, or keep the
---device in Setup Assistant until an admin releases it (the reason is shown to the admin).
---@alias pomona.ReleaseDecision "release"|{ release: true }|{ wait: integer }|{ hold: string }

---A local account to create during Setup Assistant (macOS `AccountConfiguration`).
---@class pomona.AccountStep
---@field username string Short name (non-empty).
---@field full_name? string Full name.
---@field lock? boolean Lock the primary account's name and picture (default false).
---@field admin? boolean Make it an administrator, else standard (default false).

---A package to install (`InstallEnterpriseApplication`).
---@class pomona.PackageStep
---@field url string The package URL (non-empty).
---@field manifest_url? string The manifest URL; without one the engine describes `url` itself.

---A raw MDM command.
---@class pomona.CommandStep
---@field request_type string `RequestType`, e.g. `Settings` (non-empty).
---@field parameters? table<string, any> The command's other keys (converted to a plist).

---One setup step: an id, whether release waits for it, and exactly one action.
---@class pomona.Step
---@field id string Stable id, unique within the list (non-empty).
---@field required? boolean Whether release waits for it (default true).
---@field install_profile? string Action: install this named profile from the profile library.
---@field install_package? pomona.PackageStep Action: install a package.
---@field account? pomona.AccountStep Action: create a local account.
---@field command? pomona.CommandStep Action: send a raw command.

-- The plugin -----------------------------------------------------------------------------------

---What a plugin chunk returns: any of the four hooks. Each returns nil for "no opinion".
---`auto_assign`: which enrollment profile an Apple Business Manager device gets.
---`place`: which team a device belongs to.
---`setup_steps`: what the engine installs while Setup Assistant waits (an empty list: nothing).
---`release`: when a device leaves Setup Assistant.
---@class pomona.Plugin
---@field auto_assign? fun(event: pomona.DepEvent): pomona.AssignDecision?
---@field place? fun(device: pomona.Device): pomona.PlaceDecision?
---@field setup_steps? fun(device: pomona.Device): pomona.Step[]?
---@field release? fun(device: pomona.Device, progress: pomona.Progress): pomona.ReleaseDecision?

-- The host -------------------------------------------------------------------------------------

---What the engine gives every plugin, as the global `pomona`. `config` is this plugin's
---configuration: `config` of its `[[plugins]]` entry in the engine's file, or the
---`config.KEY=VALUE` query parameters of its upload (`PUT /v1/plugins/{name}`).
---@class pomona.Host
---@field config table<string, string>
pomona = {
  config = {},
}

---Write a log line (level info, tagged with the plugin's name). `print` does the same.
---@param ... any Values, converted to strings and joined by spaces.
function pomona.log(...) end

---The current time, in whole seconds since the Unix epoch (UTC).
---@return integer
function pomona.now()
  return 0
end
