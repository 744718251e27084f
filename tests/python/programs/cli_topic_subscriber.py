"""Subscribes to topic argv[1] with on_full=argv[2] ("block" or "drop_oldest"), says "subscribed",
then obeys stdin line by line: "take K" receives K messages, checks each (the cross-language
format of topic_format.py), and answers "took K missed M dropped D received R" (M: the messages
skipped just before the first of them); "quit" or end of file closes and exits. What `hakobu ls`
and `hakobu info` are compared with (tests/python/test_cli_objects.py)."""

import signal
import sys

from topic_format import check

import hakobu

signal.alarm(300)  # a forgotten program ends

topic = hakobu.Topic(sys.argv[1], create=False)
with topic.subscribe(on_full=sys.argv[2]) as sub:
    print("subscribed", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] != ["take"]:
            break
        missed = None
        for _ in range(int(words[1])):
            check(sub.get(timeout=60))
            missed = sub.missed if missed is None else missed
        print(f"took {words[1]} missed {missed} dropped {sub.dropped} received {sub.received}", flush=True)
topic.close()
print("done", flush=True)
