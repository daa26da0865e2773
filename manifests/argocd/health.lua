-- Argo CD health check for serving.inferkube.dev/v1alpha1 InferenceService.
--
-- Reads only what the inferkube operator writes into .status:
--   observedGeneration, phase, phaseDetail, and the conditions Ready, Degraded (and Progressing).
-- Order matters: a status that describes an older spec says nothing about the current one,
-- so a stale observedGeneration is Progressing even if the old status looked healthy or broken.
-- Installed through argocd-cm (see argocd-cm-patch.yaml, which embeds this file verbatim).

local hs = {}

local function findCondition(conditions, conditionType)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

-- "Reason: message", or whichever of the two is present.
local function describe(condition)
  if condition == nil then
    return ""
  end
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  return reason .. message
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the inferkube operator to report status"
  return hs
end

local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = status.observedGeneration

if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    .. " (status describes generation " .. tostring(observed or "none") .. ")"
  return hs
end

local phase = status.phase or "Pending"
local ready = findCondition(status.conditions, "Ready")
local degraded = findCondition(status.conditions, "Degraded")

if (degraded ~= nil and degraded.status == "True") or phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  local detail = ""
  if degraded ~= nil and degraded.status == "True" then
    detail = describe(degraded)
  end
  if detail == "" then
    detail = describe(ready)
  end
  if detail == "" then
    detail = "phase " .. phase
  end
  hs.message = detail
  return hs
end

-- A rollout that is not complete is Progressing, as Argo CD's own Deployment check is: the old
-- replicas still serve (Ready stays True), but sync waves and health waits must not move on yet.
if phase == "RollingOut" then
  hs.status = "Progressing"
  local detail = status.phaseDetail or ""
  if detail == "" then
    detail = describe(findCondition(status.conditions, "Progressing"))
  end
  hs.message = "Rolling out: " .. detail
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  local detail = describe(ready)
  if detail == "" then
    detail = "Ready"
  end
  hs.message = detail
  return hs
end

hs.status = "Progressing"
local detail = describe(ready)
if detail == "" then
  hs.message = "Phase " .. phase
else
  hs.message = "Phase " .. phase .. ": " .. detail
end
return hs
