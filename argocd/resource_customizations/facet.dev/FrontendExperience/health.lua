-- Argo CD health check for facet.dev/FrontendExperience.
-- Uses only the base and table libraries, which Argo CD opens by default.
local function condition(obj, wanted)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local hs = {}
if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the experience"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end

local specValid = condition(obj, "SpecValid")
if specValid ~= nil and specValid.status == "False" then
  hs.status = "Degraded"
  hs.message = "Invalid spec: " .. (specValid.message or "")
  return hs
end
local degraded = condition(obj, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message or "Degraded"
  return hs
end
-- A changed definition replays beside the serving pods: still serving, not done.
local progressing = condition(obj, "Progressing")
if progressing ~= nil and progressing.status == "True" and progressing.reason == "Rebuilding" then
  hs.status = "Progressing"
  hs.message = progressing.message or "Rebuilding"
  return hs
end
local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil then
  hs.message = ready.message
else
  hs.message = "Waiting for the runtime pods to become ready"
end
return hs
