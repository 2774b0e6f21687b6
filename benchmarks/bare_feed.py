"""The reference: the cheapest possible auparse plugin. Feeds stdin to auparse line by
line with a callback that only counts events, then flushes; prints the event count."""

import sys

import auparse

events = 0


def on_event(_au, cb_type, _user_data):
    global events
    if cb_type == auparse.AUPARSE_CB_EVENT_READY:
        events += 1


au = auparse.AuParser(auparse.AUSOURCE_FEED, None)
au.add_callback(on_event, None)
for line in sys.stdin.buffer:
    au.feed(line)
au.flush_feed()
print(events)
