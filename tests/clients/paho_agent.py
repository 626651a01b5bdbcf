"""A PC agent written only from docs/protocol.md, with Eclipse Paho (not our code).

Usage: paho_agent.py HOST PORT CA_FILE USERNAME PASSWORD STATION

Connects over TLS trusting only the box CA, announces itself online (retained, with a
last will), follows its station's state and acknowledges the first command it gets.
Prints one line per thing it saw, for the Rust test to read:
    STATE <status> <seconds left or ->
    CMD <id> <type>
and exits 0 after acknowledging a command, 1 on any error or after 30 s.
"""

import json
import ssl
import sys
import time

import paho.mqtt.client as mqtt

host, port, ca, user, password, station = sys.argv[1:7]
root = "venued/v1"
status_topic = f"{root}/agents/{station}/status"
done = False
failed = None
acked = None


def on_connect(client, userdata, flags, reason_code, properties):
    global failed
    if reason_code.is_failure:
        failed = f"connect refused: {reason_code}"
        return
    client.subscribe(f"{root}/stations/{station}/#", qos=1)
    client.publish(status_topic, json.dumps({"online": True, "version": "paho-test"}), qos=1, retain=True)


def on_message(client, userdata, msg):
    global done, failed, acked
    leaf = msg.topic.rsplit("/", 1)[-1]
    if leaf == "state":
        state = json.loads(msg.payload)
        session = state.get("session") or {}
        left = "-"
        if session.get("ends_at"):
            # Time left from the controller's own clock, never ours (docs/protocol.md).
            from datetime import datetime

            def ts(s):
                return datetime.fromisoformat(s.replace("Z", "+00:00"))

            left = str(int((ts(session["ends_at"]) - ts(state["server_time"])).total_seconds()))
        print(f"STATE {state['status']} {left}", flush=True)
    elif leaf == "cmd":
        cmd = json.loads(msg.payload)
        print(f"CMD {cmd['id']} {cmd['type']}", flush=True)
        ack = {"id": cmd["id"], "ok": True}
        # Never block in a callback: it runs on the network thread that handles PUBACK.
        acked = client.publish(f"{root}/stations/{station}/ack", json.dumps(ack), qos=1)
        done = True


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{station}")
client.username_pw_set(user, password)
client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
client.will_set(status_topic, json.dumps({"online": False}), qos=1, retain=True)
client.on_connect = on_connect
client.on_message = on_message
client.connect(host, int(port), keepalive=30)
client.loop_start()
deadline = time.monotonic() + 30
while not done and failed is None and time.monotonic() < deadline:
    time.sleep(0.05)
if acked is not None:
    acked.wait_for_publish(10)
    # Going away on purpose: say so (the will covers only abrupt ends).
    client.publish(status_topic, json.dumps({"online": False}), qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
client.loop_stop()
if failed:
    print(f"ERROR {failed}", flush=True)
    sys.exit(1)
sys.exit(0 if done else 1)
