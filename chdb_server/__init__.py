"""The local stack's ClickHouse server: one process owns the embedded chDB engine and
serves ClickHouse's HTTP interface, so every component reaches ClickHouse with the
same ``http://`` DSN and clickhouse-connect code path as in production.

``protocol`` holds the HTTP semantics (pure functions), ``engine`` runs statements
on the engine, ``app`` is the ASGI application, ``python -m chdb_server`` runs it.
"""
