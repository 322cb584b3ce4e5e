-- Redis's clock, in microseconds since the epoch: the moment GRIP holds
-- count from, on the same clock that stamps every message.
return string.format('%.0f', now_us())
