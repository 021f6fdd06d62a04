"""The choices of image debugging (ingest/analysis/debug.py) that the command line offers before it
loads the method: plain Python, no torch."""

DEFAULT_THRESHOLD = 0.5
# How the groups are ranked: "m" = max M (default; the paper's App. D.3 choice of the top-2 groups),
# "score" = max M x influence, "drop" = fall of P(class) when the group is masked (causal).
RANKINGS = ("m", "score", "drop")
