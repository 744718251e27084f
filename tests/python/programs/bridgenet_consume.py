"""Consumer of a two-host bridge test: gets messages from queue NAME of its domain ($HAKOBU_DOMAIN)
until the end of the stream, and says what it saw, one line each:

* stream "variety": "ok K" when the K-th message received equals bridgenet_messages.variety(K)
  (counting from FIRST), else "wrong K: how" and exit 1;
* stream "numbered": "got N", the number the message carries (the test judges order, gaps and
  doubles);
* at the end: "end EndOfStream" or "end SendersLost".

With STOP_AFTER, it stops after that many messages, says "paused" and waits for stdin to close (the
test kills it there: a consumer killed between messages).

    bridgenet_consume.py NAME STREAM [FIRST [STOP_AFTER]]
"""

import sys

import bridgenet_messages as messages

import hakobu

WATCHDOG = 120.0  # s: a get waits no longer (a bridge that never delivers)

name, stream = sys.argv[1], sys.argv[2]
first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
stop_after = int(sys.argv[4]) if len(sys.argv) > 4 else None
with hakobu.Queue(name) as queue:
    print("ready", flush=True)
    seen = 0
    while stop_after is None or seen < stop_after:
        try:
            message = queue.get(timeout=WATCHDOG)
        except hakobu.SendersLost:
            print("end SendersLost", flush=True)
            break
        except hakobu.EndOfStream:
            print("end EndOfStream", flush=True)
            break
        k = first + seen
        seen += 1
        if stream == "variety":
            differs = messages.same(message, messages.variety(k))
            if differs:
                print(f"wrong {k}: {differs}", flush=True)
                sys.exit(1)
            print(f"ok {k}", flush=True)
        else:
            print(f"got {messages.number_of(message)}", flush=True)
        del message
    else:
        print("paused", flush=True)
        sys.stdin.read()
