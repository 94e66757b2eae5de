"""A real SMTP server on loopback for the tests: prints each message it accepts as one JSON line.

Usage: python3 sink.py PORT. Prints "ready" once listening.
"""

import json
import sys
import time

from aiosmtpd.controller import Controller


class Print:
    async def handle_DATA(self, server, session, envelope):
        print(
            json.dumps(
                {
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "data": envelope.content.decode("utf8", "replace"),
                }
            ),
            flush=True,
        )
        return "250 OK"


controller = Controller(Print(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
