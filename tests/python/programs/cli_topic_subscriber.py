"""Subscribes to topic argv[1] with on_full=argv[2] ("block" or "drop_oldest"), says "subscribed",
then obeys stdin line by line: "take K" receives K messages, checks each against the shared
check format (bytes message `seq` of size S: bytes 0..7 seq, 8..15 S, little-endian; byte i >= 16
is (seq * 31 + i) & 0xFF), and answers "took K missed M dropped D received R" (M: the messages
skipped just before the first of them); "quit" or end of file closes and exits."""

import sys

import hakobu


def expected(seq: int, size: int) -> bytes:
    head = seq.to_bytes(8, "little") + size.to_bytes(8, "little")
    return head + bytes((seq * 31 + i) & 0xFF for i in range(16, size))


topic = hakobu.Topic(sys.argv[1], create=False)
with topic.subscribe(on_full=sys.argv[2]) as sub:
    print("subscribed", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] != ["take"]:
            break
        missed = None
        for _ in range(int(words[1])):
            message = sub.get(timeout=60)
            seq = int.from_bytes(message[:8], "little")
            assert message == expected(seq, len(message)), f"message {seq} damaged"
            missed = sub.missed if missed is None else missed
        print(f"took {words[1]} missed {missed} dropped {sub.dropped} received {sub.received}", flush=True)
topic.close()
print("done", flush=True)
