#!/usr/bin/env python3
"""Publishes one MQTT 5.0 message with user properties through Rookery with Paho.

Run by tests/interop.rs, which subscribes with another client first:

    paho_publish.py PORT TOPIC PAYLOAD QOS

The message carries the user properties ("origin", "paho") and ("n", "1"), in
that order, which subscribers must receive unchanged [MQTT-3.3.2-18].
"""

import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes


def main():
    port, topic, payload, qos = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-publisher",
                    protocol=mqtt.MQTTv5)
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    c.connect("127.0.0.1", port, keepalive=30, clean_start=True)
    c.loop_start()
    if not connected.wait(10):
        print("FAIL: no CONNACK")
        sys.exit(1)
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [("origin", "paho"), ("n", "1")]
    info = c.publish(topic, payload.encode(), qos=qos, properties=properties)
    info.wait_for_publish(10)
    if not info.is_published():
        print("FAIL: publish not acknowledged")
        sys.exit(1)
    c.disconnect()
    c.loop_stop()
    print("OK")


if __name__ == "__main__":
    main()
