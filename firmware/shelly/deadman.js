// venued dead-man script for Shelly Gen2+ plugs (installed as script "venued-deadman").
//
// Why: venued switches a station's plug on for a paid session and renews it with a
// heartbeat. If the controller dies, the broker goes away or the Wi-Fi drops, nothing
// would ever switch the station off: free play forever. This script runs on the plug
// and switches the relay off when the heartbeats stop, also when someone switches the
// plug on by hand while the controller is dead.
//
// Heartbeat (venued -> plug), MQTT topic "<topic_prefix>/venued/heartbeat", where
// <topic_prefix> is the plug's MQTT topic prefix (MQTT.GetConfig "topic_prefix"):
//   - empty payload: the plug may stay on for the configured grace after this beat;
//   - {"grant_s": N}: may stay on N s after this beat (integer, 1 <= N <= 3600);
//   - anything else is malformed: ignored (it renews nothing and switches nothing).
// venued sends it while a session runs on the plug, well inside the grace.
//
// Rule, checked every CHECK_S (5) seconds: quiet_s counts the seconds since the last
// valid heartbeat, or since the relay was last seen off, whichever is later. When the
// relay is on and quiet_s has passed the allowance (grant_s of the last beat, else the
// grace) by a full check, the script switches it off once (Switch.Set on=false) and
// records why in KVS "venued.deadman_tripped". So the relay goes off more than the
// allowance and at most allowance + CHECK_S after the last heartbeat (allowance a
// multiple of CHECK_S; otherwise within allowance + 2 * CHECK_S), and a hand switch-on
// with no heartbeat goes off again just as long after the switch-on.
//
// KVS keys (read with KVS.Get / written with KVS.Set through Shelly.call):
//   venued.deadman_s        grace in seconds, read once at start (number or digit
//                           string, 10..86400; default 120; anything else: default)
//   venued.deadman_tripped  written on each cut, a JSON string:
//                           {"quiet_s":Q,"allowed_s":A,"trips":T} (T counts cuts since
//                           the script started)
//
// Language: written to the subset both Shelly interpreters accept, so one file works
// on 0.x firmware (mJS) and on >= 1.0 firmware (modified Espruino):
//   - "let" only (mJS 0.x: "Only let is supported"), strict === and !== only,
//     a semicolon after every statement [1];
//   - top-level named functions only, no closures (mJS: "Closures are not supported")
//     [1], each defined before the top-level code that refers to it (the Espruino
//     interpreter has no hoisting) [2];
//   - no classes, promises or async [2], no try/catch (mJS: "No exceptions" [6]), so
//     no JSON.parse on untrusted input: the heartbeat is scanned by hand;
//   - of the standard library only what mJS documents: String length, slice and
//     charCodeAt, JSON.stringify [6] (JSON.parse throws on bad input: not used).
// Resources: one repeating timer, one MQTT subscription (limit 10 per script [3]),
// at most one Shelly.call in flight ("Too many calls in progress" stops a script).
// APIs: Timer.set(ms, repeat, cb) [4], Shelly.call(method, params, cb) with
// cb(result, error_code, error_message) [5], MQTT.subscribe(topic, cb(topic, message))
// [3], print.
//
// [1] https://shelly-api-docs.shelly.cloud/gen2/0.14/Scripts/ShellyScriptLanguageFeatures
// [2] https://shelly-api-docs.shelly.cloud/gen2/Scripts/LanguageReference
// [3] https://shelly-api-docs.shelly.cloud/gen2/Scripts/APIs/MQTT
// [4] https://shelly-api-docs.shelly.cloud/gen2/Scripts/APIs/Timer
// [5] https://shelly-api-docs.shelly.cloud/gen2/Scripts/APIs/Shelly
// [6] https://github.com/cesanta/mjs (README, "Restrictions" and "Built-in API")
//
// Unverified on real hardware: see firmware/README.md.

let CHECK_MS = 5000;
let CHECK_S = 5;
let DEFAULT_GRACE_S = 120;
let MIN_GRACE_S = 10;
let MAX_GRACE_S = 86400;
let MAX_GRANT_S = 3600;
let MAX_PAYLOAD = 128;
let GRACE_KEY = "venued.deadman_s";
let TRIPPED_KEY = "venued.deadman_tripped";
let HEARTBEAT_SUFFIX = "/venued/heartbeat";
let GRANT_WORD = "\"grant_s\"";

let grace_s = DEFAULT_GRACE_S;
let allowed_s = DEFAULT_GRACE_S;
let quiet_s = 0;
let busy = false;
let trips = 0;
let beats = 0;
let malformed = 0;

// Character codes (mJS strings are byte strings; charCodeAt is all both engines share
// for looking at characters, with slice and length).
let C_0 = 48;
let C_9 = 57;
let C_SPACE = 32;
let C_TAB = 9;
let C_LF = 10;
let C_CR = 13;
let C_OPEN = 123;
let C_CLOSE = 125;
let C_COLON = 58;
let C_COMMA = 44;

function is_digit(s, i) {
  if (i >= s.length) {
    return false;
  }
  let c = s.charCodeAt(i);
  return c >= C_0 && c <= C_9;
}

// Index just past the digits that start at s[i] (i itself when there are none).
function digits_end(s, i) {
  while (is_digit(s, i)) {
    i = i + 1;
  }
  return i;
}

