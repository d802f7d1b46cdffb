"""Landing's lake-line codec (native/src/lib.rs); landing.lines names the parts of its answer."""

EVENT_TYPES: list[str]

def lake_record(
    value: bytes, partition: int, offset: int
) -> (
    tuple[
        str,
        str,
        str,
        int,
        str,
        tuple[str, int, int, int, int] | None,
        int | None,
        list[tuple[int, bytes, int, bytes, bytes, bytes, bytes, bytes]],
    ]
    | None
): ...
