#!/usr/bin/env python3
"""Publish/subscribe round trip through Rookery with Eclipse Paho (paho-mqtt >= 2).

Run by tests/interop.rs against a test broker:

    paho_roundtrip.py PORT {311,5} QOS

A subscriber and a publisher connect with the given protocol version; the
subscriber subscribes to paho/<version>/# at QOS, the publisher sends one message
at QOS to paho/<version>/roundtrip (with a user property in MQTT 5.0), and the
subscriber checks topic, payload, QoS and, in 5.0, that the user property arrived
untouched [MQTT-3.3.2-17]. Prints "OK ..." and exits 0, or explains and exits 1.
"""

import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

TIMEOUT = 10


def client(client_id, protocol):
    kwargs = {"client_id": client_id, "protocol": protocol}
    if protocol != mqtt.MQTTv5:
        kwargs["clean_session"] = True
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)


def connect(c, port, protocol):
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    if protocol == mqtt.MQTTv5:
        c.connect("127.0.0.1", port, keepalive=30, clean_start=True)
    else:
        c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    if not connected.wait(TIMEOUT):
        fail("no CONNACK")


def fail(why):
    print("FAIL: " + why)
    sys.exit(1)


def main():
    port, version, qos = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    protocol = {"311": mqtt.MQTTv311, "5": mqtt.MQTTv5}[version]
    topic = "paho/%s/roundtrip" % version
    payload = ("hello from paho v%s qos %d" % (version, qos)).encode()

    received = []
    got_message = threading.Event()
    subscribed = threading.Event()

    sub = client("paho-sub-%s-%d" % (version, qos), protocol)
    sub.on_subscribe = lambda c, u, mid, codes, props: (
        fail("SUBACK refused: %s" % codes)
        if any(code.is_failure for code in codes)
        else subscribed.set()
    )

    def on_message(c, userdata, message):
        received.append(message)
        got_message.set()

    sub.on_message = on_message
    connect(sub, port, protocol)
    sub.subscribe("paho/%s/#" % version, qos=qos)
    if not subscribed.wait(TIMEOUT):
        fail("no SUBACK")

    pub = client("paho-pub-%s-%d" % (version, qos), protocol)
    connect(pub, port, protocol)
    properties = None
    if protocol == mqtt.MQTTv5:
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = [("origin", "paho"), ("qos", str(qos))]
        properties.ContentType = "text/plain"
    info = pub.publish(topic, payload, qos=qos, properties=properties)
    info.wait_for_publish(TIMEOUT)
    if not info.is_published():
        fail("publish not acknowledged")

    if not got_message.wait(TIMEOUT):
        fail("message not received")
    message = received[0]
    if message.topic != topic or message.payload != payload:
        fail("got %r %r" % (message.topic, message.payload))
    if message.qos != qos:
        fail("delivered at QoS %d, expected %d" % (message.qos, qos))
    if protocol == mqtt.MQTTv5:
        props = message.properties
        user = getattr(props, "UserProperty", None)
        if user != [("origin", "paho"), ("qos", str(qos))]:
            fail("user properties not forwarded: %r" % (user,))
        if getattr(props, "ContentType", None) != "text/plain":
            fail("content type not forwarded")

    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    print("OK v%s qos %d" % (version, qos))


if __name__ == "__main__":
    main()