// The unsigned integer of 1 to 6 digits at s[i..], or -1.
function uint_at(s, i) {
  let end = digits_end(s, i);
  if (end === i || end - i > 6) {
    return -1;
  }
  let n = 0;
  while (i < end) {
    n = n * 10 + (s.charCodeAt(i) - C_0);
    i = i + 1;
  }
  return n;
}

// Index of the first character at or after i that is not a space, tab, CR or LF.
function skip_ws(s, i) {
  while (i < s.length) {
    let c = s.charCodeAt(i);
    if (c !== C_SPACE && c !== C_TAB && c !== C_LF && c !== C_CR) {
      return i;
    }
    i = i + 1;
  }
  return i;
}

// Index of the first occurrence of word in s, or -1 (s is at most MAX_PAYLOAD long).
function find(s, word) {
  let i = 0;
  while (i + word.length <= s.length) {
    if (s.slice(i, i + word.length) === word) {
      return i;
    }
    i = i + 1;
  }
  return -1;
}

function code_at(s, i) {
  if (i >= s.length) {
    return -1;
  }
  return s.charCodeAt(i);
}

// Seconds granted by a heartbeat payload: the grace for an empty one, N for
// {"grant_s": N}, -1 when malformed.
function grant_of(msg) {
  if (typeof msg !== "string" || msg.length > MAX_PAYLOAD) {
    return -1;
  }
  let i = skip_ws(msg, 0);
  if (i === msg.length) {
    return grace_s;
  }
  if (code_at(msg, i) !== C_OPEN) {
    return -1;
  }
  let k = find(msg, GRANT_WORD);
  if (k < 0) {
    return -1;
  }
  i = skip_ws(msg, k + GRANT_WORD.length);
  if (code_at(msg, i) !== C_COLON) {
    return -1;
  }
  i = skip_ws(msg, i + 1);
  let n = uint_at(msg, i);
  if (n < 1 || n > MAX_GRANT_S) {
    return -1;
  }
  let c = code_at(msg, skip_ws(msg, digits_end(msg, i)));
  if (c !== C_COMMA && c !== C_CLOSE) {
    return -1;
  }
  return n;
}

function on_heartbeat(topic, message) {
  let n = grant_of(message);
  if (n < 0) {
    malformed = malformed + 1;
    print("venued-deadman: malformed heartbeat ignored");
    return;
  }
  beats = beats + 1;
  allowed_s = n;
  quiet_s = 0;
}

function on_recorded(result, error_code, error_message) {
  busy = false;
}

function on_cut(result, error_code, error_message) {
  if (error_code !== 0) {
    busy = false;
    print("venued-deadman: Switch.Set failed: " + error_message);
    return;
  }
  trips = trips + 1;
  let why = JSON.stringify({quiet_s: quiet_s, allowed_s: allowed_s, trips: trips});
  print("venued-deadman: no heartbeat, relay switched off", why);
  Shelly.call("KVS.Set", {key: TRIPPED_KEY, value: why}, on_recorded);
}

function on_status(result, error_code, error_message) {
  if (error_code !== 0 || typeof result !== "object" || result === null) {
    busy = false;
    return;
  }
  if (result.output !== true) {
    // Off: nothing to guard; a later switch-on gets the full grace from here.
    quiet_s = 0;
    allowed_s = grace_s;
    busy = false;
    return;
  }
  // quiet_s grows in steps of CHECK_S and the first step after a beat may come an
  // instant after it: only a full step beyond the allowance proves the allowance gone.
  if (quiet_s < allowed_s + CHECK_S) {
    busy = false;
    return;
  }
  Shelly.call("Switch.Set", {id: 0, on: false}, on_cut);
}

function tick() {
  quiet_s = quiet_s + CHECK_S;
  if (busy) {
    return;
  }
  busy = true;
  Shelly.call("Switch.GetStatus", {id: 0}, on_status);
}

function on_mqtt_config(result, error_code, error_message) {
  busy = false;
  if (error_code !== 0 || typeof result !== "object" || result === null) {
    print("venued-deadman: no MQTT config, running without heartbeats");
    return;
  }
  if (result.enable !== true || typeof result.topic_prefix !== "string") {
    print("venued-deadman: MQTT disabled, running without heartbeats");
    return;
  }
  MQTT.subscribe(result.topic_prefix + HEARTBEAT_SUFFIX, on_heartbeat);
}

// The grace as a whole number of seconds from a KVS value (a number or a string of
// digits), or -1 when it is anything else or out of range.
function grace_of(v) {
  let n = -1;
  if (typeof v === "number" && v % 1 === 0) {
    n = v;
  }
  if (typeof v === "string" && digits_end(v, 0) === v.length) {
    n = uint_at(v, 0);
  }
  if (n < MIN_GRACE_S || n > MAX_GRACE_S) {
    return -1;
  }
  return n;
}

function on_grace(result, error_code, error_message) {
  if (error_code === 0 && typeof result === "object" && result !== null) {
    let n = grace_of(result.value);
    if (n > 0) {
      if (allowed_s === grace_s) {
        allowed_s = n;
      }
      grace_s = n;
    } else {
      print("venued-deadman: ignoring bad " + GRACE_KEY);
    }
  }
  Shelly.call("MQTT.GetConfig", {}, on_mqtt_config);
}

busy = true;
Shelly.call("KVS.Get", {key: GRACE_KEY}, on_grace);
Timer.set(CHECK_MS, true, tick);
