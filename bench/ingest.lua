-- wrk script: realistic customer deliveries for Clientele's ingest benchmark.
-- Alternates Vagaro and Treez customer events over a pool of CUSTOMERS ids
-- (default 100000), each delivery fresh (a new event id, a new update time),
-- so that most are real upserts rather than duplicates.
--   wrk -t2 -c64 -d20s --latency -s bench/ingest.lua http://127.0.0.1:8080

local customers = tonumber(os.getenv("CUSTOMERS") or "100000")
-- PACE_MS: each connection waits this long after each answer, so that
-- together they send about connections * 1000 / PACE_MS deliveries/s. A
-- closed loop: while the server stalls, fewer are sent, so a stall's cost
-- to the latency percentiles is understated (coordinated omission).
local pace = tonumber(os.getenv("PACE_MS") or "0")
local threads = {}
local counter = 0
-- SOURCES_FILE: lines of "name token" (Treez sources created through the
-- API, bench/sources.sh); when set, every delivery is a Treez body sent to
-- its customer's source (the customer number modulo the sources), with its
-- token: a run with 3 sources and one with 10,000 keep the same customers
-- (picked at random, a customer's deliveries made ever more customers of
-- one human with 10,000 sources, and the persons resolver's work grew).
local sources_file = os.getenv("SOURCES_FILE")
local sources = {}

function setup(thread)
  -- Sets the global `thread_id` in that thread's own Lua state.
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + thread_id * 7919)
  -- Event ids and update times continue from one run to the next (the
  -- counter moves 2,000 per second of the day, more than a thread sends),
  -- so that back-to-back runs on one store stay fresh deliveries and newer
  -- snapshots, not retries or stale events.
  counter = (os.time() % 86400) * 2000
  if sources_file then
    for line in io.lines(sources_file) do
      local name, token = line:match("^(%S+) (%S+)$")
      if name then
        table.insert(sources, {path = "/webhooks/" .. name, auth = "Bearer " .. token})
      end
    end
  end
end

local vagaro = [[{"id":"%s","createdDate":"%s","type":"customer","action":"updated","payload":{"customerId":"C%07d","businessIds":["%d","%d"],"customerFirstName":"First%d","customerLastName":"Last%d","businessGroupId":"group-%d","email":"person%d@example.com","mobilePhone":"914555%04d","dayPhone":"","nightPhone":"N/A","streetAddress":"%d Main Street","city":"New York","regionCode":"NY","regionName":"New York","countryCode":"US","countryName":"United States of America","postalCode":"10030","createdDate":"2023-07-10T08:50:00Z","createdBy":"bench","modifiedDate":"%s","modifiedBy":"bench"}}]]

local treez = [[{"event_type":"CUSTOMER","dispensary_short_name":"shop%d","data":{"status":"ACTIVE","verification_status":"VERIFIED","customer_id":"%d","first_name":"First%d","middle_name":null,"nickname":null,"last_name":"Last%d","birthday":"1980-02-12","drivers_license":null,"state_medical_id":"N/A","email":"person%d@example.com","phone":"213555%04d","notes":"N/A","is_caregiver":false,"caregiver_license_number":"","rewards_balance":%d,"rewards_type":"POINTS","gender":"U","signup_date":"2024-04-24T11:38:21.000-07:00","last_visit_date":"2000-01-01 00:00:00.000","last_update":"%s","opt_out":"false","banned":false,"addresses":[{"type":"address_of_record","street1":"%d SHEPHERD WAY","street2":"","city":"INGLEWOOD","state":"CA","zipcode":"90301","primary":true}],"merged_customer_ids":[],"merged_into_customer_id":null,"patient_type":"ADULT","customer_groups":["SENIOR"],"external_ids":{"aiq_contact_id":null}}}]]

local floor = math.floor

local function timestamp(n)
  -- A distinct, increasing time per delivery of this thread (LuaJIT: no //).
  local seconds = n % 86400
  return string.format("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", 2026 + floor(n / 29030400), 1 + floor(n / 2419200) % 12,
    1 + floor(n / 86400) % 28, floor(seconds / 3600), floor(seconds / 60) % 60, seconds % 60, thread_id)
end

function request()
  counter = counter + 1
  local c = math.random(customers)
  local when = timestamp(counter)
  if #sources > 0 then
    local source = sources[c % #sources + 1]
    local body = string.format(treez, c % 10, c, c, c, c, c % 10000, counter, when, c)
    return wrk.format("POST", source.path,
      {["Content-Type"] = "application/json", ["Authorization"] = source.auth}, body)
  end
  if counter % 2 == 0 then
    local body = string.format(vagaro, string.format("evt-%d-%d", thread_id, counter), when, c, c % 50, c % 7,
      c, c, c % 10, c, c % 10000, c, when)
    return wrk.format("POST", "/webhooks/vagaro",
      {["Content-Type"] = "application/json", ["X-Vagaro-Signature"] = "vagaro-secret"}, body)
  else
    local body = string.format(treez, c % 10, c, c, c, c, c % 10000, counter, when, c)
    return wrk.format("POST", "/webhooks/treez",
      {["Content-Type"] = "application/json", ["Authorization"] = "Bearer treez-secret"}, body)
  end
end

if pace > 0 then
  function delay()
    return pace
  end
end
