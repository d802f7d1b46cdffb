"""What a read selects besides time: one client's screen, an event type and a device.

``all`` (the default of both) selects every stored value, including ones no
filter names (rows migrated from before v2 carry event type ``unknown``), so
an unfiltered answer is the sum of every filtered one and equals the answer
before v2. A filter on a value becomes ``column = {parameter}`` on a sort-key
column (event type and device follow client and screen in every bucket
table's ORDER BY), so ClickHouse reads only the filtered rows' granules; ``all``
adds no condition at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from heatmap_core.events import Device, EventType

ALL: Literal["all"] = "all"
# The enums of the ``type`` and ``device`` parameters (OpenAPI lists them; anything else is a 400).
TypeFilter = Literal["all", EventType]
DeviceFilter = Literal["all", Device]


@dataclass(frozen=True)
class Selection:
    client_id: str
    screen_id: str
    type: TypeFilter = ALL
    device: DeviceFilter = ALL

    def where(self, columns: list[str]) -> tuple[str, dict[str, str]]:
        """The condition selecting these rows in a table of ``columns``, and its parameters.

        Equality on sort-key columns only, in key order; a table without an
        event_type column (scroll reach) is selected by device alone.
        """
        chosen = {"client_id": self.client_id, "screen_id": self.screen_id}
        for column, value in (("event_type", self.type), ("device", self.device)):
            if value != ALL and column in columns:
                chosen[column] = value
        return " AND ".join(f"{column} = {{{column}:String}}" for column in chosen), chosen
