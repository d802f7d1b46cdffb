"""``python -m chdb_server``: serve ClickHouse's HTTP interface on 127.0.0.1:<clickhouse_port>
over the embedded engine in ``<data dir>/clickhouse``."""

from __future__ import annotations

import logging

import uvicorn

from chdb_server.app import create_app
from chdb_server.engine import Engine
from heatmap_core.settings import get_settings

log = logging.getLogger("chdb_server")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    engine = Engine(settings.data_path / "clickhouse")
    log.info("chDB %s owns %s; serving http://127.0.0.1:%d", engine.version, engine.path, settings.clickhouse_port)
    uvicorn.run(
        create_app(engine), host="127.0.0.1", port=settings.clickhouse_port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
