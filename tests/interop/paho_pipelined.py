#!/usr/bin/env python3
"""Eclipse Paho in its default, non-blocking style against Rookery (issue 8).

Run by tests/interop.rs against a test broker:

    paho_pipelined.py PORT {311,5} ROUNDS

Each round, a fresh client calls connect(), subscribe() and publish() back to back
without waiting for CONNACK or SUBACK (paho writes SUBSCRIBE and PUBLISH as soon as
the socket is open, before CONNACK arrives [MQTT-3.1.4-5]), then waits for its own
message. Prints "OK <rounds>" and exits 0, or the number missing and exits 1.
"""

import sys
import threading

import paho.mqtt.client as mqtt

TIMEOUT = 5


def round_trip(port, protocol, n):
    got = threading.Event()
    topic = "paho/pipelined/%d" % n
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-pipe-%d" % n, protocol=protocol)
    c.on_message = lambda client, userdata, message: got.set()
    c.connect("127.0.0.1", port, keepalive=30)
    c.subscribe(topic, qos=1)
    c.publish(topic, b"pipelined", qos=1)
    c.loop_start()
    ok = got.wait(TIMEOUT)
    c.disconnect()
    c.loop_stop()
    return ok


def main():
    port, version, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    protocol = {"311": mqtt.MQTTv311, "5": mqtt.MQTTv5}[version]
    missing = [n for n in range(rounds) if not round_trip(port, protocol, n)]
    if missing:
        print("FAIL: %d of %d rounds got no message (first: %d)" % (len(missing), rounds, missing[0]))
        sys.exit(1)
    print("OK %d" % rounds)


if __name__ == "__main__":
    main()
