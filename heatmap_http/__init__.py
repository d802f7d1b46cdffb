"""The HTTP plumbing both Litestar services share: one error shape (RFC 9457 problem
details naming the field at fault), one rule for query parameters, unhandled errors
logged and counted, Prometheus exposition.

heatmap_core stays free of web imports; this package is where the two APIs meet
without importing each other.
"""
