"""Local stack: fetch, start, stop and report the real components."""
